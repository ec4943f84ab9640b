"""The query side of a gallery: photos described, ranked in their dataset part, then decided,
alone or grouped with each other and with the known individuals.

``Gallery.identify`` is the three steps in a row:

    photos = gallery.describe(queries)            # QueryPhotos: descriptors, keypoints, views
    ranked = gallery.rank(photos, depth)          # each photo's best identities
    result = gallery.answer(photos, ranked)       # decisions (and grouping): an IdentifyResult

They are apart so that a caller who identifies photos one by one and groups them later (the
review service, review/waiting.py) can keep each photo's description and ranking, and pay for
them once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from wildreid.data.dataset import NEW_INDIVIDUAL, QUERY, Dataset
from wildreid.data.places import PLACE_COLUMNS, with_places
from wildreid.data.regions import BBOX, REGION_SOURCE, Region
from wildreid.data.views import known_views
from wildreid.decide.decision import decide
from wildreid.decide.grouping import DatasetGrouping, Grouping
from wildreid.decide.ranking import IdentityRanking
from wildreid.gallery.errors import GalleryError
from wildreid.gallery.part import GROUPING_IDENTITIES, DatasetPart, Side
from wildreid.gallery.part import _threshold as part_threshold
from wildreid.gallery.query_pairs import PairMemory, remembered_graph
from wildreid.gallery.result import IdentifyResult, Ranking

if TYPE_CHECKING:
    from wildreid.gallery.gallery import Gallery

FITTED = "fitted"  # identify(threshold=FITTED): the thresholds fitted on the gallery


@dataclass
class QueryPhotos:
    """Query photos described for one gallery: what ranking and grouping them needs, per row."""

    table: pd.DataFrame  # image_id, path, dataset, group, view and the region columns
    regions: list[Region | None] | None  # None: every photo whole
    side: Side  # as described: global vectors (as extracted), keypoints, extra methods' keypoints
    mirrored: Side | None  # flipped left-right (mirrored matching)
    usable: np.ndarray  # (Q,) bool: read and described
    failures: dict[int, str]  # row -> why it could not be read
    keys: list  # each row's content key (its hash, joined with its region); None where unreadable
    timings: dict = field(default_factory=dict)

    @property
    def views(self) -> np.ndarray | None:
        return known_views(self.table["view"])

    def take(self, rows) -> "QueryPhotos":
        """Some of the photos (distinct rows), in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        position = {int(row): new for new, row in enumerate(rows)}
        return QueryPhotos(
            self.table.iloc[rows].reset_index(drop=True),
            [self.regions[r] for r in rows] if self.regions is not None else None,
            self.side.take(rows),
            self.mirrored.take(rows) if self.mirrored is not None else None,
            self.usable[rows],
            {position[row]: why for row, why in self.failures.items() if row in position},
            [self.keys[r] for r in rows],
        )

    def extend(self, other: "QueryPhotos") -> "QueryPhotos":
        """These photos, then ``other``'s (described for the same gallery)."""
        regions = None
        if self.regions is not None or other.regions is not None:
            regions = (self.regions or [None] * len(self.table)) + (other.regions or [None] * len(other.table))
        return QueryPhotos(
            pd.concat([self.table, other.table], ignore_index=True),
            regions,
            self.side.extend(other.side),
            self.mirrored.extend(other.mirrored) if self.mirrored is not None else None,
            np.concatenate([self.usable, other.usable]),
            {**self.failures, **{len(self.table) + row: why for row, why in other.failures.items()}},
            self.keys + other.keys,
        )

    def evidence(self, rows: np.ndarray, extra_methods: dict) -> dict:
        """What DatasetPart.rank and match_graph take besides vectors and keypoints, for ``rows``."""
        views = self.views
        return {
            "views": views[rows] if views is not None else None,
            "extra": self.side.take(rows).extra,
            "extra_methods": extra_methods,
            "mirrored": self.mirrored.take(rows) if self.mirrored is not None else None,
        }

    def features(self, rows: np.ndarray) -> list | None:
        return [self.side.features[r] for r in rows] if self.side.features is not None else None

    def asked(self, group: str) -> np.ndarray:
        """The rows of one dataset part that could be read (the ones it ranks)."""
        return np.flatnonzero((self.table["group"] == group).to_numpy() & self.usable)


