"""The files of a run: submission, detailed candidates, report, run record.

They appear together or not at all: ``write_run`` writes them into a temporary folder beside the
output folder and then swaps that folder in, so a full disk, a read-only folder or a killed run
never leaves new CSVs beside an old report, and a later run never mixes files with an earlier one.

Each kind of file comes from a writer registered in ``OUTPUTS``, called in registration order:
``writer(result, folder, request) -> {name: path}`` writes its files into ``folder`` and returns
them (nothing, when the run has nothing of its kind: no groups.csv without grouping). To add an
output, write a file of this wing with a function under ``@OUTPUTS.register("name")`` and add its
module to ``OUTPUTS``' modules below. Submission formats are registered in ``SUBMISSION_FORMATS``:
a function from the result to the table ``submission.csv`` holds.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wildreid.evaluate.metrics import evaluate
from wildreid.evaluate.report import _png, figures_for_run, query_truth, render_report
from wildreid.util.files import atomic_folder, jsonable, write_bytes_atomic, write_csv_atomic, write_text_atomic
from wildreid.util.registry import Registry

# The columns of groups.csv besides image_id and dataset (IdentifyResult.candidates has them all).
GROUP_COLUMNS = ("group", "group_kind", "group_size", "group_identity", "links_in_group", "best_gallery_link")
RUN_RECORD = "run.json"  # what marks a folder as a wildreid run (one we may replace)


@dataclass(frozen=True)
class RunRequest:
    """What write_run was asked for, as every writer sees it."""

    evaluation: dict | None = None
    report: bool = True
    match_examples: int = 4
    format: str = "animalclef2025"  # of submission.csv: a name in SUBMISSION_FORMATS


Writer = Callable[..., dict[str, Path]]  # (result, folder, request) -> {name: path written}
OUTPUTS: Registry[Writer] = Registry("run output", modules=())
SUBMISSION_FORMATS: Registry[Callable] = Registry("submission format", modules=())


@SUBMISSION_FORMATS.register("animalclef2025")
def identities_submission(result):
    """``image_id,identity``: a known individual or new_individual."""
    return result.predictions


@SUBMISSION_FORMATS.register("animalclef2026")
def clusters_submission(result):
    """``image_id,cluster``."""
    return result.clusters


def write_submission(result, path: str | Path, format: str = "animalclef2025") -> None:
    """Kaggle formats, one row per query in metadata order (SUBMISSION_FORMATS)."""
    if format not in SUBMISSION_FORMATS:
        raise ValueError(f"submission format '{format}': choose one of {', '.join(SUBMISSION_FORMATS)}.")
    write_csv_atomic(SUBMISSION_FORMATS.get(format)(result), path)


def evaluate_if_possible(result) -> dict | None:
    """The metric table when every query's truth is known, else None."""
    if query_truth(result) is None:
        return None
    return evaluate(result.dataset, result.predictions, result.candidates)


class OutputError(ValueError):
    """The run's outputs cannot be written where asked; the message says why and what to do."""


def check_out_dir(out_dir: str | Path) -> Path:
    """Refuse, before any work, an output folder that write_run would not be allowed to replace:
    a file, or a folder holding something else than a previous run (its files would be lost)."""
    out_dir = Path(out_dir)
    try:
        if out_dir.exists() or out_dir.is_symlink():
            if not out_dir.is_dir():
                raise OutputError(
                    f"--out {out_dir}: this is a file, not a folder; give a folder for the "
                    "run's outputs (it is created if needed)."
                )
            if any(out_dir.iterdir()) and not (out_dir / RUN_RECORD).is_file():
                raise OutputError(
                    f"--out {out_dir}: this folder holds other files and no {RUN_RECORD}, so it "
                    "is not an earlier wildreid run; its content would be replaced. Give a new or "
                    "empty folder, or an earlier run's folder."
                )
    except OSError as error:
        raise OutputError(
            f"--out {out_dir}: cannot be used ({error.strerror or error}); give another folder."
        ) from None
    return out_dir


