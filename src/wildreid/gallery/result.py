"""The answer of an identification run, as data: per query its decision and ranked candidates.

The ranking stays arrays (identities, scores, best-matching database image per rank); it is
flattened to the columns of candidates.csv (``identity_1``, ``score_1``, ``match_1``, ...) only
by :attr:`IdentifyResult.candidates`, for files, reports and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from wildreid.data.dataset import NEW_INDIVIDUAL, Dataset
from wildreid.data.places import PLACE_COLUMNS
from wildreid.decide.grouping import Grouping
from wildreid.presets import Preset

UNREADABLE = "unreadable_image"


@dataclass
class Ranking:
    """Per query (rows) the k best identities, best first; None / NaN where fewer exist."""

    identities: np.ndarray  # (Q, k) object
    scores: np.ndarray  # (Q, k) float
    matches: np.ndarray  # (Q, k) object: image_id of the identity's best database photo

    @classmethod
    def empty(cls, queries: int, k: int) -> "Ranking":
        return cls(
            np.full((queries, k), None, dtype=object),
            np.full((queries, k), np.nan),
            np.full((queries, k), None, dtype=object),
        )

    def candidates(self, query: int) -> list[tuple[str, float, str | None]]:
        """(identity, score, best image id) of one query, best first."""
        return [
            (identity, float(score), match)
            for identity, score, match in zip(self.identities[query], self.scores[query], self.matches[query])
            if identity is not None and score == score
        ]


@dataclass
class IdentifyResult:
    dataset: Dataset  # the queries (and, where known, the database), for evaluation
    preset: Preset
    queries: pd.DataFrame  # image_id, dataset: one row per query, in input order
    prediction: np.ndarray  # (Q,) object: an identity or new_individual
    ranking: Ranking
    query_thresholds: np.ndarray  # (Q,) the threshold each query was decided with (NaN: closed set)
    errors: list  # (Q,) why a query could not be read, or ""
    thresholds: dict  # dataset -> threshold used (float, or None = closed set)
    threshold_choices: dict  # dataset -> ThresholdChoice, where chosen automatically
    failures: pd.DataFrame  # image_id, split, path, reason
    timings: dict = field(default_factory=dict)
    calibrations: dict = field(default_factory=dict)  # dataset -> Calibration, when local matching ran
    notes: list = field(default_factory=list)  # what a user should know about how it ran
    grouping: Grouping | None = None  # queries grouped into individuals, when the preset groups
    # With MegaDetector detections (detections.py): the photos that gave no row, and why
    # (image_id, split, path, reason); None when no detections file was used.
    no_animal: pd.DataFrame | None = None
    # dataset -> the adaptation chosen when its gallery part was fitted, with its validation
    # figures (gallery/adaptation.py); absent where the preset asks for none.
    adaptations: dict = field(default_factory=dict)
    # dataset -> the fusion rule chosen when its gallery part was fitted, with its validation
    # figures (gallery/fusion_choice.py); absent where the preset asks for the mean.
    fusion_rules: dict = field(default_factory=dict)

    @property
    def predictions(self) -> pd.DataFrame:
        """The submission: image_id, identity."""
        return pd.DataFrame({"image_id": self.queries["image_id"].to_numpy(), "identity": self.prediction})

    @property
    def clusters(self) -> pd.DataFrame:
        """The AnimalCLEF2026 submission: image_id, cluster. A query's cluster is its group (a known
        individual or new_individual_<k>); a query alone, or any query of a run without grouping
        that was answered new_individual, is a cluster of its own."""
        if self.grouping is not None:
            group = self.grouping.per_query(len(self.queries))["group"].to_numpy(dtype=object)
        else:
            group = np.where(self.prediction == NEW_INDIVIDUAL, "", self.prediction).astype(object)
        image_ids = self.queries["image_id"].astype(str).to_numpy()
        cluster = np.where(group != "", group, np.char.add("alone_", image_ids.astype(str))).astype(object)
        return pd.DataFrame({"image_id": self.queries["image_id"].to_numpy(), "cluster": cluster})

    @cached_property
    def candidates(self) -> pd.DataFrame:
        """The detailed table of candidates.csv: one row per query, the ranking flattened."""
        table = pd.DataFrame(
            {
                "image_id": self.queries["image_id"].to_numpy(),
                "dataset": self.queries["dataset"].to_numpy(),
                "prediction": self.prediction,
                "top1_score": self.ranking.scores[:, 0] if self.ranking.scores.shape[1] else np.nan,
                "threshold": [None if t != t else t for t in self.query_thresholds],
                "flags": [UNREADABLE if reason else "" for reason in self.errors],
                "error": list(self.errors),
            }
        )
        # When and where each query was taken (its EXIF, or the dataset's typed columns; see
        # queries.py): what a field team sorts and maps results by.
        for column in PLACE_COLUMNS:
            if column in self.queries:
                table[column] = self.queries[column].to_numpy()
        if self.grouping is not None:
            table = pd.concat([table, self.grouping.per_query(len(table))], axis=1)
        # Where regions were used: the region each query was described by, beside its id.
        for position, column in enumerate(("bbox", "region_source"), start=2):
            if column in self.queries:
                table.insert(position, column, self.queries[column].to_numpy())
        for rank in range(self.ranking.identities.shape[1]):
            table[f"identity_{rank + 1}"] = self.ranking.identities[:, rank]
            table[f"score_{rank + 1}"] = self.ranking.scores[:, rank]
            table[f"match_{rank + 1}"] = self.ranking.matches[:, rank]
        return table
