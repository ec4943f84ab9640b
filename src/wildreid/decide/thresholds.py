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

from wildreid.decide.ranking import rank_neighbours


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
    note: str = ""  # why the choice is not a real one, for the user

    def summary(self) -> dict:
        return {
            "threshold": self.threshold,
            "simulated_score": self.simulated_score,
            "simulated_baks": self.simulated_baks,
            "simulated_baus": self.simulated_baus,
            "note": self.note,
        }


@dataclass
class Neighbours:
    """Some database rows (the pseudo-queries) with their nearest database rows, best first.

    The simulation needs only these lists, never a database-by-database matrix: for the global
    descriptor they come from the gallery's index (k nearest neighbours), for fused scores from
    each pseudo-query's shortlist.
    """

    rows: np.ndarray  # (P,) database rows asked as pseudo-queries
    columns: np.ndarray  # (P, K) their neighbours' database rows, best first; -1 pads
    scores: np.ndarray  # (P, K) the neighbours' scores; -inf pads

    @classmethod
    def from_dense(cls, similarity: np.ndarray, scored_rows: np.ndarray | None = None) -> "Neighbours":
        """Every column of the given rows of a dense (database x database) similarity; for tests
        and small problems. Entries of -inf are no neighbour."""
        rows = np.arange(len(similarity)) if scored_rows is None else np.flatnonzero(scored_rows)
        block = np.asarray(similarity, dtype=np.float64)[rows]
        order = np.argsort(-block, axis=1, kind="stable")
        scores = np.take_along_axis(block, order, axis=1)
        return cls(rows, np.where(np.isfinite(scores), order, -1), scores)

    @classmethod
    def from_pairs(cls, rows: np.ndarray, columns: np.ndarray, scores: np.ndarray, askable: np.ndarray) -> "Neighbours":
        """From scored (row, column) pairs, e.g. a shortlist; ``askable``: the rows to ask."""
        asked = np.flatnonzero(askable)
        slot = np.full(len(askable), -1)
        slot[asked] = np.arange(len(asked))
        inside = slot[rows] >= 0
        rows, columns, scores = slot[rows[inside]], columns[inside], np.asarray(scores, np.float64)[inside]
        order = np.lexsort((columns, -scores, rows))
        rows, columns, scores = rows[order], columns[order], scores[order]
        position = np.arange(len(rows)) - np.searchsorted(rows, rows)
        depth = int(position.max()) + 1 if len(rows) else 0
        padded_columns = np.full((len(asked), depth), -1, dtype=np.int64)
        padded_scores = np.full((len(asked), depth), -np.inf)
        padded_columns[rows, position], padded_scores[rows, position] = columns, scores
        return cls(asked, padded_columns, padded_scores)


@dataclass
class SimulatedQueries:
    """Top-1 answers of one simulated round."""

    truth: np.ndarray  # identity of each pseudo-query
    is_new: np.ndarray  # held-out identity?
    top_identity: np.ndarray
    top_score: np.ndarray


