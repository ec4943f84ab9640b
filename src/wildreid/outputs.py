"""Files of a run, each written atomically: submission, detailed candidates, report, run record."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .files import atomic_path, write_csv_atomic, write_text_atomic
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


def write_run(result, out_dir: str | Path, *, evaluation: dict | None = None, report: bool = True) -> dict:
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
        "timings": result.timings,
        "skipped_images": len(result.failures),
        "evaluation": evaluation,
    }
    write_text_atomic(written["run"], json.dumps(_jsonable(record), indent=2))
    if report:
        pictures = {name: _png(figure) for name, figure in figures_for_run(result).items()}
        for name, data in pictures.items():
            with atomic_path(out_dir / "plots" / f"{name}.png") as temporary:
                temporary.write_bytes(data)
        written["report"] = out_dir / "report.html"
        write_text_atomic(written["report"], render_report(result, evaluation, pictures))
    return written


def _jsonable(value):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _jsonable(value.item())
    return value
