"""Commands that look without describing a photo: `evaluate` a submission, `validate` a dataset,
list the `presets`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from wildreid.cli.app import app, console, stdout
from wildreid.cli.identify import print_evaluation
from wildreid.cli.options import AllowOutsidePaths, DatasetColumns, DatasetRoot
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
    """List the named configurations, or print one in full."""
    if name:
        stdout.print_json(get_preset(name).to_json())
        return
    table = Table("preset", "backbone", "threshold", "description")
    for preset in PRESETS.values():
        table.add_row(preset.name, preset.backbone, str(preset.threshold), preset.description)
    stdout.print(table)


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
