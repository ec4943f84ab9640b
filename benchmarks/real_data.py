"""Accuracy, wall time and peak memory of presets on the real datasets in ../shared/data.

    python benchmarks/real_data.py                       # offline preset, all datasets
    python benchmarks/real_data.py --presets offline,fusion --datasets NyalaData
    python benchmarks/real_data.py --datasets NyalaData --backbone local-dir:bench-out/train_nyala

``--backbone`` replaces the presets' descriptor (with its own preprocessing), e.g. a model from
``wildreid train``; rows and run folders are then labelled ``PRESET+trained``.

``--foreground cam`` describes every photo by its automatic foreground box (foreground.py,
docs/regions.md); rows are then labelled ``PRESET+cam`` and carry the foreground's own time
(``foreground_ms_per_image``: class-activation boxes of all the dataset's photos, per photo).

With the offline preset it also prints ``seed-rule``: the seed's decision rule (top-1 cosine,
new_individual below 0.6) applied to the same run's scores.

Each (preset, dataset) runs in its own process with an empty embedding cache, so the wall time
is a cold run (model load, extraction, matching, outputs) and the peak memory is that run's own
(max RSS); ``--cache-dir DIR`` keeps descriptors and keypoints across runs instead (accuracy
runs of many settings), ``--set KEY=JSON`` changes one preset field (``--set views=same``,
``--set top_m=2``, ``--set adapt=auto``: the adaptation stage, issue 20)
and ``--label`` names the row; with ``--cache-dir`` each pair's keypoint
counts are also kept there (they are deterministic), so settings that meet the same pairs share
them.

Also prints top-1 on LionData's published closed-set split (paper_split.csv:
train -> database, test -> query; published MegaDescriptor-L-384 0.252, T-224 0.148).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wildreid.data.dataset import DATABASE, QUERY, Dataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = ["LionData", "NyalaData", "Holstein2025"]
CLOSED_SPLIT = "LionData-paper-split"


def benchmark_dataset(name: str) -> Dataset:
    """The dataset measured as ``name``: a dataset of ../shared/data, or LionData's closed split."""
    if name == CLOSED_SPLIT:
        return closed_split(SHARED / "LionData")
    dataset = load_dataset(SHARED / name)
    table = dataset.table
    if name == "Holstein2025":
        # The clip (recording start_end in the file name) marks near-duplicate frames, so the
        # label-free threshold simulation does not match a frame with its own clip. Only the
        # time stamps are used, never the identity folder.
        table["clip"] = table["original_path"].str.rsplit("/", n=1).str[-1].str.split("_").str[:2].str.join("_")
    dataset.table = table.drop(columns=["original_path"], errors="ignore")
    return dataset


@dataclass
class LabelledVectors:
    """A benchmark dataset's global vectors with their labels, for the measurements that need no
    gallery (hubness.py, known_simulation.py)."""

    database: np.ndarray
    identities: np.ndarray  # (D,) str
    clips: np.ndarray | None  # (D,) str: the photos' clips where the dataset has them
    queries: np.ndarray
    query_identities: np.ndarray  # (Q,) str


def labelled_vectors(name: str, backbone, cache_dir: Path) -> LabelledVectors:
    """The vectors of ``name``'s database and queries by ``backbone`` (read from ``cache_dir``
    where extracted before)."""
    from wildreid.describe.extract import extract_embeddings

    dataset = benchmark_dataset(name)
    database, queries = dataset.database, dataset.queries

    def described(table: pd.DataFrame) -> np.ndarray:
        return extract_embeddings(table["path"].tolist(), backbone, cache_dir=cache_dir, progress=False).embeddings

    return LabelledVectors(
        described(database),
        database["identity"].to_numpy().astype(str),
        database["clip"].to_numpy().astype(str) if "clip" in database else None,
        described(queries),
        queries["identity"].to_numpy().astype(str),
    )


def closed_split(data: Path) -> Dataset:
    """LionData with its published split (paper_split.csv): train -> database, test -> query."""
    dataset = load_dataset(data)
    split = pd.read_csv(data / "paper_split.csv", dtype=str)
    part = dict(zip(split["image_id"], split["paper_split"]))
    table = dataset.table.copy()
    table["split"] = table["image_id"].map(lambda i: DATABASE if part[i] == "train" else QUERY)
    return Dataset(table, f"{data} (paper_split.csv)")


def preset_changes(settings: list[str]) -> dict:
    """``KEY=JSON`` pairs (``views="same"``, ``fusion.shortlist=30``) as changes of a preset."""
    changes: dict = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # a bare word: a string
        if key.startswith("fusion."):
            changes.setdefault("fusion", {})[key.removeprefix("fusion.")] = parsed
        else:
            changes[key] = parsed
    return changes


