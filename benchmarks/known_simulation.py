"""Do the database's simulated known queries score like real known queries, once adapted?

    python benchmarks/known_simulation.py --datasets NyalaData,LionData,Holstein2025 --cache-dir C

The gallery's cross-fitting (gallery/adaptation.py) scores every pseudo-query through an adapter
fitted without its *identity*, whatever part the threshold simulation then gives it. That is what
deployment does to a new animal, but not to a known one: a real known query is a new photo of an
individual whose other photos the adapter learned from. This measures whether the difference
matters, with the default level (whitening) and the global cosine alone. Per database photo, as a
pseudo-query against every other photo (never itself nor its clip, where there is a ``clip``
column):

- ``identity held out`` (today's cross-fit): the whitening fitted without the photo's identity
  fold (5 identity folds, gallery/adaptation.identity_folds);
- ``photo held out``: the whitening fitted without the photo's photo fold (5 random folds of the
  photos, so every individual is learned from its other photos, as at deployment).

Printed: the median top cosine and the top-1 of the known pseudo-queries (those with another photo
of their individual), beside the real known queries' (the whitening fitted on the whole database).
Then the threshold each way chooses, with the new individuals always simulated with their identity
held out (the pseudo-query against every photo but its individual's), by the best geometric mean of
"known pseudo-queries accepted with the right individual" and "new ones rejected", applied to the
real queries: the fraction of known queries accepted with the right individual, of new ones
rejected, and their geometric mean. These fractions are over queries (BAKS and BAUS average over
individuals), so they show the direction, not the benchmark's score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_data import labelled_vectors  # noqa: E402

from wildreid.describe.adapters import make_adapter  # noqa: E402
from wildreid.describe.backbones import load_backbone  # noqa: E402
from wildreid.gallery.adaptation import FOLDS, identity_folds  # noqa: E402

LEVEL = "whiten"


def held_out_tops(vectors, ids, clips, folds, seed):
    """Per photo, through a whitening fitted without its fold: (top cosine with its individual's
    other photos present, whether that top is its individual, top cosine with its individual absent)."""
    known_top, right, new_top = np.zeros(len(ids)), np.zeros(len(ids), bool), np.zeros(len(ids))
    for fold in range(FOLDS):
        inside = np.flatnonzero(folds == fold)
        adapter = make_adapter(LEVEL).fit(vectors[folds != fold], ids[folds != fold], seed=seed)
        described = adapter.transform(vectors)
        similarity = described[inside] @ described.T
        similarity[np.arange(len(inside)), inside] = -np.inf
        if clips is not None:
            similarity[clips[inside][:, None] == clips[None, :]] = -np.inf
        known_top[inside] = similarity.max(axis=1)
        right[inside] = ids[similarity.argmax(axis=1)] == ids[inside]
        similarity[ids[inside][:, None] == ids[None, :]] = -np.inf
        new_top[inside] = similarity.max(axis=1)
    return known_top, right, new_top


def rates(known_top, right, new_top, threshold) -> tuple[float, float]:
    return float((right & (known_top >= threshold)).mean()), float((new_top < threshold).mean())


def chosen_threshold(known_top, right, new_top) -> float:
    grid = np.quantile(np.concatenate([known_top, new_top]), np.linspace(0, 1, 401))
    return float(max(grid, key=lambda threshold: np.sqrt(np.prod(rates(known_top, right, new_top, threshold)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="NyalaData,LionData,Holstein2025")
    parser.add_argument("--backbone", default="efficientnet-lite0-multiscale")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backbone = load_backbone(args.backbone)
    for dataset_name in args.datasets.split(","):
        found = labelled_vectors(dataset_name, backbone, args.cache_dir)
        database, ids, clips = found.database, found.identities, found.clips
        queries, query_ids = found.queries, found.query_identities
        names, counts = np.unique(ids, return_counts=True)
        has_mates = np.isin(ids, names[counts > 1])
        by_identity = held_out_tops(database, ids, clips, identity_folds(ids, FOLDS, args.seed), args.seed)
        photo_folds = np.random.default_rng(args.seed).integers(0, FOLDS, len(ids))
        by_photo = held_out_tops(database, ids, clips, photo_folds, args.seed)
        adapter = make_adapter(LEVEL).fit(database, ids, seed=args.seed)
        real = adapter.transform(queries) @ adapter.transform(database).T
        known = np.isin(query_ids, ids)
        real_top, real_right = real.max(axis=1), ids[real.argmax(axis=1)] == query_ids
        print(f"{dataset_name}: known queries, top cosine (median) and top-1")
        for name, (top, right) in {
            "identity held out": (by_identity[0][has_mates], by_identity[1][has_mates]),
            "photo held out": (by_photo[0][has_mates], by_photo[1][has_mates]),
            "real queries": (real_top[known], real_right[known]),
        }.items():
            print(f"  {name:18} {len(top):5} photos  top cosine {np.median(top):6.3f}  top-1 {right.mean():.3f}")
        print("  threshold from the known pseudo-queries, on the real queries:")
        new_top = by_identity[2]
        for name, (top, right, _) in {"identity held out": by_identity, "photo held out": by_photo}.items():
            threshold = chosen_threshold(top[has_mates], right[has_mates], new_top)
            accepted, rejected = rates(real_top[known], real_right[known], real_top[~known], threshold)
            print(
                f"  {name:18} threshold {threshold:6.3f}  known right {accepted:.3f}  new rejected "
                f"{rejected:.3f}  geo-mean {np.sqrt(accepted * rejected):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
