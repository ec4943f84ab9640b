"""The match graph of a set of queries (``DatasetPart.match_graph``), with the comparisons
between queries kept from one grouping of them to the next.

The review service groups a dataset's waiting photos again after every upload: the same photos,
and one more. ``match_graph`` would compare every query with every other again (an index of the
queries searched by each) and match the keypoints of every shortlisted pair again, so each upload
would cost more the longer the review backlog. Here each query's shortlist (its nearest others by
cosine, within compatible views; mirror views through its flipped photo) is kept, and a new
grouping compares a kept query only with the photos new since, unless one of its listed photos
left (then it is compared with all again). Keypoint scores of a pair come from memory once
matched. Pairs are chosen and scored with the cosines ``match_graph`` scores them with (the same
arithmetic, to the bit), so the graph is ``match_graph``'s; only where two cosines tie to the
last digits could the search's own rounding have listed the other photo.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from wildreid.decide.graph import MatchGraph
from wildreid.decide.ranking import IdentityRanking
from wildreid.gallery.index import normalize
from wildreid.gallery.part import DatasetPart, Side, compared_as, graph_of_queries, query_pair_cosines
from wildreid.gallery.shortlist import ScoredPairs
from wildreid.local.base import LocalFeatures, LocalMethod
from wildreid.local.pairs import PAIR_COUNTS, inlier_counts, pair_counts
from wildreid.presets import Preset

SPARE = 8  # candidates beyond the shortlist taken from the matrix product, for the exact cosines to sort
BLOCK = 1024  # queries compared with all others at once (a block x queries matrix)


@dataclass
class Shortlists:
    """Per query its nearest others, best first: positions in the queries (-1 pads) and cosines."""

    asked: np.ndarray  # (Q,) bool: the queries that have a shortlist (all, or those with a mirror view)
    columns: np.ndarray  # (Q, B) int64
    cosines: np.ndarray  # (Q, B) float64, -inf pads


@dataclass
class QueryPairs:
    """One dataset part's queries as last grouped: their shortlists (direct, and flipped) and the
    keypoint scores of shortlisted pairs: (key, other's key, flipped) -> {score name: value}."""

    keys: list = field(default_factory=list)
    shortlists: dict[bool, Shortlists] = field(default_factory=dict)
    scores: dict[tuple, dict[str, float]] = field(default_factory=dict)
    adapter: object = None  # the part's adapter the shortlists' cosines were computed through


class PairMemory:
    """Comparisons between the queries of each dataset part, kept between groupings of them. The
    caller names each query by a key that stays with the photo (one key, one photo's content)."""

    def __init__(self):
        self.parts: dict[str, QueryPairs] = {}

    def part(self, name: str) -> QueryPairs:
        return self.parts.setdefault(name, QueryPairs())


def remembered_graph(
    group: DatasetPart,
    vectors: np.ndarray,
    features: list[LocalFeatures | None] | None,
    ranking: IdentityRanking,
    preset: Preset,
    method: LocalMethod | None,
    keys: list,
    memory: QueryPairs,
    *,
    views: np.ndarray | None = None,
    extra: dict[str, list[LocalFeatures | None]] | None = None,
    extra_methods: dict[str, LocalMethod] | None = None,
    mirrored: Side | None = None,
) -> MatchGraph:
    """``group.match_graph`` of the same arguments, with ``memory`` (what the last grouping of
    this part's queries compared) used and brought up to date; ``keys``: each query's key."""
    # as match_graph compares them: pairs listed by the grouping's vectors, scored by the score's
    side = group.adapt_side(Side(vectors, features if method is not None else None, extra or {}))
    mirrored = group.adapt_side(mirrored)
    listing, scoring = group.adapts("grouping", preset), group.adapts("score", preset)
    listed, listed_mirrored = compared_as(side, mirrored, listing)
    if memory.adapter is not group.adapter:  # cosines of another adapter (a refit) are not these
        memory.keys, memory.shortlists, memory.adapter = [], {}, group.adapter
    calibration = group.fit.calibration
    settings = dataclasses.replace(preset.fusion, use_lnbnn=False)  # as match_graph (see fusion_choice.between_queries)
    pairs = _shortlisted(listed, views, preset, settings.shortlist, listed_mirrored, keys, memory)
    counted = tuple(name for name in PAIR_COUNTS if name in settings.scores) if method is not None else ()
    keypoints = _keypoint_scores(pairs, side, mirrored, keys, method, extra_methods or {}, counted, settings, memory)
    # The scores in the order match_graph's shortlist lists them: the settings', then the extra methods'.
    raw = {
        name: pairs.raw["cosine"] if name == "cosine" else keypoints[name]
        for name in settings.scores
        if name == "cosine" or name in counted
    }
    raw |= {name: values for name, values in keypoints.items() if name.startswith("inliers:")}
    raw |= query_pair_cosines(pairs, settings, side, mirrored, listing, scoring)  # in match_graph's order
    return graph_of_queries(len(vectors), pairs, raw, ranking, calibration, method)


def _shortlisted(side: Side, views, preset: Preset, size: int, mirrored: Side | None, keys, memory) -> ScoredPairs:
    """The query pairs match_graph compares, with their cosines, sorted by (query, other) as its
    shortlist sorts them: each query's ``size`` nearest others, under the same view rule (no
    fallback), and, for a query with a mirror view, its flipped photo's nearest others."""
    rule = preset.view_rule()
    direct, flipped = rule.masks(views, views) if rule.active and views is not None else (None, None)
    database = normalize(side.vectors)  # as the index of the queries holds them
    sides = [(False, database, direct or [None] * len(keys))]
    if mirrored is not None and flipped is not None and any(mask is not None for mask in flipped):
        sides.append((True, normalize(mirrored.vectors), flipped))
    found = {
        turned: _nearest_others(keys, vectors, database, masks, size, turned, memory)
        for turned, vectors, masks in sides
    }
    memory.keys, memory.shortlists = list(keys), found
    parts = []
    for turned, lists in found.items():
        listed = lists.columns >= 0
        rows = np.nonzero(listed)[0]
        parts.append((rows, lists.columns[listed], lists.cosines[listed], np.full(len(rows), turned)))
    queries, images, cosines, turned = (np.concatenate(values) for values in zip(*parts))
    order = np.lexsort((images, queries))  # stable: a pair found both ways lists the direct one first
    return ScoredPairs(
        queries[order], images[order], {"cosine": cosines[order]}, turned[order] if len(sides) > 1 else None
    )


def _nearest_others(keys, vectors, database, masks, size: int, turned: bool, memory: QueryPairs) -> Shortlists:
    """Each asked query's ``size`` nearest others (``vectors[q]`` against ``database``, within
    ``masks[q]``, never itself), best first, ties to the lower position. A query shortlisted
    last time keeps its list and meets only the queries new since, unless a photo it listed
    left; the others meet every query."""
    count = len(keys)
    asked = np.array([not turned or mask is not None for mask in masks], dtype=bool)
    renumber = _renumbering(memory.keys, keys)
    kept = _intact(memory.shortlists.get(turned), renumber, asked)
    keeping, again = np.flatnonzero(kept >= 0), np.flatnonzero(asked & (kept < 0))
    new = np.setdiff1d(np.arange(count), renumber[renumber >= 0])
    rows, columns, cosines = [], [], []
    if len(keeping):
        before = memory.shortlists[turned]
        listed = before.columns[kept[keeping]]
        present = listed >= 0
        rows.append(np.broadcast_to(keeping[:, None], listed.shape)[present])
        columns.append(renumber[listed[present]])
        cosines.append(before.cosines[kept[keeping]][present])
    allowed = _allowed(masks, count)
    kept_meet = np.repeat(keeping, len(new)), np.tile(new, len(keeping))  # a kept list meets the new photos
    meet = kept_meet[0] != kept_meet[1]
    if allowed is not None:
        meet &= allowed[kept_meet]
    kept_meet = kept_meet[0][meet], kept_meet[1][meet]
    for first, second in (kept_meet, _candidates(vectors, database, again, allowed, size)):
        rows.append(first)
        columns.append(second)
        # pair_cosine's arithmetic: one float32 dot product per pair, then float64.
        cosines.append(np.einsum("ij,ij->i", vectors[first], database[second]).astype(np.float64))
    return _best(asked, np.concatenate(rows), np.concatenate(columns), np.concatenate(cosines), size)


def _candidates(vectors, database, rows: np.ndarray, allowed, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``rows``, its nearest others by a matrix product (as the index search scores
    them), a few more than ``size`` so that the exact cosines can still reorder the last ones;
    never itself, only those ``allowed``. As (rows, columns)."""
    width = min(size + SPARE, len(database))
    firsts, seconds = [], []
    for start in range(0, len(rows), BLOCK):
        block = rows[start : start + BLOCK]
        scores = vectors[block] @ database.T
        scores[np.arange(len(block)), block] = -np.inf
        if allowed is not None:
            scores[~allowed[block]] = -np.inf
        if width < len(database):
            nearest = np.argpartition(-scores, width - 1, axis=1)[:, :width]
        else:
            nearest = np.broadcast_to(np.arange(len(database)), scores.shape)
        found = np.isfinite(np.take_along_axis(scores, nearest, axis=1))
        firsts.append(np.broadcast_to(block[:, None], nearest.shape)[found])
        seconds.append(nearest[found])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def _renumbering(before: list, keys: list) -> np.ndarray:
    """Each query of last time's row now (-1: gone)."""
    row = {key: number for number, key in enumerate(keys)}
    return np.array([row.get(key, -1) for key in before], dtype=np.int64)


def _intact(before: Shortlists | None, renumber: np.ndarray, asked: np.ndarray) -> np.ndarray:
    """Per query now, its row in last time's shortlists when that list still holds (it was asked
    then and is now, and none of the photos it listed left); else -1."""
    kept = np.full(len(asked), -1, dtype=np.int64)
    if before is None:
        return kept
    old = np.flatnonzero(renumber >= 0)
    listed = before.columns[old]
    gone = ((listed >= 0) & (renumber[np.maximum(listed, 0)] < 0)).any(axis=1)
    holds = before.asked[old] & asked[renumber[old]] & ~gone
    kept[renumber[old[holds]]] = old[holds]
    return kept


def _allowed(masks: list, count: int) -> np.ndarray | None:
    """Which query may meet which, as a matrix (None: any may meet any)."""
    if all(mask is None for mask in masks):
        return None
    return np.stack([np.ones(count, dtype=bool) if mask is None else mask for mask in masks])


def _best(asked: np.ndarray, rows, columns, cosines, size: int) -> Shortlists:
    """Each row's ``size`` best columns: highest cosine first, then the lower column."""
    order = np.lexsort((columns, -cosines, rows))
    rows, columns, cosines = rows[order], columns[order], cosines[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < size
    lists = Shortlists(asked, np.full((len(asked), size), -1, dtype=np.int64), np.full((len(asked), size), -np.inf))
    lists.columns[rows[keep], rank[keep]] = columns[keep]
    lists.cosines[rows[keep], rank[keep]] = cosines[keep]
    return lists


def _keypoint_scores(
    pairs: ScoredPairs, side: Side, mirrored, keys, method, extra_methods, counted, settings, memory: QueryPairs
) -> dict[str, np.ndarray]:
    """Per pair, the keypoint counts in ``counted`` and the extra methods' inliers, from memory
    where the two photos were compared before; only the current queries' pairs are kept."""
    names = [*counted, *(f"inliers:{name}" for name in extra_methods)]
    if not names:
        memory.scores = {}
        return {}
    flipped = pairs.mirrored if pairs.mirrored is not None else np.zeros(len(pairs.queries), bool)
    wanted = [(keys[q], keys[o], bool(f)) for q, o, f in zip(pairs.queries.tolist(), pairs.images.tolist(), flipped)]
    new = [row for row, pair in enumerate(wanted) if pair not in memory.scores]
    found = {}
    if new:
        found = _compare(pairs, np.asarray(new, np.int64), side, mirrored, method, extra_methods, counted, settings)
    known = {pair: memory.scores[pair] for pair in wanted if pair in memory.scores}
    known |= {wanted[row]: {name: float(values[at]) for name, values in found.items()} for at, row in enumerate(new)}
    memory.scores = known
    return {name: np.array([known[pair][name] for pair in wanted], dtype=np.float64) for name in names}


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