def ranking_depth(top_k: int, method: str | None) -> int:
    """Identities ranked per query: the candidates kept, or, for grouping, enough to link each
    query to its best known individuals."""
    return max(top_k, GROUPING_IDENTITIES) if method is not None else top_k


def empty_ranking(queries: int, depth: int) -> IdentityRanking:
    return IdentityRanking(
        np.full((queries, depth), None, dtype=object),
        np.full((queries, depth), np.nan),
        np.full((queries, depth), -1, dtype=np.int64),
    )


def ranking_rows(ranking: IdentityRanking, rows) -> IdentityRanking:
    rows = np.asarray(rows, dtype=np.int64)
    return IdentityRanking(ranking.identities[rows], ranking.scores[rows], ranking.best_images[rows])


def set_ranking_rows(ranking: IdentityRanking, rows, found: IdentityRanking) -> None:
    ranking.identities[rows], ranking.scores[rows], ranking.best_images[rows] = (
        found.identities,
        found.scores,
        found.best_images,
    )


def rank_queries(gallery: Gallery, photos: QueryPhotos, depth: int) -> IdentityRanking:
    """Each readable photo's ``depth`` best identities in its own dataset part (one row per
    photo; rows of photos that could not be read stay empty)."""
    ranked = empty_ranking(len(photos.table), depth)
    for name in dict.fromkeys(photos.table["group"]):
        asked = photos.asked(name)
        found, _ = gallery.groups[name].rank(
            photos.side.vectors[asked],
            photos.features(asked),
            gallery.preset,
            gallery.method,
            depth,
            **photos.evidence(asked, gallery.extra_methods),
        )
        set_ranking_rows(ranked, asked, found)
    return ranked


def answer_queries(
    gallery: Gallery,
    photos: QueryPhotos,
    ranked: IdentityRanking,
    *,
    threshold=FITTED,
    top_k: int,
    method: str | None,
    pairs: PairMemory | None = None,
) -> IdentifyResult:
    """Decide every photo from its ranking (``rank_queries``, at ``ranking_depth``); with a
    grouping ``method``, group each dataset's photos and take each photo's group's answer.
    ``pairs``: remembered comparisons between the photos (see query_pairs.py)."""
    started = time.perf_counter()
    table = photos.table
    notes = list(gallery.notes)
    ranking = Ranking.empty(len(table), top_k)
    thresholds, choices, calibrations, groupings, adaptations, rules = {}, {}, {}, {}, {}, {}
    query_thresholds = np.full(len(table), np.nan)
    prediction = np.full(len(table), NEW_INDIVIDUAL, dtype=object)
    for name in dict.fromkeys(table["group"]):
        group = gallery.groups[name]
        members = np.flatnonzero((table["group"] == name).to_numpy())
        thresholds[name] = chosen_threshold(threshold, group)
        if group.fit.choice is not None and threshold == FITTED:
            choices[name] = group.fit.choice
        if group.fit.calibration is not None and gallery.method is not None:
            calibrations[name] = group.fit.calibration
        if group.fit.adaptation is not None:
            adaptations[name] = group.fit.adaptation
        if group.fit.fusion_rule is not None:
            rules[name] = group.fit.fusion_rule
        query_thresholds[members] = np.nan if thresholds[name] is None else thresholds[name]
        asked = photos.asked(name)
        notes += _fallback_notes(group, photos, asked, gallery.preset)
        found = ranking_rows(ranked, asked)
        ranking.identities[asked] = found.identities[:, :top_k]
        ranking.scores[asked] = found.scores[:, :top_k]
        ranking.matches[asked] = np.where(
            found.best_images[:, :top_k] >= 0, group.image_ids[np.maximum(found.best_images[:, :top_k], 0)], None
        )
        prediction[asked] = decide(found.identities[:, 0], found.scores[:, 0], thresholds[name])
        if method is not None and len(asked) > 0:
            groupings[name] = group_queries(gallery, name, method, thresholds[name], photos, asked, found, pairs)
            for node, row in enumerate(asked):
                identity = groupings[name].identity_of(node)
                prediction[row] = NEW_INDIVIDUAL if identity is None else identity
    timings = {**photos.timings, "match_s": photos.timings.get("match_s", 0.0) + time.perf_counter() - started}
    return IdentifyResult(
        dataset=Dataset(
            pd.concat(
                [gallery.database_rows(), table.assign(split=QUERY).drop(columns=["group", "view"])],
                ignore_index=True,
            ),
            "gallery",
        ),
        preset=gallery.preset,
        # with when and where each photo was taken: its EXIF, under the dataset's typed columns
        queries=with_places(table)[
            ["image_id", "dataset"] + ([BBOX, REGION_SOURCE] if photos.regions is not None else []) + [*PLACE_COLUMNS]
        ],
        prediction=prediction,
        ranking=ranking,
        query_thresholds=query_thresholds,
        errors=[photos.failures.get(row, "") for row in range(len(table))],
        thresholds=thresholds,
        threshold_choices=choices,
        failures=failure_table(table, photos.failures, QUERY),
        timings=timings,
        calibrations=calibrations,
        notes=notes,
        grouping=Grouping(groupings) if method is not None else None,
        adaptations=adaptations,
        fusion_rules=rules,
    )


