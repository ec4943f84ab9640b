"""How the fusion preset's per-query time grows with the database (Holstein2025, CPU).

    python benchmarks/fusion_scaling.py [--fractions 0.25,0.5,1.0]

For each fraction, that share of every identity's database images (at least one) is kept, all
queries are identified, and the query-side time is printed per query: LNBNN search over the
database keypoints plus shortlist matching. Global descriptors and local features are cached
once beforehand, so the figures are the matching cost, not extraction. The calibration cost
(capped at FusionSettings.calibration_anchors database images) is printed separately.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from wildreid.data import load_csv
from wildreid.fusion import fuse_group
from wildreid.local import get_method
from wildreid.local.cache import local_features
from wildreid.pipeline import embed_dataset, near_duplicate_groups
from wildreid.backbones import load_backbone
from wildreid.presets import get_preset
from wildreid.search import cosine_similarity

from real_data import prepare  # noqa: E402  (benchmarks/ is the script's folder, so on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", default="0.25,0.5,1.0")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "wildreid-bench-cache")
    arguments = parser.parse_args()
    preset = get_preset("fusion")
    with tempfile.TemporaryDirectory() as scratch:
        dataset = load_csv(prepare("Holstein2025", Path(scratch) / "Holstein2025"))
    backbone = load_backbone(preset.backbone)
    vectors = embed_dataset(dataset, backbone, cache_dir=arguments.cache_dir, progress=False).embeddings
    method = get_method(preset.local, **preset.local_options)
    features = local_features(dataset.table["path"].tolist(), method, cache_dir=arguments.cache_dir, progress=False)
    table = dataset.table
    queries = np.flatnonzero(table["split"] == "query")
    rng = np.random.default_rng(0)
    print(f"cpu cores: {os.cpu_count()}, queries: {len(queries)}")
    for fraction in [float(f) for f in arguments.fractions.split(",")]:
        database = []
        for _, rows in table[table["split"] == "database"].groupby("identity"):
            keep = max(1, round(fraction * len(rows)))
            database.extend(rng.choice(rows.index.to_numpy(), size=keep, replace=False))
        database = np.array(sorted(database))
        timings: dict = {}
        started = time.perf_counter()
        fuse_group(
            query_cosine=cosine_similarity(vectors[queries], vectors[database]),
            database_cosine=cosine_similarity(vectors[database], vectors[database]),
            query_features=[features[i] for i in queries], database_features=[features[i] for i in database],
            database_identities=table["identity"].to_numpy()[database],
            near_duplicate_groups=near_duplicate_groups(table.iloc[database]), method=method,
            settings=preset.fusion, timings=timings)
        total = time.perf_counter() - started
        print(f"database {fraction:>4.0%} ({len(database)} images): calibration {timings['calibration_s']:.1f} s, "
              f"queries {timings['queries_s']:.1f} s = {1000 * timings['queries_s'] / len(queries):.1f} ms/query "
              f"(total {total:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
