"""Scoring and showing a run: metrics (BAKS, BAUS, ARI), the report, pictures, outputs.

Imports gallery and the wings below it; never catalog.
"""
