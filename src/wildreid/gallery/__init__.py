"""The fitted database side: index, keypoint index, calibration, fusion, thresholds per
dataset part; build, add, identify; the batch pipeline and its result.

Imports decide, presets, describe, local, data and util; never catalog.
"""
