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

from wildreid.decide.cluster import cluster_graph
from wildreid.decide.graph import MatchGraph
from wildreid.decide.thresholds import draw_queries, identity_members

# Candidate thresholds: a fixed grid of probabilities, plus quantiles of the pairs' own
# probabilities (a weak descriptor's calibrated P may never reach 0.1).
LINK_GRID = np.concatenate([[0.01, 0.02, 0.03], np.round(np.arange(0.05, 0.96, 0.05), 2)])
QUANTILES = np.linspace(0.1, 0.99, 10)
ROUNDS = 10
# Photos taking part in one round (whole identities drawn at random until this many): bounds the
# cost on a large database; the rest of the database stays as known individuals.
ROUND_PHOTOS = 1500
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
    pair_probability: np.ndarray | None = None,
    known_threshold: float | None,
    method: str = "average",
    near_duplicates: np.ndarray | None = None,
    rounds: int = ROUNDS,
    seed: int = 0,
) -> LinkChoice:
    """``rows``/``images``/``probability``: scored pairs of database photos (each row a photo
    asked as a pseudo-query, as the calibration asked them); ``pair_probability``: the same pairs
    scored as two queries would be (see DatasetPart.match_graph), when that differs."""
    identities = np.asarray(identities, dtype=object)
    rows, images = np.asarray(rows, np.int64), np.asarray(images, np.int64)
    probability = np.asarray(probability, np.float64)
    pair_probability = probability if pair_probability is None else np.asarray(pair_probability, np.float64)
    asked = np.zeros(len(identities), dtype=bool)
    asked[rows] = True
    grid = np.unique(np.round(np.concatenate([LINK_GRID, np.quantile(pair_probability, QUANTILES)]), 4))
    labels, members = identity_members(identities)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(rounds):
        query = _draw_round(identities, members, rng)
        nodes = np.flatnonzero(query & asked)
        if len(nodes) < 2:
            continue
        graph, truth = _round_graph(
            nodes, query, rows, images, probability, pair_probability, identities, near_duplicates
        )
        truth_codes = np.unique(truth.astype(str), return_inverse=True)[1]
        curves.append([_ari(truth_codes, graph, method, threshold, known_threshold) for threshold in grid])
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
    return LinkChoice(float(grid[best]), float(curve[best]), grid, curve)


def _draw_round(identities: np.ndarray, members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The pseudo-queries of one round: among whole identities drawn until ROUND_PHOTOS photos,
    some identities held out as new and some photos of the others as known queries."""
    order = rng.permutation(len(members))
    counts = np.cumsum([len(members[i]) for i in order])
    taken = order[: max(1, int(np.searchsorted(counts, ROUND_PHOTOS, side="right")))]
    universe = np.concatenate([members[i] for i in taken])
    drawn, _ = draw_queries(identities[universe], rng)
    query = np.zeros(len(identities), dtype=bool)
    query[universe[drawn]] = True
    return query


def _round_graph(nodes, query, rows, images, probability, pair_probability, identities, near_duplicates):
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
        (number[rows[both]], number[images[both]], pair_probability[both]),
        (number[rows[to_database]], identities[images[to_database]], probability[to_database]),
    )
    return graph, identities[nodes]


def _ari(truth_codes: np.ndarray, graph: MatchGraph, method, threshold, known_threshold) -> float:
    """ARI of the pseudo-queries' clusters (cluster labels already tell known individuals apart:
    two known individuals never share a cluster)."""
    clustering = cluster_graph(graph, method=method, link_threshold=threshold, known_threshold=known_threshold)
    return adjusted_rand_index(truth_codes, clustering.query_labels(graph.queries))


def adjusted_rand_index(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Hubert and Arabie's ARI of two integer labelings; equal to scikit-learn's
    adjusted_rand_score (checked in the tests) without its per-call validation, which dominated
    the simulation's time."""
    n = len(truth)
    if n < 2:
        return 1.0
    _, joint = np.unique(truth.astype(np.int64) * (int(predicted.max()) + 1) + predicted, return_counts=True)
    pairs = lambda counts: float(np.sum(counts * (counts - 1)) / 2)  # noqa: E731
    together = pairs(joint)
    truth_pairs, predicted_pairs = pairs(np.bincount(truth)), pairs(np.bincount(predicted))
    expected = truth_pairs * predicted_pairs / (n * (n - 1) / 2)
    maximum = (truth_pairs + predicted_pairs) / 2
    if maximum == expected:
        return 1.0
    return (together - expected) / (maximum - expected)