def changed_preset(preset, changes: dict):
    from wildreid.local.pairs import FusionSettings

    changes = dict(changes)
    if "fusion" in changes:
        fusion = {**preset.fusion.__dict__, **changes["fusion"]}
        fusion["scores"] = tuple(fusion["scores"])
        changes["fusion"] = FusionSettings(**fusion)
    if "extra_local" in changes:
        changes["extra_local"] = tuple(changes["extra_local"])
    return preset.replace(**changes)


def memoise_counts(cache_dir: Path):
    """Keep every pair's keypoint counts in ``cache_dir`` across runs, keyed by the method and both
    photos' features (content hashes): USAC-MAGSAC is deterministic (OpenCV seeds it the same
    each call), so a run of another setting that meets the same pairs gets the same counts
    without recomputing them. Only for benchmarks of many settings; the answers do not change."""
    import hashlib
    import pickle

    import numpy as np

    from wildreid.gallery import shortlist
    from wildreid.local import pairs as fusion

    path = cache_dir / "inlier-memo.pkl"
    memo = pickle.loads(path.read_bytes()) if path.is_file() else {}
    digests: dict[int, tuple] = {}
    original = fusion.pair_counts

    def digest(found):
        if found is None:
            return None
        key = id(found)
        if key not in digests:
            content = hashlib.sha1(found.keypoints.tobytes() + found.descriptors.tobytes()).hexdigest()[:20]
            digests[key] = (found, content)  # holding the object keeps its id unique
        return digests[key][1]

    def counted(method, left, right, rows, columns, wanted, geometry="homography", match_confidence=0.5, workers=0):
        # An inlier count does not depend on the confidence cut (its key is the one earlier
        # memos used); a count of confident matches does not depend on the geometry.
        def key(name, r, c):
            pair = (digest(left[r]), digest(right[c]))
            if name == "inliers":
                return (method.config_key(), geometry, *pair)
            return (method.config_key(), name, match_confidence, *pair)

        keys = {name: [key(name, r, c) for r, c in zip(rows, columns)] for name in wanted}
        missing = [i for i in range(len(rows)) if any(keys[name][i] not in memo for name in wanted)]
        if missing:
            fresh = original(
                method, left, right, rows[missing], columns[missing], wanted, geometry, match_confidence, workers
            )
            for name in wanted:
                memo.update((keys[name][i], value) for i, value in zip(missing, fresh[name]))
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(pickle.dumps(memo))
            temporary.replace(path)
        return {name: np.array([memo[k] for k in keys[name]], dtype=np.float64) for name in wanted}

    # shortlist.py counts the main method's pairs through its own name, the extra methods'
    # through fusion.inlier_counts, which calls fusion.pair_counts.
    shortlist.pair_counts = fusion.pair_counts = counted


def run_single(
    name: str,
    preset_name: str,
    out: Path,
    backbone: str | None = None,
    foreground: str | None = None,
    whole_photo_keypoints: bool = False,
    changes: dict | None = None,
    label: str | None = None,
    cache_dir: Path | None = None,
) -> dict:
    from wildreid.decide.decision import decide
    from wildreid.evaluate.metrics import evaluate
    from wildreid.evaluate.outputs import evaluate_if_possible, write_run
    from wildreid.gallery.pipeline import identify
    from wildreid.presets import get_preset

    started = time.perf_counter()
    if cache_dir is not None:
        memoise_counts(cache_dir)
    preset = changed_preset(get_preset(preset_name), changes or {})
    label = label or preset_name
    if backbone:
        # As `wildreid identify --backbone`: the model's own preprocessing replaces the preset's.
        preset = preset.replace(backbone=backbone, preprocess=None)
        label = f"{label}+trained"
    if foreground:
        preset = preset.replace(foreground=foreground)
        label = f"{label}+{foreground}"
    if whole_photo_keypoints:
        preset = preset.replace(region_keypoints=False)
        label = f"{label}+whole-keypoints"
    if name == CLOSED_SPLIT:
        preset = preset.replace(threshold=None)
    with tempfile.TemporaryDirectory() as scratch:
        dataset = benchmark_dataset(name)
        result = identify(dataset, preset, cache_dir=cache_dir or Path(scratch) / "cache", progress=False)
        evaluation = evaluate_if_possible(result)
        write_run(result, out / f"{label}-{name}", evaluation=evaluation)
    wall = time.perf_counter() - started
    rows = [_row(name, label, evaluation, result, dataset, wall)]
    if preset_name == "offline" and not (backbone or foreground or changes) and name != CLOSED_SPLIT:
        # The seed's decision rule (top-1 cosine, new_individual below 0.6) on the same scores:
        # the MegaDescriptor weights cannot be downloaded here, the rule can be measured.
        seed_rule = result.candidates.copy()
        seed_rule["prediction"] = decide(seed_rule["identity_1"].to_numpy(), seed_rule["top1_score"].to_numpy(), 0.6)
        predictions = seed_rule[["image_id", "prediction"]].rename(columns={"prediction": "identity"})
        result.thresholds = {group: 0.6 for group in result.thresholds}
        result.threshold_choices = {}
        rows.append(_row(name, "seed-rule", evaluate(dataset, predictions, seed_rule), result, dataset, wall))
    for row in rows:
        row["backbone"] = preset.backbone
    return rows


