"""Do two commits write the same answers? Byte-for-byte submission.csv and candidates.csv.

    python benchmarks/same_outputs.py --before 13d2ae9
    python benchmarks/same_outputs.py --before 13d2ae9 --datasets LionData --presets offline

For a change that must not change behaviour (a restructuring): the commit ``--before`` is checked
out in a git worktree (``--work``/before-src), and ``wildreid identify`` runs on each real dataset
in ../shared/data with each preset, once with the old code and once with this working tree's,
in one go. Each side has its own embedding cache (so the new code's extraction is exercised too,
not only the old code's descriptors read back), shared by that side's presets. The files are then
compared byte for byte; the exit status is 1 when any pair differs.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
COMPARED = ("submission.csv", "candidates.csv")


def checkout(commit: str, folder: Path) -> Path:
    """The source folder of ``commit``, in a detached worktree (made once, reused after)."""
    if not folder.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), commit], cwd=ROOT, check=True)
    else:
        subprocess.run(["git", "checkout", "--detach", commit], cwd=folder, check=True, capture_output=True)
    return folder / "src"


def identify(source: Path, dataset: str, preset: str, out: Path, cache: Path) -> float:
    """Run `wildreid identify` with the package in ``source``; returns the wall time in seconds."""
    environment = dict(os.environ, PYTHONPATH=str(source))
    command = [sys.executable, "-m", "wildreid", "identify", str(DATA / dataset), "--out", str(out)]
    command += ["--preset", preset, "--cache-dir", str(cache)]
    started = time.perf_counter()
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with (e.g. the one before a refactor)")
    parser.add_argument("--datasets", default="LionData,NyalaData,Holstein2025")
    parser.add_argument("--presets", default="offline,fusion")
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "same_outputs")
    arguments = parser.parse_args()
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sides = {"before": checkout(arguments.before, work / "before-src"), "after": ROOT / "src"}
    print(f"before: {arguments.before}  after: this working tree ({ROOT})")
    print(f"{'dataset':<14}{'preset':<9}{'before s':>9}{'after s':>9}  " + "  ".join(COMPARED))
    differing = 0
    for dataset in arguments.datasets.split(","):
        for preset in arguments.presets.split(","):
            seconds = {}
            for side, source in sides.items():
                out = work / side / f"{dataset}-{preset}"
                seconds[side] = identify(source, dataset, preset, out, work / side / "cache")
            same = [
                filecmp.cmp(
                    work / "before" / f"{dataset}-{preset}" / name,
                    work / "after" / f"{dataset}-{preset}" / name,
                    shallow=False,
                )
                for name in COMPARED
            ]
            differing += not all(same)
            verdicts = "  ".join(
                f"{'identical' if equal else 'DIFFERENT':<{len(name)}}" for name, equal in zip(COMPARED, same)
            )
            print(f"{dataset:<14}{preset:<9}{seconds['before']:>9.0f}{seconds['after']:>9.0f}  {verdicts}")
    print("all identical" if differing == 0 else f"{differing} run(s) differ")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