def group_photos(
    gallery: Gallery, photos: QueryPhotos, ranked: IdentityRanking, *, method: str | None, pairs: PairMemory | None
) -> Grouping:
    """The grouping ``answer_queries`` makes of the photos (at the fitted thresholds), alone."""
    groupings = {}
    for name in dict.fromkeys(photos.table["group"]):
        asked = photos.asked(name)
        if len(asked):
            threshold = chosen_threshold(FITTED, gallery.groups[name])
            found = ranking_rows(ranked, asked)
            groupings[name] = group_queries(gallery, name, method, threshold, photos, asked, found, pairs)
    return Grouping(groupings)


def _fallback_notes(group: DatasetPart, photos: QueryPhotos, asked: np.ndarray, preset) -> list[str]:
    views = photos.views
    fallbacks = group.view_masks(views[asked] if views is not None else None, preset)[2]
    if not fallbacks:
        return []
    return [
        f"{group.name}: {len(fallbacks)} quer{'y' if len(fallbacks) == 1 else 'ies'} of view(s) "
        f"{', '.join(sorted(set(fallbacks)))} had no database photo of a compatible view and "
        "were compared with every photo."
    ]


def group_queries(
    gallery: Gallery,
    name: str,
    method: str,
    threshold,
    photos: QueryPhotos,
    asked: np.ndarray,
    found: IdentityRanking,
    pairs: PairMemory | None,
) -> DatasetGrouping:
    """Group one dataset's queries (``asked``, ranked as ``found``) with each other and with their
    best known individuals; ``threshold``: the new_individual threshold this run decides with
    (None: closed set)."""
    group = gallery.groups[name]
    if group.fit.calibration is None or method not in group.fit.links:
        raise GalleryError(
            f"the gallery's fit of '{name}' has no linking threshold for '{method}' grouping (it was fitted "
            f"for {', '.join(group.fit.links) or 'no grouping'}); pass --grouping "
            f"{next(iter(group.fit.links), 'none')}, or build the gallery with a preset that groups by '{method}'."
        )
    evidence = photos.evidence(asked, gallery.extra_methods)
    vectors, features = photos.side.vectors[asked], photos.features(asked)
    keys = list(zip(photos.table["image_id"].to_numpy()[asked].tolist(), [photos.keys[row] for row in asked]))
    if pairs is not None and len(set(keys)) == len(keys):  # remembered comparisons need a key per photo
        graph = remembered_graph(
            group, vectors, features, found, gallery.preset, gallery.method, keys, pairs.part(name), **evidence
        )
    else:
        graph = group.match_graph(vectors, features, found, gallery.preset, gallery.method, **evidence)
    return DatasetGrouping.fit(
        name,
        asked,
        photos.table["image_id"].to_numpy()[asked],
        graph,
        method=method,
        link_threshold=group.fit.links[method].threshold,
        known_threshold=group.known_probability(threshold, gallery.method),
    )


def chosen_threshold(setting, group: DatasetPart):
    """The new_individual threshold of one part: FITTED (its own), a number, {dataset: number}
    (read by the preset's rule, part.py), or None (closed set)."""
    if setting == FITTED:
        return group.fit.threshold
    if isinstance(setting, dict):
        try:
            return part_threshold(setting, group.name, None, group.identities, group.near_duplicates)[0]
        except ValueError as error:
            raise GalleryError(str(error)) from None
    return None if setting is None else float(setting)


def failure_table(table: pd.DataFrame, failures: dict[int, str], split: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (table["image_id"].iloc[row], split, table["path"].iloc[row], reason)
            for row, reason in sorted(failures.items())
        ],
        columns=["image_id", "split", "path", "reason"],
    )
