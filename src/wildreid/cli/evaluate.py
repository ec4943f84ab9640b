"""Commands that look without describing a photo: `evaluate` a submission, `validate` a dataset,
list the `presets`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from wildreid.cli.app import app, console, print_columns, print_legend, stdout
from wildreid.cli.identify import print_evaluation
from wildreid.cli.options import AllowOutsidePaths, DatasetColumns, DatasetRoot
from wildreid.evaluate.meanings import METRICS
from wildreid.presets import PRESETS, get_preset


@app.command()
def evaluate(
    root: Annotated[Path, typer.Argument(help="The dataset with true identities for the queries.")],
    submission: Annotated[Path, typer.Argument(help="A submission CSV (image_id,identity).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    candidates: Annotated[
        Optional[Path],
        typer.Option(help="candidates.csv of the run, for top-1/top-5 accuracy and the new-vs-known AUC."),
    ] = None,
    columns: DatasetColumns = DatasetColumns(),
):
    """Score a submission with the AnimalCLEF2025 metric: BAKS, BAUS, sqrt(BAKS*BAUS) per dataset, mean."""
    from wildreid.evaluate.metrics import evaluate as run_evaluate
    from wildreid.evaluate.metrics import load_candidates, load_submission

    # Evaluation never opens an image.
    dataset = columns.load(root, allow_outside_paths=True, check_files=False)
    queries = dataset.queries["image_id"]
    detail = load_candidates(candidates, queries) if candidates else None
    figures = run_evaluate(dataset, load_submission(submission, queries=queries), detail)
    if as_json:
        from wildreid.util.files import jsonable

        stdout.print_json(json.dumps(jsonable(figures)))
    else:
        print_evaluation(figures)


@app.command()
def presets(name: Annotated[Optional[str], typer.Argument(help="Show one preset in full.")] = None):
    """List the named configurations (whether each needs a download, its speed and accuracy as
    measured on real data), or print one in full."""
    if name:
        stdout.print_json(get_preset(name).to_json())
        return
    from wildreid.evaluate.measured import MEASURED, PHOTOS, RUNS, SOURCE

    rows = list(PRESETS)
    columns = [("download", [download_cell(PRESETS[preset]) for preset in rows])]
    columns.append(("s/photo", [speed_cell(MEASURED.get(preset, ())) for preset in rows]))
    scores = {preset: {m.dataset: m.score for m in MEASURED.get(preset, ())} for preset in rows}
    for dataset in PHOTOS:  # headed Lion, Nyala, Holstein: a column fits 80 characters
        cells = [f"{scores[p][dataset]:.3f}" if dataset in scores[p] else "-" for p in rows]
        columns.append((dataset.removesuffix("2025").removesuffix("Data"), cells))
    print_columns(rows, columns, cell_width=9)
    measured = list(dict.fromkeys(f"`{command}`, {when}" for command, when in (RUNS[p] for p in rows if p in RUNS)))
    print_legend(
        [
            ("download", DOWNLOAD_MEANING),
            ("s/photo", SPEED_MEANING),
            ("score", f"{METRICS['score'][1]}. Datasets {', '.join(PHOTOS)}; thresholds chosen without query labels"),
            ("measured", f"{SOURCE}: {'; '.join(measured)}"),
            (NOT_MEASURED, "its weights could not be downloaded on the machine that measured"),
        ]
    )
    stdout.print("`wildreid presets NAME` prints one preset in full.", highlight=False)


NOT_MEASURED = "not measured here"
DOWNLOAD_MEANING = (
    "none: the weights ship in a Python package; yes: fetched from the Hugging Face hub on first use; "
    "cached: already in this machine's Hugging Face cache (looked up without the network); "
    "*: also keypoint weights that wildreid never downloads, copied by hand (README)"
)
SPEED_MEANING = (
    "seconds per photo of a cold run (model load, descriptors, keypoints, calibration, outputs) over "
    "the datasets' photos, lowest-highest; 2-core VM without a GPU, shared with other jobs"
)


def download_cell(preset) -> str:
    """none, yes or cached (Hugging Face cache, looked up without the network); * when keypoint
    weights must also be copied by hand (wildreid never downloads them)."""
    from wildreid.describe.known_backbones import BACKBONES, needs_download
    from wildreid.local.base import LEARNED

    if preset.backbone not in BACKBONES:
        cell = "?"  # not a short name: a folder or a timm name, whose source only loading tells
    elif not BACKBONES.get(preset.backbone).source.startswith("hf-hub:"):
        cell = "none"
    else:
        cell = "yes" if needs_download(preset.backbone) else "cached"
    return cell + ("*" if preset.local in LEARNED else "")


def speed_cell(measured) -> str:
    if not measured:
        return NOT_MEASURED
    fastest, slowest = min(m.seconds_per_photo for m in measured), max(m.seconds_per_photo for m in measured)
    return f"{fastest:.2f}-{slowest:.2f}"


@app.command()
def validate(
    root: DatasetRoot,
    columns: DatasetColumns = DatasetColumns(),
    allow_outside_paths: AllowOutsidePaths = False,
):
    """Check a dataset (columns, ids, files) without extracting anything."""
    dataset = columns.load(root, allow_outside_paths=allow_outside_paths)
    table = Table("dataset", "database", "query", "identities")
    for name, rows in dataset.table.groupby("dataset", sort=False):
        table.add_row(
            str(name),
            str((rows["split"] == "database").sum()),
            str((rows["split"] == "query").sum()),
            str(rows.loc[rows["split"] == "database", "identity"].nunique()),
        )
    stdout.print(table)
    console.print("[green]valid[/]")