def simulate_round(
    neighbours: Neighbours,
    identities: np.ndarray,
    rng: np.random.Generator,
    *,
    new_identity_share: float = 0.25,
    known_query_share: float = 0.25,
    near_duplicate_groups: np.ndarray | None = None,
    members: tuple[np.ndarray, list[np.ndarray]] | None = None,
    top_m: int = 1,
) -> SimulatedQueries:
    """One simulated open-set split of the database, answered by nearest identity.

    Some whole identities are held out as new, some images of the others as known queries; every
    pseudo-query that ``neighbours`` can answer (its rows) is answered by its first neighbour
    that stayed in the database. ``near_duplicate_groups`` (e.g. the date or clip of each image):
    a known pseudo-query is not allowed to match images of its own group, as real queries come
    from other visits. ``members``: ``identity_members(identities)``, when already computed.
    ``top_m``: identities scored as the real queries' ranking scores them (search.rank_neighbours).
    """
    identities = np.asarray(identities, dtype=object)
    query, is_new_image = draw_queries(
        identities, rng, new_identity_share=new_identity_share, known_query_share=known_query_share, members=members
    )
    asked = query[neighbours.rows]
    rows, columns = neighbours.rows[asked], neighbours.columns[asked]
    # A neighbour answers if it stayed in the database this round (and is no near-duplicate).
    answers = (columns >= 0) & ~query[np.maximum(columns, 0)] & np.isfinite(neighbours.scores[asked])
    if near_duplicate_groups is not None:
        groups = np.asarray(near_duplicate_groups, dtype=object)
        known_group = np.array([g is not None and g == g for g in groups[rows]])
        answers &= ~((groups[np.maximum(columns, 0)] == groups[rows][:, None]) & known_group[:, None])
    if top_m > 1:
        best = rank_neighbours(np.where(answers, columns, -1), neighbours.scores[asked], identities, 1, top_m)
        found = best.best_images[:, 0] >= 0
        return SimulatedQueries(
            identities[rows], is_new_image[rows], np.where(found, best.identities[:, 0], None), best.scores[:, 0]
        )
    first = np.argmax(answers, axis=1)
    found = answers[np.arange(len(rows)), first]
    top_identity = np.where(found, identities[columns[np.arange(len(rows)), first]], None)
    top_score = np.where(found, neighbours.scores[asked][np.arange(len(rows)), first], np.nan)
    return SimulatedQueries(identities[rows], is_new_image[rows], top_identity, top_score)


