"""Compare settings of the fusion preset on one real dataset (which scores to fuse, LNBNN
candidates on/off, geometry, shortlist size).

    python benchmarks/fusion_variants.py NyalaData '{}' '{"use_lnbnn": false, "scores": ["cosine", "inliers"]}'
    python benchmarks/fusion_variants.py LionData-paper-split '{}' '{"scores": ["cosine"]}'   # closed set

Each argument after the dataset is a JSON object of FusionSettings fields; '{}' is the preset.
Global descriptors and local features are cached in --cache-dir, so after the first variant
only matching, calibration and thresholds are recomputed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from wildreid.evaluate.outputs import evaluate_if_possible
from wildreid.gallery.pipeline import identify
from wildreid.local.pairs import FusionSettings
from wildreid.presets import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import CLOSED_SPLIT, benchmark_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "wildreid-bench-cache")
    arguments = parser.parse_args()
    closed_set = arguments.dataset == CLOSED_SPLIT
    dataset = benchmark_dataset(arguments.dataset)  # as benchmarks/real_data.py measures it
    for variant in arguments.variants:
        settings = json.loads(variant)
        preset = get_preset("fusion").replace(fusion=FusionSettings(**settings))
        if closed_set:
            preset = preset.replace(threshold=None)
        started = time.perf_counter()
        result = identify(dataset, preset, cache_dir=arguments.cache_dir, progress=False)
        figures = next(iter(evaluate_if_possible(result)["per_dataset"].values()))
        seconds = time.perf_counter() - started
        if closed_set:
            print(
                f"{arguments.dataset} {variant}: top-1 {figures['top1']:.3f} top-5 {figures['top5']:.3f} "
                f"({seconds:.0f} s)",
                flush=True,
            )
            continue
        choice = next(iter(result.threshold_choices.values()))
        print(
            f"{arguments.dataset} {variant}: score {figures['score']:.3f} BAKS {figures['baks']:.3f} "
            f"BAUS {figures['baus']:.3f} top-1 {figures['top1']:.3f} top-5 {figures['top5']:.3f} "
            f"AUC {figures['auc_new_vs_known']:.3f} threshold {choice.threshold:.3f} "
            f"simulated {choice.simulated_score:.3f} ({seconds:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
