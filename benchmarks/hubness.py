"""Does correcting the cosine for hubness help? Measured on the database (identities held out) and
on the real queries, side by side, so that a method the database validation would keep can be seen
not to transfer.

    python benchmarks/hubness.py --datasets NyalaData,LionData,Holstein2025 --cache-dir C

A "hub" is a database photo that sits near very many others (a busy background, a common pose):
in high dimensions it becomes the nearest neighbour of queries it does not match. The usual
correction (CSLS, Conneau et al. 2018; "localized centering", Hara et al. 2015) subtracts each
database photo's crowd, r(d) = the mean cosine of d to its k nearest other database photos:

    score(q, d) = cos(q, d) - a * r(d)        k = 10 (CSLS's), a in {0, 0.5, 1}

No label enters r(d). Printed per dataset and ``a``: the top-1 of known queries (best individual
by its best photo) and the AUC of the top score for known against new queries, after the default
whitening (describe/adapt_linear.py),

- ``database``: the rounds of held_out.py (5 identity folds, new and known queries, the
  whitening fitted on the other three folds), a query never meeting its own clip either (where
  the dataset has a ``clip`` column, as the gallery's own simulation excludes them); r(d) over
  the photos searched. Means over the rounds.
- ``queries``: the real queries against the whole database, the whitening fitted on it.
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

CROWD = 10
WEIGHTS = (0.0, 0.5, 1.0)


def crowd(database: np.ndarray) -> np.ndarray:
    """Each database photo's mean cosine to its CROWD nearest other database photos."""
    similarity = database @ database.T
    np.fill_diagonal(similarity, -np.inf)
    return -np.sort(-similarity, axis=1)[:, :CROWD].mean(axis=1)


def figures(similarity, crowds, database_ids, query_ids, known) -> list[tuple[float, float]]:
    """(top-1 of known queries, AUC of the top score) for each weight."""
    found = []
    for weight in WEIGHTS:
        names, best = best_of_each_individual(similarity - weight * crowds[None, :], database_ids)
        right = names[best.argmax(axis=1)] == query_ids
        found.append((float(right[known].mean()), float(roc_auc_score(known, best.max(axis=1)))))
    return found


def on_database(vectors, ids, clips, seed) -> list[tuple[float, float]]:
    per_fold = []
    for new in range(FOLDS):
        held = held_out_round(ids, new, seed)
        training, gallery, queries = held.training, held.gallery, held.queries
        described = make_adapter("whiten").fit(vectors[training], ids[training], seed=seed).transform(vectors)
        similarity = described[queries] @ described[gallery].T
        similarity[queries[:, None] == gallery[None, :]] = -np.inf
        if clips is not None:
            similarity[clips[queries][:, None] == clips[gallery][None, :]] = -np.inf
        crowds = crowd(described[gallery])
        per_fold.append(figures(similarity, crowds, ids[gallery], ids[queries], held.known))
    return [tuple(np.mean(column, axis=0)) for column in zip(*per_fold)]


def on_queries(database_vectors, ids, query_vectors, query_ids, seed) -> list[tuple[float, float]]:
    adapter = make_adapter("whiten").fit(database_vectors, ids, seed=seed)
    database, queries = adapter.transform(database_vectors), adapter.transform(query_vectors)
    return figures(queries @ database.T, crowd(database), ids, query_ids, np.isin(query_ids, ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="NyalaData,LionData,Holstein2025")
    parser.add_argument("--backbone", default="efficientnet-lite0-multiscale")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backbone = load_backbone(args.backbone)
    print(f"{'dataset':14} {'asked':9} {'a':>4} {'top-1':>6} {'AUC':>6}")
    for dataset_name in args.datasets.split(","):
        found = labelled_vectors(dataset_name, backbone, args.cache_dir)
        rows = {
            "database": on_database(found.database, found.identities, found.clips, args.seed),
            "queries": on_queries(found.database, found.identities, found.queries, found.query_identities, args.seed),
        }
        for asked, per_weight in rows.items():
            for weight, (top1, auc) in zip(WEIGHTS, per_weight):
                print(f"{dataset_name:14} {asked:9} {weight:4.1f} {top1:6.3f} {auc:6.3f}", flush=True)


if __name__ == "__main__":
    main()
