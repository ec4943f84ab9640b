"""Do rank features tell a new individual from a known one better than the top score? On the
database alone, with identities held out.

    python benchmarks/rank_features.py --datasets NyalaData,LionData,Holstein2025 --cache-dir C

Issue 20 asks for "top-m rank features" in the learned fusion rule. What such a feature can add
is knowledge of the query's whole list, and the decision it can improve is new-vs-known: a known
animal's best match should stand out from the next individuals, a new one's should not. This
measures that before any rule is built. Only *database* photos are read, in the rounds of
held_out.py (5 identity folds; new and known queries; the level named, or none, fitted on the
other three folds, so neither the new nor the known queries' individuals were seen by it). Per
query, the best cosine of each individual listed; printed: the AUC (known = positive) of

- ``top``: the best individual's cosine (what the threshold decides on today);
- ``margin``: top minus the second individual's (the ratio test of identification);
- ``gap10``: top minus the mean of the next ten individuals' (how far the best stands out of the
  query's own crowd),

as means over the five folds.
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
from real_data import benchmark_dataset  # noqa: E402

from wildreid.describe.adapters import NONE, make_adapter, unit_rows  # noqa: E402
from wildreid.describe.backbones import load_backbone  # noqa: E402
from wildreid.describe.extract import extract_embeddings  # noqa: E402
from wildreid.gallery.adaptation import FOLDS  # noqa: E402

CROWD = 10


def fold_aucs(vectors: np.ndarray, identities: np.ndarray, level: str, new: int, seed: int) -> dict[str, float]:
    held = held_out_round(identities, new, seed)
    training, gallery, queries = held.training, held.gallery, held.queries
    described = (
        unit_rows(vectors)
        if level == NONE
        else make_adapter(level).fit(vectors[training], identities[training], seed=seed).transform(vectors)
    )
    similarity = described[queries] @ described[gallery].T
    similarity[queries[:, None] == gallery[None, :]] = -np.inf
    _, best = best_of_each_individual(similarity, identities[gallery])
    ranked = -np.sort(-best, axis=1)
    known = held.known
    return {
        "top": roc_auc_score(known, ranked[:, 0]),
        "margin": roc_auc_score(known, ranked[:, 0] - ranked[:, 1]),
        "gap10": roc_auc_score(known, ranked[:, 0] - ranked[:, 1 : 1 + CROWD].mean(axis=1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="NyalaData,LionData,Holstein2025")
    parser.add_argument("--backbone", default="efficientnet-lite0-multiscale")
    parser.add_argument("--levels", default="none,whiten")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backbone = load_backbone(args.backbone)
    print(f"{'dataset':14} {'level':8} {'AUC top':>8} {'margin':>8} {'gap10':>8}")
    for dataset_name in args.datasets.split(","):
        database = benchmark_dataset(dataset_name).database
        vectors = extract_embeddings(database["path"].tolist(), backbone, cache_dir=args.cache_dir, progress=False)
        identities = database["identity"].to_numpy().astype(str)
        for level in args.levels.split(","):
            per_fold = [fold_aucs(vectors.embeddings, identities, level, new, args.seed) for new in range(FOLDS)]
            means = {name: float(np.mean([fold[name] for fold in per_fold])) for name in per_fold[0]}
            print(
                f"{dataset_name:14} {level:8} {means['top']:8.3f} {means['margin']:8.3f} {means['gap10']:8.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
