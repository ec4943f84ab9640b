"""Candidate pairs for a batch of queries, scored raw: the same stages for real queries and for
the database photos a calibration asks as pseudo-queries.

Per query, the top-B database images by global cosine (from the index) and the top-B by LNBNN
keypoint votes (which finds individuals a weak global descriptor ranks low); each pair then gets
its cosine, its LNBNN score and its counts of keypoint matches (geometrically verified, or
confident; fusion.py). Work and memory grow with the batch and the shortlist, and with the
database only inside the index searches (FAISS), never as a database-by-database matrix.

``allowed`` restricts each query to some database photos (compatible viewpoints, views.py): the
searches then look only among those, so a query still gets a full shortlist of them. ``extra``
adds the inlier count of more local feature methods (``inliers:NAME``), each its own score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wildreid.gallery.index import VectorIndex
from wildreid.local.base import LocalFeatures, LocalMethod
from wildreid.local.lnbnn import KeypointIndex
from wildreid.local.pairs import PAIR_COUNTS, FusionSettings, inlier_counts, pair_counts

LNBNN_CHUNK = 32  # queries whose LNBNN scores over the whole database are held at once


@dataclass
class ScoredPairs:
    """(query, database image) pairs with their raw scores; rows sorted by (query, image)."""

    queries: np.ndarray  # (M,) position of the query in its batch
    images: np.ndarray  # (M,) database position
    raw: dict[str, np.ndarray]  # score type -> (M,) values
    mirrored: np.ndarray | None = None  # (M,) bool: compared after flipping the query; None: none was


def nearest(
    index: VectorIndex,
    vectors: np.ndarray,
    size: int,
    excluded: list[set[int]] | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query the ``size`` nearest database positions by cosine, skipping ``excluded[q]``:
    (queries, images) arrays. Searches deep enough that the exclusions cannot shorten a list.
    ``allowed``: a mask over the database, the only positions searched."""
    spare = max((len(e) for e in excluded), default=0) if excluded is not None else 0
    scores, images = index.search(vectors, size + spare, allowed)
    keep = images >= 0
    if excluded is not None:
        keep &= np.array(
            [[image not in excluded[q] for image in row] for q, row in enumerate(images)], dtype=bool
        ).reshape(images.shape)
    rank = np.cumsum(keep, axis=1) - 1
    keep &= rank < size
    queries = np.repeat(np.arange(len(images)), images.shape[1]).reshape(images.shape)
    return queries[keep], images[keep]


def shortlist_pairs(
    index: VectorIndex,
    vectors: np.ndarray,
    features: list[LocalFeatures | None] | None,
    keypoints: KeypointIndex | None,
    database_features: list[LocalFeatures | None] | None,
    method: LocalMethod | None,
    settings: FusionSettings,
    excluded: list[set[int]] | None = None,
    *,
    allowed: list[np.ndarray | None] | None = None,
    extra: dict[str, tuple[LocalMethod, list, list]] | None = None,
) -> ScoredPairs:
    """Shortlist every query (cosine top-B, and LNBNN top-B when there is a keypoint index) and
    score the pairs. ``excluded[q]``: database positions query q may not be paired with (itself
    and its near-duplicates, when the queries are database photos). ``allowed[q]``: a mask of the
    database positions query q may be paired with (None: all); queries sharing one mask array are
    searched together. ``extra``: name -> (method, query features, database features), each
    adding an ``inliers:NAME`` score."""
    if allowed is None or all(mask is None for mask in allowed):
        return _shortlist(
            index, vectors, features, keypoints, database_features, method, settings, excluded, None, extra
        )
    parts, members = [], []
    for mask, rows in _by_mask(allowed):
        part = _shortlist(
            index,
            vectors[rows],
            [features[r] for r in rows] if features is not None else None,
            keypoints,
            database_features,
            method,
            settings,
            [excluded[r] for r in rows] if excluded is not None else None,
            mask,
            {name: (m, [q[r] for r in rows], d) for name, (m, q, d) in extra.items()} if extra else None,
        )
        parts.append(part)
        members.append(rows[part.queries])
    queries = np.concatenate(members).astype(np.int64)
    images = np.concatenate([p.images for p in parts]).astype(np.int64)
    order = np.lexsort((images, queries))
    raw = {name: np.concatenate([p.raw[name] for p in parts])[order] for name in parts[0].raw}
    return ScoredPairs(queries[order], images[order], raw)


