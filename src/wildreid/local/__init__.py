"""Local features and matchers, one file per method (hloc's plug-in layout), their cache,
the LNBNN keypoint index, geometric verification and per-pair keypoint evidence.

Imports only data and util.
"""
