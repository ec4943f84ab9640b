"""Descriptors and adaptation levels judged on the database alone, on individuals they never saw.

    python benchmarks/adaptation_levels.py --datasets LionData,NyalaData,Holstein2025 --cache-dir C

For each dataset only its *database* photos are read (no query, no query label). Their identities
are dealt into 5 folds (seeded); for each fold, each adaptation level (describe/adapters.py) is
fitted on the other folds' photos and the fold's photos are compared with each other through it:
top-1 is the share of the fold's photos (of an individual with two photos or more in the fold)
whose most similar other photo of the fold shows the same individual; shortlist@20 the share with
a photo of the same individual among its 20 most similar (the shortlist that keypoint matching
then verifies, fusion's default size). So the figures reward what an adapter learned about
telling *new* individuals apart, never memorised ones; they are the evidence on which the
offline descriptor and the levels offered were chosen (BENCHMARKS.md, issue 20). Printed per
(backbone, input size, dataset, level): the means over the folds and the fit time.
``--input-sizes 224,384``: the backbone's pictures resized to each square size instead of its own
(the rest of its preprocessing kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_data import benchmark_dataset  # noqa: E402

from wildreid.describe.adapters import NONE, adapter_names, make_adapter, unit_rows  # noqa: E402
from wildreid.describe.backbones import load_backbone  # noqa: E402
from wildreid.describe.extract import extract_embeddings  # noqa: E402
from wildreid.describe.input_size import read_at_input_size  # noqa: E402
from wildreid.gallery.adaptation import FOLDS, identity_folds  # noqa: E402

SHORTLIST = 20


def held_out_top1(vectors: np.ndarray, identities: np.ndarray, level: str, seed: int) -> tuple[float, float, float]:
    """(mean top-1, mean shortlist@20 over the identity folds, seconds spent fitting)."""
    folds = identity_folds(identities, FOLDS, seed)
    found, listed, seconds = [], [], 0.0
    for fold in range(FOLDS):
        inside = folds == fold
        if level == NONE:
            described = unit_rows(vectors[inside])
        else:
            started = time.perf_counter()
            adapter = make_adapter(level).fit(vectors[~inside], identities[~inside], seed=seed)
            seconds += time.perf_counter() - started
            described = adapter.transform(vectors[inside])
        names = identities[inside]
        similarity = described @ described.T
        np.fill_diagonal(similarity, -np.inf)
        has_mate = np.array([(names == name).sum() > 1 for name in names])
        found.append(float((names[similarity.argmax(axis=1)] == names)[has_mate].mean()))
        nearest = np.argsort(-similarity, axis=1)[:, :SHORTLIST]
        listed.append(float((names[nearest] == names[:, None]).any(axis=1)[has_mate].mean()))
    return float(np.mean(found)), float(np.mean(listed)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="LionData,NyalaData,Holstein2025")
    parser.add_argument("--backbones", default="efficientnet-lite0,efficientnet-lite0-multiscale")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-sizes", default="", help="square sizes, comma-separated; default: the backbone's own")
    parser.add_argument(
        "--levels", default="", help="adaptation levels, comma-separated; default: none and every level"
    )
    args = parser.parse_args()
    levels = args.levels.split(",") if args.levels else [NONE, *adapter_names()]
    print(f"{'backbone':30} {'size':>5} {'dataset':14} {'level':8} {'top-1':>6} {'list20':>6} {'fit s':>6}")
    for name in args.backbones.split(","):
        for size in [int(s) for s in args.input_sizes.split(",")] if args.input_sizes else [None]:
            backbone = read_at_input_size(load_backbone(name), size, pd.DataFrame({"path": []}), 0.0)
            shown = backbone.preprocess.size[0]
            for dataset_name in args.datasets.split(","):
                database = benchmark_dataset(dataset_name).database
                vectors = extract_embeddings(
                    database["path"].tolist(), backbone, cache_dir=args.cache_dir, progress=False
                ).embeddings
                identities = database["identity"].to_numpy().astype(str)
                for level in levels:
                    top1, listed, seconds = held_out_top1(vectors, identities, level, args.seed)
                    print(
                        f"{name:30} {shown:5} {dataset_name:14} {level:8} {top1:6.3f} {listed:6.3f} {seconds:6.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
