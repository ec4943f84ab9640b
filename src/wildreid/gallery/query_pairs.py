"""The match graph of a set of queries (``DatasetPart.match_graph``), with the keypoint
comparisons between queries remembered.

The review service groups a dataset's waiting photos again after every upload: the same photos,
and one more. ``match_graph`` would match every shortlisted pair of them again, so each upload
would cost more the longer the review backlog. Here the pairs are found exactly as
``match_graph`` finds them (each query's cosine shortlist of the others, within compatible views,
mirror views through the flipped photo) and scored with the same calibration, so the graph is the
same; only the keypoint scores of a pair compared before come from memory, keyed by the two
photos' contents (and whether the first was flipped). Cosines are recomputed: they are cheap.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wildreid.decide.graph import MatchGraph
from wildreid.decide.ranking import IdentityRanking
from wildreid.gallery.index import VectorIndex
from wildreid.gallery.part import DatasetPart, Side, _between_queries, _scored_pairs
from wildreid.gallery.shortlist import ScoredPairs
from wildreid.local.base import LocalFeatures, LocalMethod
from wildreid.local.pairs import PAIR_COUNTS, FusionSettings, inlier_counts, pair_counts
from wildreid.presets import Preset


class PairMemory:
    """Keypoint scores of compared query pairs: (content key, other's content key, flipped) ->
    {score name: value}. Scores of two photos do not depend on the gallery, only on the preset."""

    def __init__(self):
        self.scores: dict[tuple, dict[str, float]] = {}

    def keep_only(self, keys) -> None:
        """Forget the pairs with a photo not among ``keys``."""
        keys = set(keys)
        self.scores = {pair: found for pair, found in self.scores.items() if pair[0] in keys and pair[1] in keys}


def remembered_graph(
    group: DatasetPart,
    vectors: np.ndarray,
    features: list[LocalFeatures | None] | None,
    ranking: IdentityRanking,
    preset: Preset,
    method: LocalMethod | None,
    keys: list,
    memory: PairMemory,
    *,
    views: np.ndarray | None = None,
    extra: dict[str, list[LocalFeatures | None]] | None = None,
    extra_methods: dict[str, LocalMethod] | None = None,
    mirrored: Side | None = None,
) -> MatchGraph:
    """``group.match_graph`` of the same arguments, with the keypoint scores of pairs in
    ``memory`` taken from it and those of the others added to it; ``keys``: each query's content key."""
    calibration = group.fit.calibration
    settings = dataclasses.replace(preset.fusion, use_lnbnn=False)  # as match_graph (see _between_queries)
    side = Side(vectors, features if method is not None else None, extra or {})
    pairs = _shortlisted(side, views, preset, settings, mirrored)
    counted = tuple(name for name in PAIR_COUNTS if name in settings.scores) if method is not None else ()
    keypoints = _keypoint_scores(pairs, side, mirrored, keys, method, extra_methods or {}, counted, settings, memory)
    # The scores in the order match_graph's shortlist lists them: the settings', then the extra methods'.
    raw = {
        name: pairs.raw["cosine"] if name == "cosine" else keypoints[name]
        for name in settings.scores
        if name == "cosine" or name in counted
    }
    raw |= {name: values for name, values in keypoints.items() if name.startswith("inliers:")}
    query_probability = calibration.fuse(_between_queries(raw), pairs.mirrored)
    known = np.array([identity is not None for identity in ranking.identities.ravel()]).reshape(
        ranking.identities.shape
    )
    link_scores = ranking.scores[known]
    if method is None:  # ranked by cosine: the same calibration as the query pairs
        link_scores = calibration.fuse({"cosine": link_scores})
    return MatchGraph.build(
        len(vectors),
        (pairs.queries, pairs.images, query_probability),
        (np.nonzero(known)[0], ranking.identities[known], link_scores),
    )


def _shortlisted(side: Side, views, preset: Preset, settings: FusionSettings, mirrored: Side | None) -> ScoredPairs:
    """The query pairs match_graph compares, with their cosines: the same search (an index of the
    queries, each query's shortlist of the others), under the same view rule, with no fallback."""
    rule = preset.view_rule()
    direct, flipped = rule.masks(views, views) if rule.active and views is not None else (None, None)
    return _scored_pairs(
        VectorIndex.build(side.vectors),
        None,
        None,
        {},
        Side(side.vectors),
        dataclasses.replace(settings, scores=("cosine",)),
        None,
        {},
        direct=direct,
        flipped=flipped,
        mirrored=Side(mirrored.vectors) if mirrored is not None else None,
        excluded=[{row} for row in range(len(side.vectors))],
    )


def _keypoint_scores(
    pairs: ScoredPairs, side: Side, mirrored, keys, method, extra_methods, counted, settings, memory: PairMemory
) -> dict[str, np.ndarray]:
    """Per pair, the keypoint counts in ``counted`` and the extra methods' inliers, from memory
    where the two photos were compared before."""
    names = [*counted, *(f"inliers:{name}" for name in extra_methods)]
    if not names:
        return {}
    flipped = pairs.mirrored if pairs.mirrored is not None else np.zeros(len(pairs.queries), bool)
    wanted = [(keys[q], keys[o], bool(f)) for q, o, f in zip(pairs.queries.tolist(), pairs.images.tolist(), flipped)]
    new = [row for row, pair in enumerate(wanted) if pair not in memory.scores]
    if new:
        found = _compare(pairs, np.asarray(new, np.int64), side, mirrored, method, extra_methods, counted, settings)
        for position, row in enumerate(new):
            memory.scores[wanted[row]] = {name: float(values[position]) for name, values in found.items()}
    return {name: np.array([memory.scores[pair][name] for pair in wanted], dtype=np.float64) for name in names}


def _compare(pairs: ScoredPairs, rows: np.ndarray, side: Side, mirrored, method, extra_methods, counted, settings):
    """Match the keypoints of some pairs, as the shortlist does: the query's (flipped where the
    pair was compared flipped) against the other's as taken."""
    queries, others = pairs.queries[rows], pairs.images[rows]
    flipped = pairs.mirrored[rows] if pairs.mirrored is not None else np.zeros(len(rows), bool)
    order = np.arange(len(rows))

    def first(found, found_flipped):
        return [found_flipped[q] if f else found[q] for q, f in zip(queries, flipped)]

    scores = {}
    if counted:
        left = first(side.features, mirrored.features if mirrored is not None else None)
        scores |= pair_counts(
            method,
            left,
            side.features,
            order,
            others,
            counted,
            settings.geometry,
            settings.match_confidence,
            settings.workers,
        )
    for name, extra_method in extra_methods.items():
        left = first(side.extra[name], mirrored.extra[name] if mirrored is not None else None)
        scores[f"inliers:{name}"] = inlier_counts(
            extra_method, left, side.extra[name], order, others, settings.geometry, settings.workers
        )
    return scores
