"""Calibration of every score to P(same individual), and the fusion of calibrated scores.

WildFusion's recipe, with our own code: each score type (global cosine, LNBNN, geometric inliers,
confident matches) lives on its own scale, so each is turned into a probability by an isotonic
regression fitted on database-vs-database pairs of the same dataset (never an image with itself,
never two near-duplicates of one clip or date); the fused score is the mean of the probabilities.

Pairs compared after a horizontal flip (mirrored matching, data/views.py) get maps of their own
(``mirrored:cosine``, ...): how often a mirrored match is the same animal depends on how
symmetric the species is, and the database says how much.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from sklearn.isotonic import IsotonicRegression

TIE_BREAK = 1e-6


MIRRORED = "mirrored:"  # prefix of the maps fitted on mirrored pairs


@dataclass
class Calibration:
    """Per score type, a monotone map from raw score to P(same individual)."""

    knots: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    pairs: int = 0
    positives: int = 0

    @classmethod
    def fit(cls, scores: dict[str, np.ndarray], same: np.ndarray, mirrored: np.ndarray | None = None) -> "Calibration":
        """``mirrored``: which pairs were compared after a flip; they get maps of their own."""
        same = np.asarray(same, dtype=float)
        flipped = np.zeros(len(same), bool) if mirrored is None else np.asarray(mirrored, bool)
        knots = {}
        for prefix, rows in (("", ~flipped), (MIRRORED, flipped)):
            if not rows.any():
                continue
            for name, values in scores.items():
                regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
                regression.fit(np.asarray(values)[rows], same[rows])
                knots[prefix + name] = (regression.X_thresholds_.tolist(), regression.y_thresholds_.tolist())
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

    def fuse(self, scores: dict[str, np.ndarray], mirrored: np.ndarray | None = None) -> np.ndarray:
        """The mean of the calibrated scores; mirrored pairs through the mirrored maps (through the
        direct ones where the database had no mirrored pair to fit them on)."""
        fused = np.mean([self.probability(name, values) for name, values in scores.items()], axis=0)
        if mirrored is not None and np.any(mirrored):
            rows = np.asarray(mirrored, bool)
            fused = np.asarray(fused, dtype=np.float64).copy()
            fused[rows] = np.mean(
                [
                    self.probability(MIRRORED + name if MIRRORED + name in self.knots else name, values[rows])
                    for name, values in scores.items()
                ],
                axis=0,
            )
        return fused

    def to_json(self) -> str:
        return json.dumps({"pairs": self.pairs, "positives": self.positives, "knots": self.knots})

    @classmethod
    def from_json(cls, text: str) -> "Calibration":
        content = json.loads(text)
        return cls({k: (v[0], v[1]) for k, v in content["knots"].items()}, content["pairs"], content["positives"])