def _by_mask(allowed: list[np.ndarray | None]):
    """(mask, query rows) for each distinct mask array (by identity: queries of one view share it)."""
    groups: dict[int, list[int]] = {}
    masks: dict[int, np.ndarray | None] = {}
    for row, mask in enumerate(allowed):
        groups.setdefault(id(mask), []).append(row)
        masks[id(mask)] = mask
    return [(masks[key], np.asarray(rows, dtype=np.int64)) for key, rows in groups.items()]


def _shortlist(index, vectors, features, keypoints, database_features, method, settings, excluded, allowed, extra):
    queries, images = nearest(index, vectors, settings.shortlist, excluded, allowed)
    lnbnn_values = None
    if keypoints is not None and settings.use_lnbnn:
        queries, images, lnbnn_values = _add_lnbnn_shortlist(
            queries, images, features, keypoints, settings, excluded, allowed
        )
    else:
        order = np.lexsort((images, queries))
        queries, images = queries[order], images[order]
    table = {"cosine": index.pair_cosine(vectors, queries, images)}
    if lnbnn_values is not None:
        table["lnbnn"] = lnbnn_values
    counted = tuple(name for name in PAIR_COUNTS if name in settings.scores)
    if method is not None and counted:
        # One matching per pair, whichever counts the settings fuse.
        table |= pair_counts(
            method,
            features,
            database_features,
            queries,
            images,
            counted,
            settings.geometry,
            settings.match_confidence,
            settings.workers,
        )
    scores = {name: table[name] for name in settings.scores if name in table}
    for name, (extra_method, query_features, extra_database) in (extra or {}).items():
        scores[f"inliers:{name}"] = inlier_counts(
            extra_method, query_features, extra_database, queries, images, settings.geometry, settings.workers
        )
    return ScoredPairs(queries, images, scores)


def _add_lnbnn_shortlist(
    queries, images, features, keypoints: KeypointIndex, settings: FusionSettings, excluded, allowed=None
):
    """The cosine pairs united with each query's LNBNN top-B, and every pair's LNBNN score;
    queries are scored in chunks so that only a chunk x database block is ever held."""
    all_queries, all_images, all_values = [], [], []
    for start in range(0, len(features), LNBNN_CHUNK):
        stop = min(start + LNBNN_CHUNK, len(features))
        chunk_excluded = excluded[start:stop] if excluded is not None else None
        scores = keypoints.lnbnn(features[start:stop], settings.lnbnn_k, excluded=chunk_excluded, allowed=allowed)
        if allowed is not None:
            scores[:, ~np.asarray(allowed, bool)] = -np.inf  # not candidates, even with zero votes
        if chunk_excluded is not None:
            for row, banned in enumerate(chunk_excluded):
                scores[row, list(banned)] = -np.inf
        # Stable, so that equal scores (often zero votes) keep the lower database position.
        top = np.argsort(-scores, axis=1, kind="stable")[:, : settings.shortlist]
        keep = np.take_along_axis(scores, top, axis=1) > -np.inf
        lnbnn_queries = np.repeat(np.arange(start, stop), top.shape[1])[keep.ravel()]
        in_chunk = (queries >= start) & (queries < stop)
        pairs = np.unique(
            np.stack(
                [
                    np.concatenate([queries[in_chunk], lnbnn_queries]),
                    np.concatenate([images[in_chunk], top.ravel()[keep.ravel()]]),
                ],
                axis=1,
            ),
            axis=0,
        )
        all_queries.append(pairs[:, 0])
        all_images.append(pairs[:, 1])
        all_values.append(scores[pairs[:, 0] - start, pairs[:, 1]])
    if not all_queries:
        return queries, images, np.zeros(0)
    return np.concatenate(all_queries), np.concatenate(all_images), np.concatenate(all_values)
