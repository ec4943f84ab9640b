"""The database-only protocol of the measurements that need no gallery (rank_features.py,
hubness.py, centres.py): identities dealt into 5 folds (gallery/adaptation.identity_folds); in round ``new``,
fold ``new`` plays the new individuals and the next fold the known ones. The queries are every
photo of the new fold and every photo of the known fold whose individual has another photo
there; they are asked against every photo outside the new fold (never themselves). An adapter
judged this way is fitted on the other three folds (``training``), so it saw neither the new nor
the known queries' individuals."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wildreid.describe.adapters import make_adapter
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


@dataclass
class Asked:
    """One comparison after the default whitening: query vectors against gallery vectors, with
    their individuals and the pairs that may be compared (never a photo with itself or its clip)."""

    queries: np.ndarray
    gallery: np.ndarray
    query_ids: np.ndarray
    gallery_ids: np.ndarray
    known: np.ndarray  # (queries,) bool: the query's individual is in the gallery
    allowed: np.ndarray  # (queries, gallery) bool

    def similarity(self) -> np.ndarray:
        return np.where(self.allowed, self.queries @ self.gallery.T, -np.inf)


def whitened_rounds(vectors: np.ndarray, ids: np.ndarray, clips: np.ndarray | None, seed: int) -> list[Asked]:
    """The database's rounds, each whitened by the photos of its other three folds."""
    rounds = []
    for new in range(FOLDS):
        held = held_out_round(ids, new, seed)
        training, gallery, queries = held.training, held.gallery, held.queries
        described = make_adapter("whiten").fit(vectors[training], ids[training], seed=seed).transform(vectors)
        allowed = queries[:, None] != gallery[None, :]
        if clips is not None:
            allowed &= clips[queries][:, None] != clips[gallery][None, :]
        rounds.append(Asked(described[queries], described[gallery], ids[queries], ids[gallery], held.known, allowed))
    return rounds


def whitened_queries(found, seed: int) -> Asked:
    """The real queries against the whole database (real_data.LabelledVectors ``found``), the
    whitening fitted on the database."""
    adapter = make_adapter("whiten").fit(found.database, found.identities, seed=seed)
    database, queries = adapter.transform(found.database), adapter.transform(found.queries)
    known = np.isin(found.query_identities, found.identities)
    allowed = np.ones((len(queries), len(database)), dtype=bool)
    return Asked(queries, database, found.query_identities, found.identities, known, allowed)


def database_and_queries(description: str, variant: str, variants: Sequence, figures: Callable) -> None:
    """The command line of the measurements that print, per dataset, the database's rounds and
    the real queries side by side: ``figures(asked)`` gives (top-1, AUC) per variant."""
    from real_data import labelled_vectors

    from wildreid.describe.backbones import load_backbone

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="NyalaData,LionData,Holstein2025")
    parser.add_argument("--backbone", default="efficientnet-lite0-multiscale")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backbone = load_backbone(args.backbone)
    print(f"{'dataset':14} {'asked':9} {variant:>7} {'top-1':>6} {'AUC':>6}")
    for dataset_name in args.datasets.split(","):
        found = labelled_vectors(dataset_name, backbone, args.cache_dir)
        per_round = [
            figures(asked) for asked in whitened_rounds(found.database, found.identities, found.clips, args.seed)
        ]
        rows = {
            "database": [tuple(np.mean(column, axis=0)) for column in zip(*per_round)],
            "queries": figures(whitened_queries(found, args.seed)),
        }
        for asked, per_variant in rows.items():
            for name, (top1, auc) in zip(variants, per_variant):
                print(f"{dataset_name:14} {asked:9} {name!s:>7} {top1:6.3f} {auc:6.3f}", flush=True)
