"""Nearest neighbours: cosine similarity of queries to database images, ranked as identities.

An identity's score is its best image's score (the reference's top-1 image rule, generalised to
top-k identities). Queries meet only database images of their own ``dataset`` unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cosine_similarity(query_vectors: np.ndarray, database_vectors: np.ndarray) -> np.ndarray:
    return normalize(query_vectors).astype(np.float32) @ normalize(database_vectors).astype(np.float32).T


@dataclass
class IdentityRanking:
    """For each query row: the k best identities, their scores and their best database image."""

    identities: np.ndarray    # (Q, k) object; None where fewer than k identities exist
    scores: np.ndarray        # (Q, k) float; NaN where no identity
    best_images: np.ndarray   # (Q, k) int, row in the database table; -1 where none


def rank_identities(similarity: np.ndarray, database_identities: np.ndarray, k: int) -> IdentityRanking:
    """Rank identities by their best image's similarity, for every row of ``similarity``."""
    labels, codes = np.unique(np.asarray(database_identities, dtype=object), return_inverse=True)
    queries, n_identities = similarity.shape[0], len(labels)
    identity_scores = np.full((queries, n_identities), -np.inf, dtype=np.float64)
    best_image = np.full((queries, n_identities), -1, dtype=np.int64)
    # Visit images in decreasing similarity so the first hit per identity is its best image.
    order = np.argsort(-similarity, axis=1, kind="stable")
    for query in range(queries):
        seen = np.zeros(n_identities, dtype=bool)
        for image in order[query]:
            code = codes[image]
            if not seen[code]:
                seen[code] = True
                identity_scores[query, code] = similarity[query, image]
                best_image[query, code] = image
                if seen.sum() >= min(k, n_identities):
                    break
    top = min(k, n_identities)
    top_codes = np.argsort(-identity_scores, axis=1, kind="stable")[:, :top]
    rows = np.arange(queries)[:, None]
    identities = np.full((queries, k), None, dtype=object)
    scores = np.full((queries, k), np.nan)
    images = np.full((queries, k), -1, dtype=np.int64)
    identities[:, :top] = labels[top_codes]
    scores[:, :top] = identity_scores[rows, top_codes]
    images[:, :top] = best_image[rows, top_codes]
    # Identities never scored (-inf: outside a shortlist, or excluded) are not candidates.
    unscored = ~np.isfinite(scores)
    identities[unscored], scores[unscored], images[unscored] = None, np.nan, -1
    return IdentityRanking(identities, scores, images)


def search_groups(query_table: pd.DataFrame, database_table: pd.DataFrame, same_dataset_only: bool = True):
    """Yield (query positions, database positions, group name) for each comparison group."""
    if not same_dataset_only:
        yield np.arange(len(query_table)), np.arange(len(database_table)), "all"
        return
    for name in dict.fromkeys(query_table["dataset"]):
        yield (np.flatnonzero(query_table["dataset"].to_numpy() == name),
               np.flatnonzero(database_table["dataset"].to_numpy() == name), name)
