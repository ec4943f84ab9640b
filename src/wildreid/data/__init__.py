"""Datasets in: layouts, validation, safe image reading, regions, detections, views, the demo.

Imports only util.
"""
