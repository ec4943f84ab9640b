"""Files of a run, each written atomically: submission, detailed candidates, report, run record."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .files import atomic_path, jsonable, write_csv_atomic, write_text_atomic
from .metrics import evaluate
from .report import _png, figures_for_run, query_truth, render_report


def write_submission(result, path: str | Path) -> None:
    """Kaggle format: header ``image_id,identity``, one row per query in metadata order."""
    write_csv_atomic(result.predictions, path)


def evaluate_if_possible(result) -> dict | None:
    """The metric table when every query's truth is known, else None."""
    if query_truth(result) is None:
        return None
    return evaluate(result.dataset, result.predictions, result.candidates)


def write_run(result, out_dir: str | Path, *, evaluation: dict | None = None, report: bool = True,
              match_examples: int = 4) -> dict:
    """Write all outputs of ``result`` under ``out_dir``; return {name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"submission": out_dir / "submission.csv", "candidates": out_dir / "candidates.csv",
               "run": out_dir / "run.json"}
    write_submission(result, written["submission"])
    write_csv_atomic(result.candidates, written["candidates"])
    if len(result.failures):
        written["failures"] = out_dir / "failures.csv"
        write_csv_atomic(result.failures, written["failures"])
    record = {
        "source": result.dataset.source,
        "preset": result.preset.to_dict(),
        "thresholds": result.thresholds,
        "threshold_choices": {g: c.summary() for g, c in result.threshold_choices.items()},
        "notes": result.notes,
        "timings": result.timings,
        "skipped_images": len(result.failures),
        "evaluation": evaluation,
    }
    write_text_atomic(written["run"], json.dumps(jsonable(record), indent=2))
    for group, calibration in result.calibrations.items():
        # The calibrations are part of the run: the fused scores cannot be read without them.
        written[f"calibration_{group}"] = out_dir / f"calibration_{_safe(group)}.json"
        write_text_atomic(written[f"calibration_{group}"], calibration.to_json())
    if report:
        pictures = {name: _png(figure) for name, figure in figures_for_run(result).items()}
        pictures.update(match_pictures(result, per_dataset=match_examples))
        for name, data in pictures.items():
            with atomic_path(out_dir / "plots" / f"{name}.png") as temporary:
                temporary.write_bytes(data)
        written["report"] = out_dir / "report.html"
        write_text_atomic(written["report"], render_report(result, evaluation, pictures))
    return written


def match_pictures(result, per_dataset: int = 4, candidates_shown: int = 2) -> dict[str, bytes]:
    """For the first queries of each dataset (when local matching ran): the query beside its top
    candidates' best photos, with the verified keypoint correspondences drawn."""
    if not result.calibrations or per_dataset <= 0:
        return {}
    import numpy as np

    from .local import get_method
    from .viz import draw_matches, to_png
    from .data import ImageReadError, read_image

    method = get_method(result.preset.local, **result.preset.local_options)
    path_of = dict(zip(result.dataset.table["image_id"], result.dataset.table["path"]))
    pictures = {}
    for group, rows in result.candidates.groupby("dataset", sort=False):
        for row in rows.head(per_dataset).itertuples():
            panels = []
            for rank in range(1, candidates_shown + 1):
                match_id = getattr(row, f"match_{rank}", None)
                if not isinstance(match_id, str):
                    continue
                try:
                    picture, _ = draw_matches(read_image(path_of[row.image_id]), read_image(path_of[match_id]),
                                              method, result.preset.fusion.geometry,
                                              caption=f"#{rank} {getattr(row, f'identity_{rank}')} "
                                                      f"P={getattr(row, f'score_{rank}'):.2f}")
                except ImageReadError:
                    continue
                panels.append(picture)
            if panels:
                width = max(p.shape[1] for p in panels)
                padded = [np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
                pictures[f"matches_{_safe(group)}_{_safe(row.image_id)}"] = to_png(np.concatenate(padded))
    return pictures


def _safe(name) -> str:
    """A file-name-safe version of a dataset name or image id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
