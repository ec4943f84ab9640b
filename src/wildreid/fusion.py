"""Local matching on a shortlist, calibration of every score to P(same individual), and fusion.

WildFusion's recipe, with our own code: each score type (global cosine, LNBNN, geometric
inliers) lives on its own scale, so each is turned into a probability by an isotonic regression
fitted on database-vs-database pairs of the same dataset (never an image with itself, never two
near-duplicates of one clip or date); the fused score is the mean of the probabilities.

Candidate pairs come from two shortlists per image: the top-B by global cosine, and the top-B by
LNBNN keypoint votes (which finds individuals a weak global descriptor ranks low).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits

from .local.base import LocalFeatures, LocalMethod
from .local.lnbnn import KeypointIndex
from .local.verify import count_inliers

SCORE_TYPES = ("cosine", "lnbnn", "inliers")
TIE_BREAK = 1e-6


@dataclass
class Calibration:
    """Per score type, a monotone map from raw score to P(same individual)."""

    knots: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    pairs: int = 0
    positives: int = 0

    @classmethod
    def fit(cls, scores: dict[str, np.ndarray], same: np.ndarray) -> "Calibration":
        knots = {}
        for name, values in scores.items():
            regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(values, same)
            knots[name] = (regression.X_thresholds_.tolist(), regression.y_thresholds_.tolist())
        return cls(knots, int(len(same)), int(np.sum(same)))

    def probability(self, name: str, values: np.ndarray) -> np.ndarray:
        xs, ys = self.knots[name]
        values = np.asarray(values, dtype=np.float64)
        calibrated = np.interp(values, xs, ys)  # linear between knots, clipped at the ends, as sklearn
        # An isotonic map is flat over long stretches and at both ends, so it ties many pairs a
        # query must still tell apart (on LionData's closed split calibrated cosine alone fell to
        # top-1 0.03 from the raw 0.13). A strictly increasing term of weight TIE_BREAK keeps the
        # raw order inside a step while moving no probability by more than TIE_BREAK. (Scaled by
        # the knots' span, so it resolves cosines and inlier counts alike.)
        order = 0.5 + np.arctan((values - xs[0]) / max(xs[-1] - xs[0], 1e-12)) / np.pi
        return (1.0 - TIE_BREAK) * calibrated + TIE_BREAK * order

    def fuse(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        return np.mean([self.probability(name, values) for name, values in scores.items()], axis=0)

    def to_json(self) -> str:
        return json.dumps({"pairs": self.pairs, "positives": self.positives, "knots": self.knots})

    @classmethod
    def from_json(cls, text: str) -> "Calibration":
        content = json.loads(text)
        return cls({k: (v[0], v[1]) for k, v in content["knots"].items()}, content["pairs"], content["positives"])


@dataclass
class FusionSettings:
    shortlist: int = 20            # B: images per shortlist (cosine, and LNBNN)
    use_lnbnn: bool = True         # LNBNN shortlist and score
    scores: tuple[str, ...] = SCORE_TYPES
    geometry: str = "homography"
    calibration_anchors: int = 600  # database images used as pseudo-queries for calibration
    lnbnn_k: int = 5
    workers: int = 0               # 0: one thread per core


@dataclass
class GroupFusion:
    """Fused P(same) for shortlisted pairs; -inf elsewhere."""

    query_scores: np.ndarray       # (Q, D)
    database_scores: np.ndarray    # (D, D), rows of anchors only
    anchors: np.ndarray            # (D,) bool
    calibration: Calibration
    pair_scores: dict = field(default_factory=dict, repr=False)   # (q, d) -> raw scores, for the report


def shortlist(cosine: np.ndarray, lnbnn: np.ndarray | None, size: int,
              excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs: per row the top-``size`` columns by cosine and by LNBNN."""
    rows, columns = [], []
    for score in (cosine, lnbnn):
        if score is None:
            continue
        score = score.astype(np.float64, copy=True)
        if excluded is not None:
            score[excluded] = -np.inf
        top = np.argsort(-score, axis=1, kind="stable")[:, :size]
        keep = np.take_along_axis(score, top, axis=1) > -np.inf
        rows.append(np.repeat(np.arange(len(score)), top.shape[1])[keep.ravel()])
        columns.append(top.ravel()[keep.ravel()])
    pairs = np.unique(np.stack([np.concatenate(rows), np.concatenate(columns)], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def inlier_counts(method: LocalMethod, left: list[LocalFeatures | None], right: list[LocalFeatures | None],
                  rows: np.ndarray, columns: np.ndarray, geometry: str, workers: int = 0) -> np.ndarray:
    def one(pair):
        a, b = left[pair[0]], right[pair[1]]
        if a is None or b is None:
            return 0
        matches = method.match(a, b)
        if len(matches) == 0:
            return 0
        return count_inliers(a.keypoints[matches[:, 0]], b.keypoints[matches[:, 1]], geometry)[0]

    # NumPy's matrix product and OpenCV release the GIL: one thread per core, each with a
    # single-threaded BLAS (nested BLAS threads would fight over the same cores).
    with threadpool_limits(limits=1, user_api="blas"), \
            ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return np.fromiter(pool.map(one, zip(rows, columns)), dtype=np.float64, count=len(rows))


def _pair_scores(names, cosine, lnbnn, inliers, rows, columns) -> dict[str, np.ndarray]:
    table = {"cosine": cosine[rows, columns], "inliers": inliers}
    if lnbnn is not None:
        table["lnbnn"] = lnbnn[rows, columns]
    return {name: table[name] for name in names if name in table}


def fuse_group(*, query_cosine: np.ndarray, database_cosine: np.ndarray,
               query_features: list, database_features: list, database_identities: np.ndarray,
               near_duplicate_groups: np.ndarray | None, method: LocalMethod, settings: FusionSettings,
               seed: int = 0, timings: dict | None = None,
               anchor_candidates: np.ndarray | None = None) -> GroupFusion:
    """Shortlist, match, calibrate on database pairs, fuse - for one dataset. ``timings`` (if
    given) receives calibration_s and queries_s. ``anchor_candidates`` (a mask of database rows):
    draw the calibration's pseudo-queries only from these, e.g. the photos a fine-tuned descriptor
    was not trained on."""
    timings = {} if timings is None else timings
    started = time.perf_counter()
    identities = np.asarray(database_identities, dtype=object)
    n_database = len(identities)
    index = KeypointIndex(database_features) if settings.use_lnbnn else None

    # Calibration pairs: anchors (database images) against the rest of the database.
    rng = np.random.default_rng(seed)
    pool = np.arange(n_database) if anchor_candidates is None else np.flatnonzero(anchor_candidates)
    anchors = np.zeros(n_database, dtype=bool)
    anchors[rng.permutation(pool)[: settings.calibration_anchors]] = True
    anchor_rows = np.flatnonzero(anchors)
    excluded = np.zeros((len(anchor_rows), n_database), dtype=bool)
    excluded[np.arange(len(anchor_rows)), anchor_rows] = True  # never an image with itself
    if near_duplicate_groups is not None:
        groups = np.asarray(near_duplicate_groups, dtype=object)
        known = np.array([g is not None and g == g for g in groups])
        excluded |= (groups[anchor_rows][:, None] == groups[None, :]) & known[anchor_rows][:, None]
    anchor_lnbnn = None
    if index is not None:
        anchor_lnbnn = np.zeros((len(anchor_rows), n_database))
        anchor_lnbnn[:] = index.lnbnn([database_features[r] for r in anchor_rows], settings.lnbnn_k,
                                      excluded=[set(np.flatnonzero(e)) for e in excluded])
    anchor_cosine = database_cosine[anchor_rows]
    rows, columns = shortlist(anchor_cosine, anchor_lnbnn, settings.shortlist, excluded)
    inliers = inlier_counts(method, [database_features[r] for r in anchor_rows], database_features,
                            rows, columns, settings.geometry, settings.workers)
    calibration_scores = _pair_scores(settings.scores, anchor_cosine, anchor_lnbnn, inliers, rows, columns)
    same = identities[anchor_rows[rows]] == identities[columns]
    calibration = Calibration.fit(calibration_scores, same.astype(float))
    database_scores = np.full((n_database, n_database), -np.inf)
    database_scores[anchor_rows[rows], columns] = calibration.fuse(calibration_scores)

    timings["calibration_s"] = time.perf_counter() - started

    # Queries: the same shortlists against the whole database of the dataset.
    started = time.perf_counter()
    query_lnbnn = index.lnbnn(query_features, settings.lnbnn_k) if index is not None else None
    rows, columns = shortlist(query_cosine, query_lnbnn, settings.shortlist)
    inliers = inlier_counts(method, query_features, database_features, rows, columns, settings.geometry,
                            settings.workers)
    query_pair_scores = _pair_scores(settings.scores, query_cosine, query_lnbnn, inliers, rows, columns)
    query_scores = np.full(query_cosine.shape, -np.inf)
    query_scores[rows, columns] = calibration.fuse(query_pair_scores)
    raw = {(int(r), int(c)): {k: float(v[i]) for k, v in query_pair_scores.items()}
           for i, (r, c) in enumerate(zip(rows, columns))}
    timings["queries_s"] = time.perf_counter() - started
    return GroupFusion(query_scores, database_scores, anchors, calibration, raw)
