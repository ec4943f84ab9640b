"""Choosing the linking threshold without query labels: the open set simulated on the database.

As thresholds.py does for the new_individual threshold: in each round some whole identities of
the database are held out as "new" and some photos of the others as "known" queries. The
pseudo-queries are grouped with each other and with the individuals that stayed behind, from
the same scored database pairs the calibration was fitted on, at every candidate threshold; the
threshold with the best mean adjusted Rand index over the rounds is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import adjusted_rand_score

from ..thresholds import draw_queries, identity_members
from .cluster import cluster_graph
from .graph import MatchGraph

# Candidate thresholds: probabilities, so a fixed grid serves every model and species.
LINK_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)
ROUNDS = 10
PLATEAU = 1e-3  # simulated ARIs this close count as a tie


@dataclass
class LinkChoice:
    threshold: float
    simulated_ari: float
    grid: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    curve: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    note: str = ""

    def summary(self) -> dict:
        return {"threshold": self.threshold, "simulated_ari": self.simulated_ari, "note": self.note}


def choose_link_threshold(
    rows: np.ndarray,
    images: np.ndarray,
    probability: np.ndarray,
    identities: np.ndarray,
    *,
    known_threshold: float | None,
    method: str = "average",
    near_duplicates: np.ndarray | None = None,
    rounds: int = ROUNDS,
    seed: int = 0,
) -> LinkChoice:
    """``rows``/``images``/``probability``: scored pairs of database photos (each row a photo
    asked as a pseudo-query, as the calibration asked them)."""
    identities = np.asarray(identities, dtype=object)
    rows, images = np.asarray(rows, np.int64), np.asarray(images, np.int64)
    probability = np.asarray(probability, np.float64)
    asked = np.zeros(len(identities), dtype=bool)
    asked[rows] = True
    members = identity_members(identities)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(rounds):
        query, _ = draw_queries(identities, rng, members=members)
        nodes = np.flatnonzero(query & asked)
        if len(nodes) < 2:
            continue
        graph, truth = _round_graph(nodes, query, rows, images, probability, identities, near_duplicates)
        curves.append(
            [
                _ari(truth, graph, method, threshold, known_threshold)
                for threshold in LINK_GRID  # one clustering per candidate
            ]
        )
    if not curves:
        return LinkChoice(
            0.5,
            float("nan"),
            note="too few photos to simulate grouping on the database; linking at P(same) >= 0.5.",
        )
    curve = np.mean(curves, axis=0)
    # The middle of the best stretch: thresholds that tie on the simulation are equally
    # supported, and the middle one is the farthest from both kinds of mistake.
    near_best = np.flatnonzero(curve >= curve.max() - PLATEAU)
    best = int(near_best[len(near_best) // 2])
    return LinkChoice(float(LINK_GRID[best]), float(curve[best]), LINK_GRID.copy(), curve)


def _round_graph(nodes, query, rows, images, probability, identities, near_duplicates):
    """The match graph of one round: pseudo-queries as query nodes, the identities that stayed in
    the database as individuals (each linked by its best photo, never a near-duplicate)."""
    number = np.full(len(identities), -1, dtype=np.int64)
    number[nodes] = np.arange(len(nodes))
    from_node = number[rows] >= 0
    both = from_node & (number[images] >= 0)
    to_database = from_node & ~query[images]
    if near_duplicates is not None:
        groups = np.asarray(near_duplicates, dtype=object)
        same_visit = np.array(
            [g is not None and g == g and g == h for g, h in zip(groups[rows], groups[images])], dtype=bool
        )
        to_database &= ~same_visit
    graph = MatchGraph.build(
        len(nodes),
        (number[rows[both]], number[images[both]], probability[both]),
        (number[rows[to_database]], identities[images[to_database]], probability[to_database]),
    )
    return graph, identities[nodes]


def _ari(truth, graph: MatchGraph, method, threshold, known_threshold) -> float:
    clustering = cluster_graph(graph, method=method, link_threshold=threshold, known_threshold=known_threshold)
    predicted = clustering.query_labels(graph.queries)
    # A query in a known individual's cluster is named by it, so two clusters of one individual
    # cannot exist; others keep their cluster number.
    named = [
        f"known:{graph.identities[clustering.anchors[label]]}" if label in clustering.anchors else f"group:{label}"
        for label in predicted.tolist()
    ]
    return float(adjusted_rand_score(truth, named))
