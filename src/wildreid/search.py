"""Identities ranked from a query's nearest database images.

An identity's score is its best image's score (the reference's top-1 image rule, generalised to
top-k identities). The neighbours come from the gallery's index (gallery/index.py) or shortlist.
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
    columns: np.ndarray, scores: np.ndarray, database_identities: np.ndarray, k: int
) -> IdentityRanking:
    """Rank identities from each query's nearest database images (``columns``, best first, -1 or
    -inf where none): an identity's score is its first (best) image's. Works on the top-N
    neighbours an index returns, so nothing per query grows with the database. Identities with
    equal scores keep the order of their labels, as a stable sort over all identities would."""
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
    # The first occurrence of each (query, identity) pair is that identity's best image.
    _, first = np.unique(row_of * len(labels) + code, return_index=True)
    first = np.sort(first)
    row_of, position, code = row_of[first], position[first], code[first]
    score = scores[row_of, position]
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
