"""How the fusion preset's per-query time grows with the database (Holstein2025, CPU).

    python benchmarks/fusion_scaling.py [--fractions 0.25,0.5,1.0]

For each fraction, that share of every identity's database images (at least one) becomes a
gallery (``Gallery.build``), and all queries are identified against it; printed per query is the
matching time alone (LNBNN search over the gallery's keypoints, the cosine shortlist from the
index, geometric verification of the shortlist): descriptors and keypoints are cached once
beforehand, so the figures are not extraction. The gallery's fit (calibration on a bounded
sample of pseudo-queries, threshold) is printed separately.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from gallery_same_answers import SHARED  # noqa: E402  (benchmarks/ is the script's folder, so on sys.path)

from wildreid.data.dataset import Dataset
from wildreid.gallery.gallery import Gallery
from wildreid.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", default="0.25,0.5,1.0")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "wildreid-bench-cache")
    arguments = parser.parse_args()
    from wildreid.data.dataset import load_dataset

    preset = get_preset("fusion")
    dataset = load_dataset(SHARED / "Holstein2025")
    table = dataset.table
    table["clip"] = table["original_path"].str.rsplit("/", n=1).str[-1].str.split("_").str[:2].str.join("_")
    table = table.drop(columns=["original_path"])
    queries = table[table["split"] == "query"]
    Gallery.build(Dataset(table, "all"), preset, cache_dir=arguments.cache_dir, progress=False)  # fills the caches
    rng = np.random.default_rng(0)
    print(f"cpu cores: {os.cpu_count()}, queries: {len(queries)}")
    for fraction in [float(f) for f in arguments.fractions.split(",")]:
        chosen = []
        for _, rows in table[table["split"] == "database"].groupby("identity"):
            chosen.extend(rng.choice(rows.index.to_numpy(), size=max(1, round(fraction * len(rows))), replace=False))
        database = table.loc[sorted(chosen)]
        gallery = Gallery.build(database, preset, cache_dir=arguments.cache_dir, progress=False)
        result = gallery.identify(queries, cache_dir=arguments.cache_dir, progress=False)
        match_s = result.timings["match_s"]
        print(
            f"database {fraction:>4.0%} ({len(database)} images): fit {gallery.timings['fit_Holstein2025_s']:.1f} s, "
            f"queries {match_s:.1f} s = {1000 * match_s / len(queries):.1f} ms/query",
            flush=True,
        )


if __name__ == "__main__":
    main()
