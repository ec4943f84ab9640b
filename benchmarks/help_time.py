"""How long `wildreid --help` takes to start, and what it spends the time importing.

    python benchmarks/help_time.py                       # 9 runs of each command, about 20 s
    python benchmarks/help_time.py --runs 15 --command "identify --help"

Each run is a fresh interpreter (`python -m wildreid ARGS`, output discarded), timed from start
to exit. A baseline, `python -c "import typer"` (the least any Typer command line pays), runs
interleaved with it in the same loop, so both see the same load. Then one more run under
`python -X importtime` lists the slowest imports: third-party packages by their cumulative time,
and wildreid's own modules by their own time. This tree's `src/` comes first on PYTHONPATH.
A benchmark, not a test: wall times depend on the machine and its load (printed beside them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCE), *filter(None, [env.get("PYTHONPATH")])])
    env["COLUMNS"] = "80"
    return env


def wall_time(arguments: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment(), check=True)
    return time.perf_counter() - started


def import_times(arguments: list[str]) -> list[tuple[str, int, int]]:
    """(module, own microseconds, cumulative microseconds) from `python -X importtime`."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        check=True,
    )
    rows = []
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((name.strip(), int(own), int(cumulative)))
    return rows


def slowest(rows: list[tuple[str, int, int]], top: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Third-party top-level packages by cumulative time; wildreid's modules by their own time."""
    packages: dict[str, int] = {}
    for name, _, cumulative in rows:
        if "." not in name and name != "wildreid" and not name.startswith("_"):
            packages[name] = max(packages.get(name, 0), cumulative)
    ours = [(name, own) for name, own, _ in rows if name.startswith("wildreid")]
    by_time = lambda item: -item[1]  # noqa: E731
    return sorted(packages.items(), key=by_time)[:top], sorted(ours, key=by_time)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (median reported)")
    parser.add_argument("--command", default="--help", help="wildreid's arguments, e.g. 'identify --help'")
    parser.add_argument("--top", type=int, default=10, help="slowest imports listed")
    options = parser.parse_args()

    command = [sys.executable, "-m", "wildreid", *shlex.split(options.command)]
    baseline = [sys.executable, "-c", "import typer"]
    wall_time(command)  # warm the file cache and the bytecode once, untimed
    times: dict[str, list[float]] = {"wildreid": [], "typer": []}
    for _ in range(options.runs):
        times["wildreid"].append(wall_time(command))
        times["typer"].append(wall_time(baseline))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())

    print(f"date {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; load {load}")
    print(f"python {platform.python_version()} ({sys.executable})")
    for label, shown in (("wildreid", f"python -m wildreid {options.command}"), ("typer", 'python -c "import typer"')):
        values = times[label]
        print(
            f"{shown:<40} median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)"
        )
    packages, ours = slowest(import_times(command[1:]), options.top)
    print("slowest packages imported (cumulative ms):")
    print("  " + ", ".join(f"{name} {micro / 1000:.0f}" for name, micro in packages))
    print("slowest wildreid modules (own ms):")
    print("  " + ", ".join(f"{name.removeprefix('wildreid.')} {micro / 1000:.0f}" for name, micro in ours))


if __name__ == "__main__":
    main()