def _row(name, preset_name, evaluation, result, dataset, wall) -> dict:
    figures = next(iter(evaluation["per_dataset"].values()))
    return {
        "dataset": name,
        "preset": preset_name,
        "score": figures["score"],
        "baks": figures["baks"],
        "baus": figures["baus"],
        "top1": figures["top1"],
        "top5": figures["top5"],
        "auc": figures["auc_new_vs_known"],
        "ari": figures.get("ari"),  # of the query grouping (None without grouping)
        # The adaptation each dataset's gallery part chose, with its cross-fitted validation figures.
        "adaptations": result.adaptations,
        "threshold": next(iter(result.thresholds.values())),
        "simulated_score": next((c.simulated_score for c in result.threshold_choices.values()), None),
        "queries": figures["queries"],
        "images": len(dataset.table),
        "wall_s": wall,
        "timings": result.timings,
        "notes": result.notes,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "foreground_ms_per_image": 1000
        * (result.timings.get("build_foreground_s", 0) + result.timings.get("queries_foreground_s", 0))
        / len(dataset.table),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="offline,fusion")
    parser.add_argument("--datasets", default=",".join(DATASETS + [CLOSED_SPLIT]))
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--backbone", help="descriptor replacing the presets' own, e.g. local-dir:DIR")
    parser.add_argument("--foreground", help="automatic foreground for every photo, e.g. cam (docs/regions.md)")
    parser.add_argument(
        "--whole-photo-keypoints", action="store_true", help="keypoints of the whole photo, descriptors of the region"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="change a preset field for this run, e.g. views=same, mirror=true, top_m=2, fusion.shortlist=30",
    )
    parser.add_argument("--label", help="row label instead of the preset's name (e.g. the change measured)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="keep descriptors and keypoints here across runs (default: an empty cache per run, a cold run)",
    )
    parser.add_argument("--single", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.single:
        name, preset = arguments.single.split(":")
        rows = run_single(
            name,
            preset,
            arguments.out,
            arguments.backbone,
            arguments.foreground,
            arguments.whole_photo_keypoints,
            preset_changes(arguments.set),
            arguments.label,
            arguments.cache_dir,
        )
        print(json.dumps(rows))
        return

    rows = []
    for preset in arguments.presets.split(","):
        for name in arguments.datasets.split(","):
            command = [sys.executable, __file__, "--single", f"{name}:{preset}", "--out", str(arguments.out)]
            if arguments.backbone:
                command += ["--backbone", arguments.backbone]
            if arguments.foreground:
                command += ["--foreground", arguments.foreground]
            if arguments.whole_photo_keypoints:
                command += ["--whole-photo-keypoints"]
            for setting in arguments.set:
                command += ["--set", setting]
            if arguments.label:
                command += ["--label", arguments.label]
            if arguments.cache_dir:
                command += ["--cache-dir", str(arguments.cache_dir)]
            process = subprocess.run(command, capture_output=True, text=True)
            if process.returncode != 0:
                print(process.stderr, file=sys.stderr)
                raise SystemExit(f"{preset} on {name} failed")
            for row in json.loads(process.stdout.strip().splitlines()[-1]):
                rows.append(row)
                print(
                    f"{row['preset']:>9} {name:<22} score {row['score']:.3f}  BAKS {row['baks']:.3f}  "
                    f"BAUS {row['baus']:.3f}  top-1 {row['top1']:.3f}  top-5 {row['top5']:.3f}  "
                    f"thr {row['threshold'] if row['threshold'] is None else round(row['threshold'], 3)}  "
                    f"sim {None if row['simulated_score'] is None else round(row['simulated_score'], 3)}  "
                    f"AUC {row['auc']:.3f}  ARI {row['ari'] if row['ari'] is None else round(row['ari'], 3)}  "
                    f"adapt {','.join(a['chosen'] for a in row['adaptations'].values()) or '-'}  "
                    f"{row['wall_s']:.1f} s  {row['peak_rss_mb']:.0f} MB  "
                    f"foreground {row['foreground_ms_per_image']:.0f} ms/img",
                    flush=True,
                )
    arguments.out.mkdir(parents=True, exist_ok=True)
    # One record for all runs: rows of this run replace earlier ones of the same preset and dataset.
    record = arguments.out / "real_data.json"
    measured = {(row["preset"], row["dataset"]) for row in rows}
    earlier = json.loads(record.read_text()) if record.exists() else []
    kept = [row for row in earlier if (row["preset"], row["dataset"]) not in measured]
    record.write_text(json.dumps(kept + rows, indent=2))


if __name__ == "__main__":
    main()
