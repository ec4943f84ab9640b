"""Calibration of every score to P(same individual), and the fusion of calibrated scores.

WildFusion's recipe, with our own code: each score type (global cosine, LNBNN, geometric inliers,
confident matches) lives on its own scale, so each is turned into a probability by a calibrator
fitted on database-vs-database pairs of the same dataset (never an image with itself, never two
near-duplicates of one clip or date); a fusion rule then combines the probabilities into one.

Both are choices by name. A calibrator is a class registered in ``CALIBRATORS`` that implements
:class:`Calibrator` (``fit(scores, same)``, ``predict(scores)`` -> P(same), to and from JSON);
``isotonic`` is the default. A fusion rule is registered in ``FUSION_RULES``: either a function
from {score type: P(same)} to one P(same) (``mean``, the default), or a :class:`LearnedRule`
class, fitted on the same pairs' calibrated probabilities (``logistic``, fusion_logistic.py;
``boosted``, fusion_boosted.py). To
add one, write it in a new file of this wing under ``@CALIBRATORS.register("name")`` (or
``@FUSION_RULES.register("name")``) and add the file's module to that registry's ``modules``
below. A fitted :class:`Calibration` remembers both names (and a learned rule's fitted state), so
a gallery answers queries with the maps and the rule it was fitted with.

Pairs compared after a horizontal flip (mirrored matching, data/views.py) get maps of their own
(``mirrored:cosine``, ...): how often a mirrored match is the same animal depends on how
symmetric the species is, and the database says how much.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable

import numpy as np
from sklearn.isotonic import IsotonicRegression

from wildreid.util.registry import Registry

TIE_BREAK = 1e-6


MIRRORED = "mirrored:"  # prefix of the maps fitted on mirrored pairs


class Calibrator:
    """One score type's map from raw score to P(same individual)."""

    def fit(self, scores: np.ndarray, same: np.ndarray) -> "Calibrator":
        """Fit on pairs' raw ``scores`` and whether each pair is the same individual (1.0 or 0.0);
        return self."""
        raise NotImplementedError

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """P(same individual) of each raw score."""
        raise NotImplementedError

    def to_json(self):
        """What the fitted map is, as plain JSON data (lists, numbers, strings)."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, data) -> "Calibrator":
        raise NotImplementedError


class LearnedRule:
    """A fusion rule with parameters, fitted on database pairs' calibrated probabilities."""

    def fit(
        self, probabilities: dict[str, np.ndarray], same: np.ndarray, asked: list[list[str]] | None = None
    ) -> "LearnedRule":
        """``asked``: the sets of score types the rule will be asked to fuse (a fold's
        calibration in the fusion choice knows them); None: any."""
        raise NotImplementedError

    def __call__(self, probabilities: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def to_json(self):
        raise NotImplementedError

    @classmethod
    def from_json(cls, data) -> "LearnedRule":
        raise NotImplementedError


class PerSubsetRule(LearnedRule):
    """A learned rule with one model per subset of the score types: a pair is not always scored
    by every type (two queries have no LNBNN votes, a threshold is converted through the cosine
    alone), and it is fused by the model fitted on the types it has. A subclass says how one
    model is fitted (``fit_one``); a model answers ``predict(probabilities)``. ``models`` is keyed
    by the sorted names joined with '+'."""

    models: dict

    def fit_one(self, probabilities: dict[str, np.ndarray], same: np.ndarray, names: list[str]):
        raise NotImplementedError

    def fit(
        self, probabilities: dict[str, np.ndarray], same: np.ndarray, asked: list[list[str]] | None = None
    ) -> "PerSubsetRule":
        names = sorted(probabilities)
        subsets = (
            [list(subset) for size in range(1, len(names) + 1) for subset in combinations(names, size)]
            if asked is None
            else [sorted(subset) for subset in asked if subset]
        )
        self.models = {"+".join(subset): self.fit_one(probabilities, same, subset) for subset in subsets}
        return self

    def __call__(self, probabilities: dict[str, np.ndarray]) -> np.ndarray:
        key = "+".join(sorted(probabilities))
        if key not in self.models:
            raise ValueError(
                f"the learned fusion rule was fitted on the scores {max(self.models, key=len)}, "
                f"not on {key}; refit the gallery (wildreid gallery refit)."
            )
        return self.models[key].predict(probabilities)


FusionRule = Callable[[dict[str, np.ndarray]], np.ndarray]
CALIBRATORS: Registry[type[Calibrator]] = Registry("calibrator", modules=())
FUSION_RULES: Registry[FusionRule | type[LearnedRule]] = Registry(
    "fusion rule",
    modules=("wildreid.gallery.calibration", "wildreid.gallery.fusion_logistic", "wildreid.gallery.fusion_boosted"),
)
DEFAULT_CALIBRATOR = "isotonic"
DEFAULT_FUSION = "mean"


@CALIBRATORS.register("isotonic")
@dataclass
class IsotonicCalibrator(Calibrator):
    """A monotone, piecewise linear map through the knots of an isotonic regression."""

    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    def fit(self, scores: np.ndarray, same: np.ndarray) -> "IsotonicCalibrator":
        regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        regression.fit(scores, same)
        self.xs, self.ys = regression.X_thresholds_.tolist(), regression.y_thresholds_.tolist()
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        xs, ys = self.xs, self.ys
        values = np.asarray(scores, dtype=np.float64)
        calibrated = np.interp(values, xs, ys)  # linear between knots, clipped at the ends, as sklearn
        # An isotonic map is flat over long stretches and at both ends, so it ties many pairs a
        # query must still tell apart (on LionData's closed split calibrated cosine alone fell to
        # top-1 0.03 from the raw 0.13). A strictly increasing term of weight TIE_BREAK keeps the
        # raw order inside a step while moving no probability by more than TIE_BREAK. (Scaled by
        # the knots' span, so it resolves cosines and inlier counts alike.)
        order = 0.5 + np.arctan((values - xs[0]) / max(xs[-1] - xs[0], 1e-12)) / np.pi
        return (1.0 - TIE_BREAK) * calibrated + TIE_BREAK * order

    def to_json(self) -> tuple[list[float], list[float]]:
        return (self.xs, self.ys)

    @classmethod
    def from_json(cls, data) -> "IsotonicCalibrator":
        return cls(data[0], data[1])


@FUSION_RULES.register("mean")
def mean(probabilities: dict[str, np.ndarray]) -> np.ndarray:
    """WildFusion's rule: the mean of the calibrated probabilities."""
    return np.mean(list(probabilities.values()), axis=0)


@dataclass
class Calibration:
    """Per score type a fitted calibrator; and the fusion rule of their probabilities."""

    maps: dict[str, Calibrator] = field(default_factory=dict)
    pairs: int = 0
    positives: int = 0
    calibrator: str = DEFAULT_CALIBRATOR
    fusion: str = DEFAULT_FUSION
    rule: LearnedRule | None = None  # the fitted rule, where ``fusion`` names a learned one

    @property
    def knots(self) -> dict:
        """Each map as its JSON data: for an isotonic map its knots (xs, ys), the name this had
        when every map was one."""
        return {name: fitted.to_json() for name, fitted in self.maps.items()}

    @classmethod
    def fit(
        cls,
        scores: dict[str, np.ndarray],
        same: np.ndarray,
        mirrored: np.ndarray | None = None,
        *,
        calibrator: str = DEFAULT_CALIBRATOR,
        fusion: str = DEFAULT_FUSION,
        asked: list[list[str]] | None = None,
    ) -> "Calibration":
        """``mirrored``: which pairs were compared after a flip; they get maps of their own.
        ``asked``: the only sets of score types a learned rule will fuse (LearnedRule.fit)."""
        make = CALIBRATORS.get(calibrator)
        rule = FUSION_RULES.get(fusion)  # an unknown rule fails now, not at the first query
        same = np.asarray(same, dtype=float)
        flipped = np.zeros(len(same), bool) if mirrored is None else np.asarray(mirrored, bool)
        maps = {}
        for prefix, rows in (("", ~flipped), (MIRRORED, flipped)):
            if not rows.any():
                continue
            for name, values in scores.items():
                maps[prefix + name] = make().fit(np.asarray(values)[rows], same[rows])
        calibration = cls(maps, int(len(same)), int(np.sum(same)), calibrator, fusion)
        if isinstance(rule, type) and issubclass(rule, LearnedRule):
            calibration.rule = rule().fit(calibration.probabilities(scores, mirrored), same, asked)
        return calibration

    def probability(self, name: str, values: np.ndarray) -> np.ndarray:
        return self.maps[name].predict(values)

    def probabilities(self, scores: dict[str, np.ndarray], mirrored: np.ndarray | None = None) -> dict:
        """Each score type's P(same); mirrored pairs through the mirrored maps (through the direct
        ones where the database had no mirrored pair to fit them on). A score this calibration has
        no map for is not part of its fusion (the fusion choice may leave one of the preset's out,
        fusion_choice.py) and is passed over."""
        scores = {name: values for name, values in scores.items() if name in self.maps}
        calibrated = {name: self.probability(name, values) for name, values in scores.items()}
        if mirrored is not None and np.any(mirrored):
            rows = np.asarray(mirrored, bool)
            for name, values in scores.items():
                mapped = MIRRORED + name if MIRRORED + name in self.maps else name
                calibrated[name] = np.asarray(calibrated[name], dtype=np.float64).copy()
                calibrated[name][rows] = self.probability(mapped, np.asarray(values)[rows])
        return calibrated

    def fuse(self, scores: dict[str, np.ndarray], mirrored: np.ndarray | None = None) -> np.ndarray:
        """The calibrated scores combined by the fusion rule."""
        combine = self.rule if self.rule is not None else FUSION_RULES.get(self.fusion)
        assert callable(combine)
        return np.asarray(combine(self.probabilities(scores, mirrored)), dtype=np.float64)

    def to_json(self) -> str:
        # The two names are written only when they are not the defaults, so a default calibration
        # is saved exactly as before they were choices, and an old file loads as the defaults.
        content = {"pairs": self.pairs, "positives": self.positives, "knots": self.knots}
        if self.calibrator != DEFAULT_CALIBRATOR:
            content["calibrator"] = self.calibrator
        if self.fusion != DEFAULT_FUSION:
            content["fusion"] = self.fusion
        if self.rule is not None:
            content["rule"] = self.rule.to_json()
        return json.dumps(content)

    @classmethod
    def from_json(cls, text: str) -> "Calibration":
        content = json.loads(text)
        calibrator = content.get("calibrator", DEFAULT_CALIBRATOR)
        load = CALIBRATORS.get(calibrator).from_json
        maps = {name: load(data) for name, data in content["knots"].items()}
        fusion = content.get("fusion", DEFAULT_FUSION)
        rule = FUSION_RULES.get(fusion)
        learned = None
        if isinstance(rule, type) and issubclass(rule, LearnedRule):
            learned = rule.from_json(content["rule"])
        return cls(maps, content["pairs"], content["positives"], calibrator, fusion, learned)
