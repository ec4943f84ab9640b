"""Identities ranked from a query's nearest database images.

An identity's score is its best image's score (the reference's top-1 image rule, generalised to
top-k identities), or with ``top_m`` > 1 the mean of its m best images' scores: an identity that
several photos support outranks one that a single, perhaps lucky, photo does. An identity with
fewer than m listed photos is padded with the query's lowest listed score (an unlisted photo
scored no better than that). The neighbours come from the gallery's index (gallery/index.py) or
shortlist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class IdentityRanking:
    """For each query row: the k best identities, their scores and their best database image."""

    identities: np.ndarray  # (Q, k) object; None where fewer than k identities exist
    scores: np.ndarray  # (Q, k) float; NaN where no identity
    best_images: np.ndarray  # (Q, k) int, row in the database table; -1 where none


def rank_identities(similarity: np.ndarray, database_identities: np.ndarray, k: int) -> IdentityRanking:
    """Rank identities by their best image's similarity, for every row of a dense ``similarity``."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    return rank_neighbours(order, np.take_along_axis(similarity, order, axis=1), database_identities, k)


def rank_neighbours(
    columns: np.ndarray, scores: np.ndarray, database_identities: np.ndarray, k: int, top_m: int = 1
) -> IdentityRanking:
    """Rank identities from each query's nearest database images (``columns``, best first, -1 or
    -inf where none): an identity's score is its first (best) image's, or the padded mean of its
    ``top_m`` best. Works on the top-N neighbours an index returns, so nothing per query grows
    with the database. Identities with equal scores keep the order of their labels, as a stable
    sort over all identities would."""
    identities = np.asarray(database_identities, dtype=object)
    labels, codes = np.unique(identities, return_inverse=True)
    queries, depth = columns.shape
    result = IdentityRanking(
        np.full((queries, k), None, dtype=object),
        np.full((queries, k), np.nan),
        np.full((queries, k), -1, dtype=np.int64),
    )
    valid = (columns >= 0) & np.isfinite(scores)
    if not valid.any() or k <= 0:
        return result
    row_of, position = np.nonzero(valid)  # row-major: each row's neighbours in order
    code = codes[columns[row_of, position]]
    pair_key = row_of * len(labels) + code
    # The first occurrence of each (query, identity) pair is that identity's best image.
    _, first, group = np.unique(pair_key, return_index=True, return_inverse=True)
    if top_m > 1:
        aggregated = _padded_mean(scores, row_of, position, group, len(first), valid, top_m)
    order_first = np.argsort(first, kind="stable")
    first = first[order_first]
    row_of, position, code = row_of[first], position[first], code[first]
    score = aggregated[order_first] if top_m > 1 else scores[row_of, position]
    # Per query: best score first, then label order; then keep the first k.
    order = np.lexsort((code, -score, row_of))
    row_of, position, code, score = row_of[order], position[order], code[order], score[order]
    rank = np.arange(len(row_of)) - np.searchsorted(row_of, row_of)
    keep = rank < k
    row_of, rank = row_of[keep], rank[keep]
    result.identities[row_of, rank] = labels[code[keep]]
    result.scores[row_of, rank] = score[keep]
    result.best_images[row_of, rank] = columns[row_of, position[keep]]
    return result


def _padded_mean(scores, row_of, position, group, groups: int, valid, m: int) -> np.ndarray:
    """Per (query, identity) group: the mean of its m best scores, missing ones replaced by the
    query's lowest listed score."""
    value = scores[row_of, position]
    order = np.lexsort((-value, group))
    rank = np.arange(len(order)) - np.searchsorted(group[order], group[order])
    top = order[rank < m]
    total = np.bincount(group[top], weights=value[top], minlength=groups)
    count = np.bincount(group[top], minlength=groups)
    floor = np.where(valid, scores, np.inf).min(axis=1)
    group_row = np.zeros(groups, dtype=np.int64)
    group_row[group] = row_of
    return (total + (m - count) * floor[group_row]) / m
