"""Batch throughput once a gallery is built: Holstein2025's 757 queries against its 3,019
database photos, per preset, with the time to build the gallery reported apart.

    python benchmarks/gallery_throughput.py [--presets offline,fusion] [--cache DIR]

Per preset, with an empty cache: ``Gallery.build`` on the database rows (extraction of the
descriptors and keypoints, index, calibration and threshold: the same work as
``wildreid gallery build``), saved and loaded back; then ``Gallery.identify`` on the queries twice:
cold (their descriptors and keypoints extracted, as a new batch of photos) and warm (features
cached: matching alone). Prints queries/s for both and the score, which must equal the batch
run's (benchmarks/gallery_same_answers.py). With ``--cache`` (a cache already holding Holstein2025's
descriptors and keypoints, e.g. gallery_same_answers.py's) extraction is skipped: the build time
is then index and fit alone, and both passes are matching alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gallery_same_answers import SHARED  # noqa: E402  (benchmarks/ is the script's folder, so on sys.path)

from wildreid.evaluate.outputs import evaluate_if_possible
from wildreid.gallery.gallery import Gallery
from wildreid.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="offline,fusion")
    parser.add_argument("--cache", type=Path, help="a cache already holding the photos' features")
    arguments = parser.parse_args()
    from wildreid.data.dataset import load_dataset

    dataset = load_dataset(SHARED / "Holstein2025")
    table = dataset.table
    table["clip"] = table["original_path"].str.rsplit("/", n=1).str[-1].str.split("_").str[:2].str.join("_")
    dataset.table = table.drop(columns=["original_path"])
    for name in arguments.presets.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            cache = arguments.cache or Path(scratch) / "cache"
            started = time.perf_counter()
            built = Gallery.build(dataset, get_preset(name), cache_dir=cache, progress=False)
            build_s = time.perf_counter() - started
            built.save(Path(scratch) / "gallery")
            started = time.perf_counter()
            gallery = Gallery.load(Path(scratch) / "gallery", backbone=built.backbone)
            load_s = time.perf_counter() - started
            queries = dataset.queries
            rates = {}
            for state in ("cold", "warm"):
                started = time.perf_counter()
                result = gallery.identify(queries, cache_dir=cache, progress=False)
                rates[state] = len(queries) / (time.perf_counter() - started)
            result.dataset = dataset
            score = evaluate_if_possible(result)["score"]
            timings = built.timings
            print(
                f"{name:>7}: build {build_s:.0f} s (descriptors {timings.get('extract_s', 0):.0f} s, keypoints "
                f"{timings.get('local_features_s', 0):.0f} s, fit {timings.get('fit_Holstein2025_s', 0):.0f} s), "
                f"load {load_s:.1f} s; {len(queries)} queries: {rates['cold']:.1f} queries/s with their "
                f"extraction, {rates['warm']:.1f} queries/s matching alone; score {score:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