def write_run(
    result,
    out_dir: str | Path,
    *,
    evaluation: dict | None = None,
    report: bool = True,
    match_examples: int = 4,
    format: str = "animalclef2025",
) -> dict:
    """Write all outputs of ``result`` as the folder ``out_dir``; return {name: path}.

    Everything is written into a temporary folder beside ``out_dir`` which then takes its place
    (an earlier run there is removed, never mixed with this one). On any failure (full disk,
    read-only file system) the temporary folder is deleted, an earlier run stays as it was, and
    OutputError says what happened."""
    out_dir = check_out_dir(out_dir)
    try:
        with atomic_folder(out_dir) as staging:
            names = _write_files(
                result, staging, evaluation=evaluation, report=report, match_examples=match_examples, format=format
            )
    except OSError as error:
        raise _output_error(out_dir, error) from None
    return {name: out_dir / relative for name, relative in names.items()}


def _output_error(out_dir: Path, error: OSError) -> OutputError:
    reason = error.strerror or str(error)
    advice = {
        errno.ENOSPC: "free some space or choose another --out",
        errno.EDQUOT: "free some space or choose another --out",
        errno.EROFS: "the file system is read-only: choose another --out",
        errno.EACCES: "choose a folder you may write to",
        errno.EPERM: "choose a folder you may write to",
    }.get(error.errno, "choose another --out")
    return OutputError(
        f"--out {out_dir}: the run's outputs could not be written ({reason}); nothing was "
        f"changed there (an earlier run in it is intact). To keep this run's results, {advice}."
    )


def _write_files(
    result, out_dir: Path, *, evaluation: dict | None, report: bool, match_examples: int, format: str
) -> dict:
    """Write the outputs into ``out_dir`` (the staging folder); return {name: path relative to it}."""
    request = RunRequest(evaluation, report, match_examples, format)
    written = {}
    for write in OUTPUTS.values():
        written.update(write(result, out_dir, request))
    return {name: path.relative_to(out_dir) for name, path in written.items()}


@OUTPUTS.register("submission")
def write_submission_file(result, folder: Path, request: RunRequest) -> dict[str, Path]:
    write_submission(result, folder / "submission.csv", request.format)
    return {"submission": folder / "submission.csv"}


@OUTPUTS.register("candidates")
def write_candidates(result, folder: Path, request: RunRequest) -> dict[str, Path]:
    write_csv_atomic(result.candidates, folder / "candidates.csv")
    return {"candidates": folder / "candidates.csv"}


@OUTPUTS.register("run")
def write_run_record(result, folder: Path, request: RunRequest) -> dict[str, Path]:
    record = {
        "source": result.dataset.source,
        "preset": result.preset.to_dict(),
        "thresholds": result.thresholds,
        "threshold_choices": {g: c.summary() for g, c in result.threshold_choices.items()},
        "adaptations": result.adaptations,
        "fusion_rules": result.fusion_rules,
        "submission_format": request.format,
        "grouping": None
        if result.grouping is None
        else {
            name: {
                "method": grouping.method,
                "link_threshold": grouping.link_threshold,
                "known_threshold": grouping.known_threshold,
                "queries": int(grouping.graph.queries),
                "edges": int(len(grouping.graph.left)),
            }
            for name, grouping in result.grouping.datasets.items()
        },
        "notes": result.notes,
        "timings": result.timings,
        "skipped_images": len(result.failures),
        "photos_without_animal": None if result.no_animal is None else len(result.no_animal),
        "evaluation": request.evaluation,
    }
    write_text_atomic(folder / RUN_RECORD, json.dumps(jsonable(record), indent=2))
    return {"run": folder / RUN_RECORD}


@OUTPUTS.register("groups")
def write_groups(result, folder: Path, request: RunRequest) -> dict[str, Path]:
    if result.grouping is None:
        return {}
    write_csv_atomic(result.candidates[["image_id", "dataset", *GROUP_COLUMNS]], folder / "groups.csv")
    return {"groups": folder / "groups.csv"}


