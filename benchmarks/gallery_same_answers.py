"""The gallery against the batch pipeline it replaced, in one run: same answers, and what the
bounded sampling changed.

    python benchmarks/gallery_same_answers.py [--baseline-rev 0425512] [--presets offline,fusion]

The baseline is the last commit before the gallery (``git worktree`` of ``--baseline-rev``, run
in a subprocess with its own ``src`` first on PYTHONPATH); the gallery is this checkout. Both
read one shared embedding/keypoint cache (its format did not change), so extraction is paid once
and the timings compare matching, calibration and threshold choice.

Per dataset and preset it prints the score, threshold and simulated score of each, and for
``offline`` a third run: the gallery with the baseline's thresholds fixed (``--threshold
NAME=VALUE``), whose predictions must equal the baseline's row for row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = ["LionData", "NyalaData", "Holstein2025"]


def run_single(name: str, preset_name: str, cache: Path, out: Path, threshold: str | None) -> dict:
    """One identification with whichever wildreid is first on sys.path (APIs both versions share)."""
    from wildreid.data.dataset import load_dataset
    from wildreid.evaluate.outputs import evaluate_if_possible
    from wildreid.gallery.pipeline import identify
    from wildreid.presets import get_preset, parse_threshold

    dataset = load_dataset(SHARED / name)
    table = dataset.table
    if name == "Holstein2025":  # the clip marks near-duplicate frames (as benchmarks/real_data.py)
        table["clip"] = table["original_path"].str.rsplit("/", n=1).str[-1].str.split("_").str[:2].str.join("_")
    dataset.table = table.drop(columns=["original_path"])
    preset = get_preset(preset_name)
    if threshold:
        preset = preset.replace(threshold=parse_threshold(threshold))
    started = time.perf_counter()
    result = identify(dataset, preset, cache_dir=cache, progress=False)
    wall = time.perf_counter() - started
    evaluation = evaluate_if_possible(result)
    result.candidates.to_csv(out, index=False)
    choice = next(iter(result.threshold_choices.values()), None)
    return {
        "score": evaluation["score"],
        "top1": evaluation["top1"],
        "auc": evaluation["auc_new_vs_known"],
        "threshold": next(iter(result.thresholds.values())),
        "wall_s": wall,
        "simulated": None if choice is None else choice.simulated_score,
    }


def launch(source: Path, name: str, preset: str, cache: Path, out: Path, threshold: str | None = None) -> dict:
    command = [sys.executable, __file__, "--single", f"{name}:{preset}", "--cache", str(cache), "--out", str(out)]
    if threshold:
        command += ["--fixed-threshold", threshold]
    environment = {**os.environ, "PYTHONPATH": str(source / "src")}
    process = subprocess.run(command, capture_output=True, text=True, env=environment)
    if process.returncode:
        raise SystemExit(f"{preset} on {name} ({source}) failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def compare(before: Path, after: Path) -> str:
    import pandas as pd

    old, new = pd.read_csv(before, dtype=str), pd.read_csv(after, dtype=str)
    same_prediction = int((old["prediction"] == new["prediction"]).sum())
    ranked = [c for c in old.columns if c.startswith("identity_")]
    same_ranking = int((old[ranked].fillna("") == new[ranked].fillna("")).all(axis=1).sum())
    return (
        f"predictions equal {same_prediction}/{len(old)}, top-{len(ranked)} identities equal {same_ranking}/{len(old)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-rev", default="0425512")
    parser.add_argument("--presets", default="offline,fusion")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wildreid-same-answers-cache")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fixed-threshold", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.single:
        name, preset = arguments.single.split(":")
        print(json.dumps(run_single(name, preset, arguments.cache, arguments.out, arguments.fixed_threshold)))
        return

    baseline = Path(tempfile.gettempdir()) / f"wildreid-baseline-{arguments.baseline_rev}"
    if not baseline.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), arguments.baseline_rev],
            check=True,
            capture_output=True,
        )
    scratch = Path(tempfile.mkdtemp(prefix="wildreid-same-answers-"))
    for preset in arguments.presets.split(","):
        for name in arguments.datasets.split(","):
            before = launch(baseline, name, preset, arguments.cache, scratch / f"before-{preset}-{name}.csv")
            after = launch(ROOT, name, preset, arguments.cache, scratch / f"after-{preset}-{name}.csv")
            print(
                f"{preset:>7} {name:<13} batch   score {before['score']:.3f} top-1 {before['top1']:.3f} "
                f"AUC {before['auc']:.3f} threshold {before['threshold']:.4f} simulated {before['simulated']:.3f} "
                f"{before['wall_s']:.1f} s",
                flush=True,
            )
            print(
                f"{'':>7} {'':<13} gallery score {after['score']:.3f} top-1 {after['top1']:.3f} "
                f"AUC {after['auc']:.3f} threshold {after['threshold']:.4f} simulated {after['simulated']:.3f} "
                f"{after['wall_s']:.1f} s; "
                f"{compare(scratch / f'before-{preset}-{name}.csv', scratch / f'after-{preset}-{name}.csv')}",
                flush=True,
            )
            if preset == "offline":
                fixed = f"{name}={before['threshold']!r}"
                pinned = launch(ROOT, name, preset, arguments.cache, scratch / f"fixed-{name}.csv", fixed)
                print(
                    f"{'':>7} {'':<13} gallery with the batch threshold: score {pinned['score']:.3f}; "
                    f"{compare(scratch / f'before-{preset}-{name}.csv', scratch / f'fixed-{name}.csv')}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
