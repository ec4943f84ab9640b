"""Storage only: individuals, photos (content-addressed), sightings, decisions, history,
exports. Loads no model.

Imports decide (the review queue's data), presets, data and util; never describe or gallery.
"""
