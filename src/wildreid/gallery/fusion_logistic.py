"""The learned fusion rule: P(same) from all of a pair's calibrated scores at once, by logistic
regression (scikit-learn) on their log-odds.

The mean of calibrated probabilities (WildFusion's rule) weighs every score alike, however much
each one knows on this dataset: on flanks that RootSIFT cannot tell apart its inliers count as
much as an adapted cosine that separates the individuals. A logistic regression on the scores'
log-odds learns the weights from the database's own pseudo-query pairs (the pairs the isotonic
maps are fitted on). Evidence for the same animal never counts against it: a score whose weight
comes out negative (two scores saying the same thing) is dropped and the rest refitted, so a
higher score never lowers P(same).

A pair is not always scored by every type (two queries have no LNBNN votes, a gallery without
keypoints only a cosine), so one regression is fitted for every subset of the score types and the
pair is fused by the one of the types it has (calibration.PerSubsetRule).

Whether the rule replaces the mean is the validation's choice (fusion_choice.py), judged on pairs
of identities the rule never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression

from wildreid.gallery.calibration import FUSION_RULES, PerSubsetRule

EDGE = 1e-4  # probabilities are clipped to [EDGE, 1 - EDGE] before their log-odds
# L2 strength of sklearn's default; with a handful of weights and thousands of pairs it hardly
# matters, and it was not tuned.
STRENGTH = 1.0


def base_rate_log_odds(same: np.ndarray) -> float:
    """The log-odds of the pairs' share of same pairs (0.5 without pairs): what a rule says when
    the pairs have one class only."""
    rate = float(np.clip(np.mean(same) if len(same) else 0.5, EDGE, 1.0 - EDGE))
    return float(np.log(rate / (1.0 - rate)))


def log_odds(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(probability, dtype=np.float64), EDGE, 1.0 - EDGE)
    return np.log(clipped / (1.0 - clipped))


@dataclass
class Weights:
    """One regression: the score types it reads, their weights, and the intercept."""

    names: list[str]
    coefficients: list[float]
    intercept: float

    def predict(self, probabilities: dict[str, np.ndarray]) -> np.ndarray:
        total = np.full(len(next(iter(probabilities.values()))), self.intercept, dtype=np.float64)
        for name, weight in zip(self.names, self.coefficients):
            total += weight * log_odds(probabilities[name])
        return 1.0 / (1.0 + np.exp(-total))


def fit_weights(probabilities: dict[str, np.ndarray], same: np.ndarray, names: list[str]) -> Weights:
    """A logistic regression on the log-odds of ``names``, refitted without any score whose weight
    came out negative; with one class only (or no score left), the base rate."""
    same = np.asarray(same, dtype=np.float64)
    base = Weights([], [], base_rate_log_odds(same))
    kept = list(names)
    while kept and 0 < same.sum() < len(same):
        features = np.column_stack([log_odds(probabilities[name]) for name in kept])
        model = LogisticRegression(C=STRENGTH, max_iter=1000).fit(features, same.astype(int))
        weights = model.coef_[0]
        if np.all(weights >= 0):
            return Weights(kept, weights.tolist(), float(model.intercept_[0]))
        kept = [name for name, weight in zip(kept, weights) if weight >= 0]
    return base


@dataclass
class LogisticRule(PerSubsetRule):
    """One :class:`Weights` per subset of the score types."""

    models: dict[str, Weights] = field(default_factory=dict)

    def fit_one(self, probabilities: dict[str, np.ndarray], same: np.ndarray, names: list[str]) -> Weights:
        return fit_weights(probabilities, same, names)

    def to_json(self) -> dict:
        return {key: [w.names, w.coefficients, w.intercept] for key, w in self.models.items()}

    @classmethod
    def from_json(cls, data) -> "LogisticRule":
        return cls({key: Weights(list(n), list(c), float(i)) for key, (n, c, i) in data.items()})


FUSION_RULES.register("logistic", LogisticRule)
