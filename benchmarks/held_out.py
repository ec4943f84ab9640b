"""The database-only protocol of the measurements that need no gallery (rank_features.py,
hubness.py): identities dealt into 5 folds (gallery/adaptation.identity_folds); in round ``new``,
fold ``new`` plays the new individuals and the next fold the known ones. The queries are every
photo of the new fold and every photo of the known fold whose individual has another photo
there; they are asked against every photo outside the new fold (never themselves). An adapter
judged this way is fitted on the other three folds (``training``), so it saw neither the new nor
the known queries' individuals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wildreid.gallery.adaptation import FOLDS, identity_folds


@dataclass
class HeldOutRound:
    training: np.ndarray  # (D,) bool: the photos an adapter may learn from
    gallery: np.ndarray  # positions of the photos asked against
    queries: np.ndarray  # positions of the photos asked
    known: np.ndarray  # (len(queries),) bool: the query's individual is in the gallery


def held_out_round(identities: np.ndarray, new: int, seed: int) -> HeldOutRound:
    folds = identity_folds(identities, FOLDS, seed)
    known_fold = (new + 1) % FOLDS
    in_known = folds == known_fold
    mates = np.array([(identities[in_known] == name).sum() > 1 for name in identities])
    queries = np.flatnonzero((folds == new) | (in_known & mates))
    return HeldOutRound((folds != new) & ~in_known, np.flatnonzero(folds != new), queries, folds[queries] == known_fold)


def best_of_each_individual(similarity: np.ndarray, gallery_identities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the individuals' names, each query's best score for each of them) from a (queries,
    gallery photos) similarity."""
    names, member = np.unique(gallery_identities, return_inverse=True)
    best = np.full((len(similarity), len(names)), -np.inf)
    for individual in range(len(names)):
        best[:, individual] = similarity[:, member == individual].max(axis=1)
    return names, best