def draw_queries(
    identities: np.ndarray,
    rng: np.random.Generator,
    *,
    new_identity_share: float = 0.25,
    known_query_share: float = 0.25,
    members: tuple[np.ndarray, list[np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One simulated split of the database: (is a pseudo-query, belongs to a held-out "new"
    identity) per photo. Whole identities are held out as new; of each other identity with two
    photos or more some photos become known pseudo-queries, at least one staying behind."""
    identities = np.asarray(identities, dtype=object)
    labels, members = members or identity_members(identities)
    codes = np.empty(len(identities), dtype=np.int64)
    for code, rows in enumerate(members):
        codes[rows] = code
    n_new = max(1, int(round(new_identity_share * len(labels)))) if len(labels) > 2 else 0
    new_codes = np.searchsorted(labels, rng.choice(labels, size=n_new, replace=False)) if n_new else np.zeros(0, int)
    is_new_image = np.isin(codes, new_codes)
    query = is_new_image.copy()
    new_set = set(new_codes.tolist())
    for code, rows in enumerate(members):  # in label order: the random draws stay reproducible
        if code in new_set or len(rows) < 2:
            continue  # a lone image must stay in the database to be findable
        take = min(len(rows) - 1, max(1, int(rng.binomial(len(rows), known_query_share))))
        query[rng.choice(rows, size=take, replace=False)] = True
    return query, is_new_image


def identity_members(identities: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The sorted labels and each label's rows (in increasing order); computed once per
    simulation, not once per label and round, which was quadratic in the number of identities."""
    labels, codes = np.unique(np.asarray(identities, dtype=object), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(labels) + 1))
    return labels, [order[bounds[i] : bounds[i + 1]] for i in range(len(labels))]


def score_curves(rounds: list[SimulatedQueries], grid: np.ndarray):
    """Mean BAKS, BAUS and sqrt(BAKS*BAUS) over rounds for every threshold in ``grid``."""
    # A round without new (or without known) pseudo-queries says nothing about the trade-off; with
    # few scored rows (e.g. only photos a fine-tuned model held out) some rounds have none.
    rounds = [s for s in rounds if s.is_new.any() and (~s.is_new).any()] or rounds
    baks_rows, baus_rows, score_rows = [], [], []
    for simulated in rounds:
        accept = simulated.top_score[:, None] >= grid[None, :]  # (queries, thresholds)
        correct = (simulated.top_identity == simulated.truth)[:, None] & accept
        baks = balanced_accuracy(correct[~simulated.is_new], simulated.truth[~simulated.is_new])
        baus = balanced_accuracy(~accept[simulated.is_new], simulated.truth[simulated.is_new])
        baks_rows.append(baks)
        baus_rows.append(baus)
        score_rows.append(np.nan_to_num(np.sqrt(baks * baus)))
    return np.mean(baks_rows, axis=0), np.mean(baus_rows, axis=0), np.mean(score_rows, axis=0)


def balanced_accuracy(hits: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Balanced accuracy per column of ``hits`` (rows are samples, grouped by ``truth``): the mean
    over true identities of the fraction of their samples that are hits; NaN without samples.
    The simulation scores every threshold at once (a column each); evaluate/metrics.py's BAKS and
    BAUS score one column."""
    if len(truth) == 0:
        return np.full(hits.shape[1], np.nan)
    _, codes = np.unique(truth, return_inverse=True)
    sums = np.zeros((codes.max() + 1, hits.shape[1]))
    np.add.at(sums, codes, hits.astype(float))
    return (sums / np.bincount(codes)[:, None]).mean(axis=0)


def choose_threshold_and_top_m(
    neighbours: Neighbours,
    identities: np.ndarray,
    top_m_choices: tuple[int, ...],
    *,
    seed: int = 0,
    near_duplicate_groups: np.ndarray | None = None,
) -> tuple[int, ThresholdChoice, dict[int, float]]:
    """(m, its threshold choice, every m's simulated score): each m of ``top_m_choices`` (the photos
    per identity averaged) with its own best threshold, and the m whose simulated open-set score is
    best; ties go to the smaller m. A single choice is simply simulated."""
    choices = {
        m: choose_threshold(neighbours, identities, seed=seed, near_duplicate_groups=near_duplicate_groups, top_m=m)
        for m in sorted(top_m_choices)
    }
    scores = {m: -math.inf if math.isnan(c.simulated_score) else c.simulated_score for m, c in choices.items()}
    best = max(scores, key=lambda m: (scores[m], -m))
    return best, choices[best], scores


def choose_threshold(
    neighbours: Neighbours,
    identities: np.ndarray,
    *,
    rounds: int = 20,
    seed: int = 0,
    near_duplicate_groups: np.ndarray | None = None,
    grid_size: int = 400,
    top_m: int = 1,
) -> ThresholdChoice:
    """The threshold maximising the simulated open-set score on this database."""
    identities = np.asarray(identities, dtype=object)
    rng = np.random.default_rng(seed)
    members = identity_members(identities)
    simulated = [
        simulate_round(
            neighbours, identities, rng, near_duplicate_groups=near_duplicate_groups, members=members, top_m=top_m
        )
        for _ in range(rounds)
    ]
    scores = np.concatenate([s.top_score for s in simulated])
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0 or not any(s.is_new.any() for s in simulated):
        # Nothing could be held out as new (a single identity, or one photo each): no threshold
        # can be learnt. Accept every answer, and say so: the caller passes the note on.
        return ThresholdChoice(
            -math.inf,
            math.nan,
            math.nan,
            math.nan,
            note=(
                f"only {len(np.unique(identities))} identit{'y' if len(np.unique(identities)) == 1 else 'ies'} "
                "with too few photos to simulate new individuals, so no new_individual threshold could be "
                "chosen: every query gets the best identity. Give --threshold VALUE to allow new_individual."
            ),
        )
    # Candidate thresholds: score quantiles (dense where the scores are), plus "accept all".
    grid = np.unique(np.concatenate([np.quantile(scores, np.linspace(0, 1, grid_size)), [scores.max() + 1e-6]]))
    baks, baus, score = score_curves(simulated, grid)
    best = int(np.argmax(score))
    return ThresholdChoice(
        float(grid[best]), float(score[best]), float(baks[best]), float(baus[best]), grid, score, baks, baus
    )
