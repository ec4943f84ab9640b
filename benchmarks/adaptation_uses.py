"""What each adaptation level does for each use of the global vector, on the real queries.

    python benchmarks/adaptation_uses.py --cache-dir C
    python benchmarks/adaptation_uses.py --cache-dir C --datasets LionData-paper-split

Each level (describe/adapters.py) is fitted on the whole database's labels, as a gallery fits it,
and the queries are compared through it. Query labels only score; nothing is chosen here. One
figure per use of the adapted vector (the gallery uses it in all three at once):

- shortlist: share of known queries with a photo of their individual among the 20 database photos
  nearest by cosine, the candidates that keypoint matching verifies (fusion's default size);
  "list@20+raw": the same with the backbone's own 20 nearest added (up to 40 candidates), and
  "list@40": the level's own 40 nearest, the same number of candidates from one source;
- score: the cosine as evidence on its own: top-1 of known queries (nearest database photo) and
  the new-vs-known AUC of each query's best cosine (new individuals should score lower);
- grouping: the query-to-query graph: share of queries (of an individual with two queries or
  more) whose nearest other query shows the same individual. Threshold-free, so it measures the
  evidence grouping starts from, not the grouping's own threshold.

The learned fusion rule's row is its own benchmark (real_data.py --set fusion_rule=...).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_data import benchmark_dataset  # noqa: E402

from wildreid.describe.adapters import NONE, adapter_names, make_adapter, unit_rows  # noqa: E402
from wildreid.describe.backbones import load_backbone  # noqa: E402
from wildreid.describe.extract import extract_embeddings  # noqa: E402

SHORTLIST = 20
COLUMNS = ["list@20", "+raw", "@40", "top-1", "AUC", "qgraph"]  # the figures of uses(), as printed


def uses(database, queries, db_names, query_names, raw_nearest) -> dict[str, float]:
    """The per-use figures (COLUMNS) of already adapted (unit-length) vectors; ``raw_nearest``:
    each query's 20 nearest database photos by the backbone's own vectors."""
    similarity = queries @ database.T
    known = np.isin(query_names, db_names)
    deeper = np.argsort(-similarity, axis=1)[:, : 2 * SHORTLIST]
    nearest = deeper[:, :SHORTLIST]

    def found(candidates: np.ndarray) -> np.ndarray:
        """Per query: its individual is among these database photos."""
        return (db_names[candidates] == query_names[:, None]).any(axis=1)

    between = queries @ queries.T
    np.fill_diagonal(between, -np.inf)
    has_mate = np.array([(query_names == name).sum() > 1 for name in query_names])
    return {
        "list@20": float(found(nearest)[known].mean()),
        "+raw": float((found(nearest) | found(raw_nearest))[known].mean()),
        "@40": float(found(deeper)[known].mean()),
        "top-1": float(found(nearest[:, :1])[known].mean()),
        # High best cosine should mean known: AUC of "known" against the best cosine.
        "AUC": float(roc_auc_score(known, similarity.max(axis=1))) if 0 < known.sum() < len(known) else np.nan,
        "qgraph": float((query_names[between.argmax(axis=1)] == query_names)[has_mate].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="LionData,NyalaData,Holstein2025")
    parser.add_argument("--backbone", default="efficientnet-lite0-multiscale")
    parser.add_argument("--levels", default=",".join([NONE, *adapter_names()]))
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backbone = load_backbone(args.backbone)
    print(f"backbone {args.backbone}; levels fitted on all database labels; queries score only")
    widths = [7] + [6] * len(COLUMNS)  # "list@20" 7 characters wide; the others and "fit s" 6
    header = [*COLUMNS, "fit s"]
    print(f"{'dataset':20} {'level':7} " + " ".join(f"{name:>{width}}" for name, width in zip(header, widths)))
    for dataset_name in args.datasets.split(","):
        dataset = benchmark_dataset(dataset_name)
        database, queries = dataset.database, dataset.queries
        vectors = extract_embeddings(
            database["path"].tolist() + queries["path"].tolist(), backbone, cache_dir=args.cache_dir, progress=False
        ).embeddings
        db_vectors, query_vectors = vectors[: len(database)], vectors[len(database) :]
        db_names = database["identity"].to_numpy().astype(str)
        query_names = queries["identity"].to_numpy().astype(str)
        raw = unit_rows(query_vectors) @ unit_rows(db_vectors).T
        raw_nearest = np.argsort(-raw, axis=1)[:, :SHORTLIST]
        for level in args.levels.split(","):
            started = time.perf_counter()
            if level == NONE:
                described = unit_rows(db_vectors), unit_rows(query_vectors)
            else:
                adapter = make_adapter(level).fit(db_vectors, db_names, seed=args.seed)
                described = adapter.transform(db_vectors), adapter.transform(query_vectors)
            seconds = time.perf_counter() - started
            figures = uses(*described, db_names, query_names, raw_nearest)
            values = [f"{figures[name]:{width}.3f}" for name, width in zip(COLUMNS, widths)]
            print(f"{dataset_name:20} {level:7} " + " ".join(values) + f" {seconds:6.1f}", flush=True)


if __name__ == "__main__":
    main()
