"""Storage only: individuals, photos (content-addressed), sightings, decisions, history,
exports. Loads no model.

Imports decide (the review queue's records), presets, data and util; never local or describe.
"""
