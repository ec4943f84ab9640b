"""Where a dataset's identity evidence lies across viewpoints: can a same-view rule help at all?

    python benchmarks/view_evidence.py NyalaData --cache-dir CACHE
    python benchmarks/view_evidence.py NyalaData --candidates bench-out/fusion-NyalaData/candidates.csv

Prints, for the known queries: how many have a database photo of their own identity and view
(without one, a same-view rule makes the right answer unreachable), and the top-1 of the
EfficientNet-Lite0 cosine when a query meets every photo, only photos of its own view, or only
photos of other views. With ``--candidates`` (a run's candidates.csv) also how many correct top-1
answers came from a photo of the query's own view.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import SHARED  # noqa: E402

from wildreid.data.dataset import DATABASE, load_dataset
from wildreid.data.views import photo_views
from wildreid.describe.backbones import load_backbone
from wildreid.describe.extract import extract_embeddings
from wildreid.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--candidates", type=Path, help="a run's candidates.csv")
    arguments = parser.parse_args()
    table = load_dataset(SHARED / arguments.dataset).table
    views = photo_views(table)
    identities = table["identity"].to_numpy(dtype=object)
    database = (table["split"] == DATABASE).to_numpy()
    known = ~database & np.isin(identities, identities[database])
    reachable = [
        bool(np.any(database & (identities == identities[q]) & (views == views[q]))) for q in np.flatnonzero(known)
    ]
    print(f"{arguments.dataset}: {known.sum()} known queries, {sum(reachable)} with a database photo of their view")

    preset = get_preset("fusion")
    backbone = load_backbone(preset.backbone, preprocess=preset.preprocess, device="cpu")
    vectors = extract_embeddings(
        table["path"].tolist(), backbone, cache_dir=arguments.cache_dir, progress=False
    ).embeddings
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = vectors[known] @ vectors[database].T
    same_view = views[known][:, None] == views[database][None, :]
    for name, allowed in (
        ("every photo", np.ones_like(same_view)),
        ("own view", same_view),
        ("other views", ~same_view),
    ):
        best = np.argmax(np.where(allowed, similarity, -np.inf), axis=1)
        top1 = np.mean(identities[database][best] == identities[known])
        print(f"  cosine top-1 meeting {name}: {top1:.3f}")

    if arguments.candidates:
        candidates = pd.read_csv(arguments.candidates, dtype=str)
        image_ids = table["image_id"].astype(str)
        view_of, identity_of = dict(zip(image_ids, views)), dict(zip(image_ids, identities))
        rows = candidates[candidates["image_id"].map(lambda i: known[image_ids.tolist().index(i)])]
        correct = rows[rows["identity_1"] == rows["image_id"].map(identity_of)]
        own = (correct["match_1"].map(view_of) == correct["image_id"].map(view_of)).sum()
        print(
            f"  {len(correct)} correct top-1 answers in {arguments.candidates}: {own} from a photo of the query's view"
        )


if __name__ == "__main__":
    main()
