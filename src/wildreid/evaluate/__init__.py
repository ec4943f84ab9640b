"""Scoring and showing a run: metrics (BAKS, BAUS, ARI), the report, pictures, outputs.

Imports gallery and every wing below it.
"""
