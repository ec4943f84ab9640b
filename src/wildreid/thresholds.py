"""Choosing the `new_individual` threshold without query labels.

A fixed threshold belongs to one model and one species (the seed's 0.6 suits MegaDescriptor; no
EfficientNet top-1 cosine is ever that low). Instead the open set is simulated on the labelled
database: in each round some whole identities are held out as "new" and some images of the other
identities as "known" queries; both are scored against the rest. The threshold that maximises
the mean sqrt(BAKS * BAUS) over rounds is chosen, per dataset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .search import rank_identities


@dataclass
class ThresholdChoice:
    threshold: float
    simulated_score: float
    simulated_baks: float
    simulated_baus: float
    grid: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    curve_score: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    curve_baks: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    curve_baus: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def summary(self) -> dict:
        return {"threshold": self.threshold, "simulated_score": self.simulated_score,
                "simulated_baks": self.simulated_baks, "simulated_baus": self.simulated_baus}


@dataclass
class SimulatedQueries:
    """Top-1 answers of one simulated round."""

    truth: np.ndarray        # identity of each pseudo-query
    is_new: np.ndarray       # held-out identity?
    top_identity: np.ndarray
    top_score: np.ndarray


def simulate_round(database_similarity: np.ndarray, identities: np.ndarray, rng: np.random.Generator,
                   *, new_identity_share: float = 0.25, known_query_share: float = 0.25,
                   near_duplicate_groups: np.ndarray | None = None,
                   scored_rows: np.ndarray | None = None) -> SimulatedQueries:
    """One simulated open-set split of the database, answered by nearest identity.

    ``near_duplicate_groups`` (e.g. the date or clip of each image): a known pseudo-query is not
    allowed to match images of its own group, as real queries come from other visits.
    ``scored_rows``: only these rows of ``database_similarity`` hold scores (the others are held
    out with their identity but never asked), as when local matching ran for a sample of images.
    """
    identities = np.asarray(identities, dtype=object)
    labels = np.unique(identities)
    n_new = max(1, int(round(new_identity_share * len(labels)))) if len(labels) > 2 else 0
    new_labels = set(rng.choice(labels, size=n_new, replace=False).tolist()) if n_new else set()
    is_new_image = np.array([label in new_labels for label in identities])
    query = is_new_image.copy()
    for label in labels:
        if label in new_labels:
            continue
        members = np.flatnonzero(identities == label)
        if len(members) < 2:
            continue  # a lone image must stay in the database to be findable
        take = min(len(members) - 1, max(1, int(rng.binomial(len(members), known_query_share))))
        query[rng.choice(members, size=take, replace=False)] = True
    database_rows = np.flatnonzero(~query)
    query_rows = np.flatnonzero(query & (scored_rows if scored_rows is not None else True))
    similarity = database_similarity[np.ix_(query_rows, database_rows)].astype(np.float64)
    if near_duplicate_groups is not None:
        groups = np.asarray(near_duplicate_groups, dtype=object)
        same_group = groups[query_rows][:, None] == groups[database_rows][None, :]
        same_group &= np.array([g is not None and g == g for g in groups[query_rows]])[:, None]
        similarity[same_group] = -np.inf
    ranking = rank_identities(similarity, identities[database_rows], k=1)
    return SimulatedQueries(identities[query_rows], is_new_image[query_rows],
                            ranking.identities[:, 0], ranking.scores[:, 0])


def score_curves(rounds: list[SimulatedQueries], grid: np.ndarray):
    """Mean BAKS, BAUS and sqrt(BAKS*BAUS) over rounds for every threshold in ``grid``."""
    # A round without new (or without known) pseudo-queries says nothing about the trade-off; with
    # few scored rows (e.g. only photos a fine-tuned model held out) some rounds have none.
    rounds = [s for s in rounds if s.is_new.any() and (~s.is_new).any()] or rounds
    baks_rows, baus_rows, score_rows = [], [], []
    for simulated in rounds:
        accept = simulated.top_score[:, None] >= grid[None, :]        # (queries, thresholds)
        correct = (simulated.top_identity == simulated.truth)[:, None] & accept
        baks = _balanced(correct[~simulated.is_new], simulated.truth[~simulated.is_new])
        baus = _balanced(~accept[simulated.is_new], simulated.truth[simulated.is_new])
        baks_rows.append(baks)
        baus_rows.append(baus)
        score_rows.append(np.nan_to_num(np.sqrt(baks * baus)))
    return np.mean(baks_rows, axis=0), np.mean(baus_rows, axis=0), np.mean(score_rows, axis=0)


def _balanced(hits: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Balanced accuracy per column of ``hits`` (rows are samples, grouped by ``truth``)."""
    if len(truth) == 0:
        return np.full(hits.shape[1], np.nan)
    _, codes = np.unique(truth, return_inverse=True)
    sums = np.zeros((codes.max() + 1, hits.shape[1]))
    np.add.at(sums, codes, hits.astype(float))
    return (sums / np.bincount(codes)[:, None]).mean(axis=0)


def choose_threshold(database_similarity: np.ndarray, identities: np.ndarray, *, rounds: int = 20,
                     seed: int = 0, near_duplicate_groups: np.ndarray | None = None,
                     scored_rows: np.ndarray | None = None, grid_size: int = 400) -> ThresholdChoice:
    """The threshold maximising the simulated open-set score on this database."""
    rng = np.random.default_rng(seed)
    simulated = [simulate_round(database_similarity, identities, rng, near_duplicate_groups=near_duplicate_groups,
                                scored_rows=scored_rows) for _ in range(rounds)]
    scores = np.concatenate([s.top_score for s in simulated])
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0 or not any(s.is_new.any() for s in simulated):
        return ThresholdChoice(-math.inf, math.nan, math.nan, math.nan)
    # Candidate thresholds: score quantiles (dense where the scores are), plus "accept all".
    grid = np.unique(np.concatenate([np.quantile(scores, np.linspace(0, 1, grid_size)),
                                     [scores.max() + 1e-6]]))
    baks, baus, score = score_curves(simulated, grid)
    best = int(np.argmax(score))
    return ThresholdChoice(float(grid[best]), float(score[best]), float(baks[best]), float(baus[best]),
                           grid, score, baks, baus)
