"""From scores to answers: thresholds, ranking, the decision, the match graph, clustering
of queries into individuals, the simulations that choose thresholds, the review queue.

Imports presets, describe, local, data and util.
"""
