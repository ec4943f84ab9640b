"""The boosted fusion rule: P(same) from all of a pair's calibrated scores at once, by gradient-
boosted trees (scikit-learn's HistGradientBoostingClassifier) on their log-odds.

The logistic rule (fusion_logistic.py) weighs each score by one number everywhere. Trees can learn
that a score counts only in part of another's range (many inliers settling a pair whose cosine is
middling, saying little where the cosine already has); the AnimalCLEF2025 runner-up gained 2.4
points with boosted trees over a pair's scores. As in the logistic rule,
evidence for the same animal never counts against it: every tree is constrained to be monotone
increasing in every score.

Settings, scikit-learn's defaults and not tuned on the shared datasets: 100 trees of at most 31
leaves, learning rate 0.1, early stopping on a tenth of the pairs above 10,000 pairs (its split
drawn with seed 0, so the same pairs give the same rule). Whether the rule replaces the mean is
the validation's choice (fusion_choice.py), judged on pairs of identities it never saw.

A fitted rule is saved as plain numbers, not a pickle (a gallery file is never code): each tree's
nodes (the score each splits on, the threshold, where a missing score goes, the two children,
the leaf value), copied once from the fitted model and evaluated here, so a saved gallery answers
the same under any later scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from wildreid.gallery.calibration import FUSION_RULES, PerSubsetRule
from wildreid.gallery.fusion_logistic import base_rate_log_odds, log_odds

SEED = 0  # early stopping's validation split
# The node fields kept, and the type each is read as (sklearn stores the flags as uint8: ``~``
# on them would not be a logical not).
TREE_FIELDS = {
    "feature_idx": np.int64,
    "num_threshold": np.float64,
    "missing_go_to_left": bool,
    "left": np.int64,
    "right": np.int64,
    "is_leaf": bool,
    "value": np.float64,
}


@dataclass
class Trees:
    """One boosted model: the score types it reads, its starting log-odds, and its trees, each a
    tuple of node arrays in TREE_FIELDS' order and types."""

    names: list[str]
    baseline: float
    trees: list[tuple[np.ndarray, ...]]

    def summed_log_odds(self, features: np.ndarray) -> np.ndarray:
        """The baseline plus each tree's leaf value, per row of ``features`` (the scores' log-odds)."""
        total = np.full(len(features), self.baseline, dtype=np.float64)
        for feature, threshold, missing_left, left, right, is_leaf, value in self.trees:
            node = np.zeros(len(features), dtype=np.int64)
            inner = np.flatnonzero(~is_leaf[node])
            while len(inner):  # every pair walks down one level per pass, as sklearn's predictor
                at = node[inner]
                seen = features[inner, feature[at]]
                goes_left = np.where(np.isnan(seen), missing_left[at], seen <= threshold[at])
                node[inner] = np.where(goes_left, left[at], right[at])
                inner = inner[~is_leaf[node[inner]]]
            total += value[node]
        return total

    def predict(self, probabilities: dict[str, np.ndarray]) -> np.ndarray:
        features = np.column_stack([log_odds(probabilities[name]) for name in self.names])
        return 1.0 / (1.0 + np.exp(-self.summed_log_odds(features)))


def fit_trees(probabilities: dict[str, np.ndarray], same: np.ndarray, names: list[str]) -> Trees:
    """Boosted trees on the log-odds of ``names``; with one class only, the base rate."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    same = np.asarray(same, dtype=np.float64)
    if not 0 < same.sum() < len(same):
        return Trees(list(names), base_rate_log_odds(same), [])
    features = np.column_stack([log_odds(probabilities[name]) for name in names])
    model = HistGradientBoostingClassifier(monotonic_cst=[1] * len(names), random_state=SEED)
    # One OpenMP thread. Beside one busy process on two cores a fit on 20,000 pairs took 1.46 s
    # with scikit-learn's default threads and 0.24 s with one (threads waiting for a core another
    # process holds); idle, 0.24 s either way; the same P(same) to the last bit
    # (benchmarks/boosted_threads.py).
    with threadpool_limits(1):
        model.fit(features, same.astype(int))
    # The fitted trees' nodes: scikit-learn keeps them in ``_predictors`` (one list per boosting
    # round, one predictor per class score; a two-class model has one). Read once, here.
    trees = [as_tree([predictor.nodes[name] for name in TREE_FIELDS]) for (predictor,) in model._predictors]
    return Trees(list(names), float(np.ravel(model._baseline_prediction)[0]), trees)


def as_tree(fields) -> tuple[np.ndarray, ...]:
    """A tree's node arrays, in TREE_FIELDS' order, each as its type."""
    return tuple(np.asarray(values, dtype=kind) for values, kind in zip(fields, TREE_FIELDS.values()))


@dataclass
class BoostedRule(PerSubsetRule):
    """One :class:`Trees` per subset of the score types."""

    models: dict[str, Trees] = field(default_factory=dict)

    def fit_one(self, probabilities: dict[str, np.ndarray], same: np.ndarray, names: list[str]) -> Trees:
        return fit_trees(probabilities, same, names)

    def to_json(self) -> dict:
        return {
            key: [model.names, model.baseline, [[nodes.tolist() for nodes in tree] for tree in model.trees]]
            for key, model in self.models.items()
        }

    @classmethod
    def from_json(cls, data) -> "BoostedRule":
        return cls(
            {
                key: Trees(list(names), float(baseline), [as_tree(tree) for tree in trees])
                for key, (names, baseline, trees) in data.items()
            }
        )


FUSION_RULES.register("boosted", BoostedRule)