@OUTPUTS.register("failures")
def write_failures(result, folder: Path, request: RunRequest) -> dict[str, Path]:
    if not len(result.failures):
        return {}
    write_csv_atomic(result.failures, folder / "failures.csv")
    return {"failures": folder / "failures.csv"}


@OUTPUTS.register("no_animal")
def write_no_animal(result, folder: Path, request: RunRequest) -> dict[str, Path]:
    if result.no_animal is None:  # MegaDetector detections were used: always say which photos gave no row
        return {}
    write_csv_atomic(result.no_animal, folder / "no_animal.csv")
    return {"no_animal": folder / "no_animal.csv"}


@OUTPUTS.register("calibrations")
def write_calibrations(result, folder: Path, request: RunRequest) -> dict[str, Path]:
    """The calibrations are part of the run: the fused scores cannot be read without them."""
    written = {}
    for group, calibration in result.calibrations.items():
        written[f"calibration_{group}"] = folder / f"calibration_{_safe(group)}.json"
        write_text_atomic(written[f"calibration_{group}"], calibration.to_json())
    return written


@OUTPUTS.register("report")
def write_report(result, folder: Path, request: RunRequest) -> dict[str, Path]:
    if not request.report:
        return {}
    pictures = {name: _png(figure) for name, figure in figures_for_run(result).items()}
    matches, captions = match_pictures(result, per_dataset=request.match_examples)
    pictures.update(matches)
    for name, data in pictures.items():
        write_bytes_atomic(folder / "plots" / f"{name}.png", data)
    page = render_report(result, request.evaluation, pictures, folder=folder, captions=captions)
    write_text_atomic(folder / "report.html", page)
    return {"report": folder / "report.html"}


def match_pictures(result, per_dataset: int = 4, candidates_shown: int = 2) -> tuple[dict[str, bytes], dict[str, str]]:
    """For the least certain queries of each dataset (best score closest to the threshold), when
    local matching ran: the query beside its top candidates' best photos, with the verified
    keypoint correspondences drawn. Returns the pictures and a caption for each, by name."""
    if not result.calibrations or per_dataset <= 0:
        return {}, {}
    import numpy as np
    import pandas as pd

    from wildreid.data.images import ImageReadError
    from wildreid.data.regions import regions_of
    from wildreid.evaluate.pictures import draw_matches, shown_region, to_png
    from wildreid.evaluate.summary import least_certain_first
    from wildreid.local.base import get_method

    method = get_method(result.preset.local, **result.preset.local_options)
    table = result.dataset.table
    path_of = dict(zip(table["image_id"], table["path"]))
    # The pictures show what the keypoints were taken from.
    regions = regions_of(table, result.preset.region_margin) if result.preset.region_keypoints else None
    region_of = dict(zip(table["image_id"], regions or [None] * len(table)))
    pictures, captions = {}, {}
    for group, rows in result.candidates.groupby("dataset", sort=False):
        for row in least_certain_first(rows).head(per_dataset).itertuples():
            panels = []
            for rank in range(1, candidates_shown + 1):
                match_id = getattr(row, f"match_{rank}", None)
                if not isinstance(match_id, str):
                    continue
                try:
                    picture, _ = draw_matches(
                        shown_region(path_of[row.image_id], region_of[row.image_id]),
                        shown_region(path_of[match_id], region_of[match_id]),
                        method,
                        result.preset.fusion.geometry,
                        caption=f"#{rank} {getattr(row, f'identity_{rank}')}  "
                        f"{result.preset.score_name} {getattr(row, f'score_{rank}'):.2f}",
                    )
                except ImageReadError:
                    continue
                panels.append(picture)
            if panels:
                width = max(p.shape[1] for p in panels)
                padded = [np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
                name = f"matches_{_safe(group)}_{_safe(row.image_id)}"
                pictures[name] = to_png(np.concatenate(padded))
                threshold = "none" if pd.isna(row.threshold) else f"{row.threshold:.2f}"
                captions[name] = (
                    f"{group}: query {row.image_id} (left), answered {row.prediction}; threshold {threshold}"
                )
    return pictures, captions


def _safe(name) -> str:
    """A file-name-safe version of a dataset name or image id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
