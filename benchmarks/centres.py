"""Compare a photo with each individual's centre instead of its nearest photo? Measured on the
database (identities held out) and on the real queries, side by side, as hubness.py does.

    python benchmarks/centres.py --datasets NyalaData,LionData,Holstein2025 --cache-dir C

After the default whitening (describe/adapt_linear.py), which makes the spread of one
individual's photos about the same in every direction, an individual's centre (the unit mean of
its photos' vectors) is the natural summary of it. Printed per dataset and per way of scoring an
individual (``photo``: its best photo, as the gallery ranks with m = 1; ``centre``: its centre):
the top-1 of known queries and the AUC of the top score for known against new queries,

- ``database``: the rounds of held_out.py (5 identity folds, new and known queries, the whitening
  fitted on the other three folds); a query never meets itself or its own clip, neither as a
  photo nor inside a centre. Means over the rounds.
- ``queries``: the real queries against the whole database, the whitening fitted on it.

The ``queries`` rows read the query labels: they say whether what the database shows carries
over, and choose nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from held_out import best_of_each_individual, held_out_round  # noqa: E402
from real_data import labelled_vectors  # noqa: E402

from wildreid.describe.adapters import make_adapter  # noqa: E402
from wildreid.describe.backbones import load_backbone  # noqa: E402
from wildreid.gallery.adaptation import FOLDS  # noqa: E402

WAYS = ("photo", "centre")


def centre_scores(queries: np.ndarray, gallery: np.ndarray, member: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(queries, individuals) cosine of each query to each individual's centre, made only of the
    gallery photos ``allowed`` for that query (``member``: each gallery photo's individual)."""
    individuals = member.max() + 1
    sums = np.zeros((individuals, gallery.shape[1]))
    np.add.at(sums, member, gallery)
    scores = np.empty((len(queries), individuals))
    for row, query in enumerate(queries):
        own = sums.copy()
        left_out = np.flatnonzero(~allowed[row])
        np.subtract.at(own, member[left_out], gallery[left_out])
        norms = np.linalg.norm(own, axis=1)
        empty = norms < 1e-9
        scores[row] = np.where(empty, -np.inf, own @ query / np.where(empty, 1.0, norms))
    return scores


def figures(queries, gallery, gallery_ids, query_ids, known, allowed) -> list[tuple[float, float]]:
    """(top-1 of known queries, AUC of the top score) for each way of scoring an individual."""
    similarity = np.where(allowed, queries @ gallery.T, -np.inf)
    names, by_photo = best_of_each_individual(similarity, gallery_ids)
    member = np.searchsorted(names, gallery_ids)
    found = []
    for best in (by_photo, centre_scores(queries, gallery, member, allowed)):
        right = names[best.argmax(axis=1)] == query_ids
        found.append((float(right[known].mean()), float(roc_auc_score(known, best.max(axis=1)))))
    return found


def on_database(vectors, ids, clips, seed) -> list[tuple[float, float]]:
    per_fold = []
    for new in range(FOLDS):
        held = held_out_round(ids, new, seed)
        training, gallery, queries = held.training, held.gallery, held.queries
        described = make_adapter("whiten").fit(vectors[training], ids[training], seed=seed).transform(vectors)
        allowed = queries[:, None] != gallery[None, :]
        if clips is not None:
            allowed &= clips[queries][:, None] != clips[gallery][None, :]
        per_fold.append(
            figures(described[queries], described[gallery], ids[gallery], ids[queries], held.known, allowed)
        )
    return [tuple(np.mean(column, axis=0)) for column in zip(*per_fold)]


def on_queries(database_vectors, ids, query_vectors, query_ids, seed) -> list[tuple[float, float]]:
    adapter = make_adapter("whiten").fit(database_vectors, ids, seed=seed)
    database, queries = adapter.transform(database_vectors), adapter.transform(query_vectors)
    allowed = np.ones((len(queries), len(database)), dtype=bool)
    return figures(queries, database, ids, query_ids, np.isin(query_ids, ids), allowed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="NyalaData,LionData,Holstein2025")
    parser.add_argument("--backbone", default="efficientnet-lite0-multiscale")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backbone = load_backbone(args.backbone)
    print(f"{'dataset':14} {'asked':9} {'way':7} {'top-1':>6} {'AUC':>6}")
    for dataset_name in args.datasets.split(","):
        found = labelled_vectors(dataset_name, backbone, args.cache_dir)
        rows = {
            "database": on_database(found.database, found.identities, found.clips, args.seed),
            "queries": on_queries(found.database, found.identities, found.queries, found.query_identities, args.seed),
        }
        for asked, per_way in rows.items():
            for way, (top1, auc) in zip(WAYS, per_way):
                print(f"{dataset_name:14} {asked:9} {way:7} {top1:6.3f} {auc:6.3f}", flush=True)


if __name__ == "__main__":
    main()
