"""The command line: thin wrappers over the pipeline stages."""

from __future__ import annotations

import json
import os
import sys
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .backbones import BackboneUnavailable, load_backbone
from .data import Dataset, DatasetError, load_dataset
from .presets import DEFAULT_PRESET, PRESETS, get_preset, parse_threshold

app = typer.Typer(
    help="wildreid: identify individual animals from photos.\n\n"
         "Give it a labelled database of photos and query photos; every query gets a known identity "
         "or 'new_individual'. Reads AnimalCLEF2025 metadata.csv folders, any CSV with path/identity/"
         "split columns, or a folder per identity plus a query folder. Writes an AnimalCLEF2025 "
         "submission, a detailed candidate table and an HTML report.",
    no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
console = Console(stderr=True)
stdout = Console()


def default_cache_dir() -> Path:
    return Path(os.environ.get("WILDREID_CACHE", Path.home() / ".cache" / "wildreid"))


def friendly_errors(command):
    """Errors a user can act on are printed as one message, not a traceback."""
    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (DatasetError, BackboneUnavailable, ValueError, KeyError, FileNotFoundError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            console.print(f"[bold red]error:[/] {message}", highlight=False, markup=False)
            raise typer.Exit(2) from None
    return wrapper


# Options shared by the commands that read a dataset.
QueryDir = Annotated[Optional[Path], typer.Option(
    help="Folder of query images; ROOT is then a folder with one sub-folder of photos per identity.")]
PathColumn = Annotated[str, typer.Option(help="CSV column with image paths (relative to the CSV's folder).")]
IdentityColumn = Annotated[str, typer.Option(help="CSV column with identities (empty for unknown queries).")]
SplitColumn = Annotated[str, typer.Option(help="CSV column saying 'database' or 'query'.")]
DatasetColumn = Annotated[str, typer.Option(
    help="CSV column grouping images into datasets; without it, the dataset is the folder name.")]
ImageIdColumn = Annotated[str, typer.Option(help="CSV column with image ids (default: the row number).")]
DatabaseValue = Annotated[str, typer.Option(help="Value of the split column that marks database images.")]
QueryValue = Annotated[str, typer.Option(help="Value of the split column that marks queries.")]
CacheDir = Annotated[Optional[Path], typer.Option(
    help="Where embeddings are cached (default $WILDREID_CACHE or ~/.cache/wildreid).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the embedding cache.")]
Device = Annotated[Optional[str], typer.Option(help="'cpu', 'cuda', 'cuda:1'... (default: a GPU if there is one).")]
PresetOption = Annotated[str, typer.Option(help=f"Named configuration: {', '.join(PRESETS)}. See `wildreid presets`.")]
BackboneOption = Annotated[Optional[str], typer.Option(
    help="Override the preset's descriptor: a short name (megadescriptor-l-384, efficientnet-lite0, ...), "
         "any timm name, hf-hub:ORG/NAME, or local-dir:FOLDER.")]


def _load(root: Path, query_dir, path_column, identity_column, split_column, dataset_column,
          image_id_column, database_value, query_value) -> Dataset:
    return load_dataset(root, query_dir=query_dir, path_column=path_column, identity_column=identity_column,
                        split_column=split_column, dataset_column=dataset_column,
                        image_id_column=image_id_column, database_value=database_value,
                        query_value=query_value)


@app.command()
@friendly_errors
def identify(
    root: Annotated[Path, typer.Argument(help="metadata.csv, a folder holding it, or a folder per identity.")],
    out: Annotated[Path, typer.Option(help="Output folder: submission.csv, candidates.csv, report.html, run.json.")],
    preset: PresetOption = DEFAULT_PRESET,
    backbone: BackboneOption = None,
    threshold: Annotated[Optional[str], typer.Option(
        help="Override the preset's threshold: a number, NAME=VALUE,... per dataset, 'auto' (chosen on "
             "the database by simulating new individuals), or 'none' (closed set).")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Candidates kept per query in candidates.csv.")] = None,
    all_datasets: Annotated[bool, typer.Option(
        "--all-datasets", help="Compare queries with every database image, not only their own dataset's.")] = False,
    report: Annotated[bool, typer.Option(help="Write report.html and plots.")] = True,
    query_dir: QueryDir = None, path_column: PathColumn = "path", identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split", dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id", database_value: DatabaseValue = "database",
    query_value: QueryValue = "query", cache_dir: CacheDir = None, no_cache: NoCache = False,
    device: Device = None,
):
    """Assign every query a known identity or new_individual; write the submission and the report."""
    from .outputs import evaluate_if_possible, write_run
    from .pipeline import identify as run_identify

    dataset = _load(root, query_dir, path_column, identity_column, split_column, dataset_column,
                    image_id_column, database_value, query_value)
    chosen = get_preset(preset)
    changes = {}
    if backbone:
        changes.update(backbone=backbone, preprocess=None)
    if threshold is not None:
        changes["threshold"] = parse_threshold(threshold)
    if top_k is not None:
        changes["top_k"] = top_k
    if all_datasets:
        changes["same_dataset_only"] = False
    chosen = chosen.replace(**changes)
    console.print(f"[bold]{len(dataset.database)}[/] database and [bold]{len(dataset.queries)}[/] query "
                  f"images in {len(dataset.dataset_names)} dataset(s); preset [bold]{chosen.name}[/] "
                  f"({chosen.backbone})")
    result = run_identify(dataset, chosen, cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
                          device=device)
    evaluation = evaluate_if_possible(result)
    written = write_run(result, out, evaluation=evaluation, report=report)
    if len(result.failures):
        console.print(f"[yellow]{len(result.failures)} image(s) could not be read and were skipped "
                      f"(listed in {written['failures']}); such queries are answered new_individual.[/]")
    _print_thresholds(result)
    if evaluation:
        _print_evaluation(evaluation)
    for name, path in written.items():
        console.print(f"{name:>11}: {path}")


@app.command()
@friendly_errors
def extract(
    root: Annotated[Path, typer.Argument(help="metadata.csv, a folder holding it, or a folder per identity.")],
    preset: PresetOption = DEFAULT_PRESET,
    backbone: BackboneOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Also save the embeddings to this .npz (image_id, embeddings).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per forward pass.")] = None,
    query_dir: QueryDir = None, path_column: PathColumn = "path", identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split", dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id", database_value: DatabaseValue = "database",
    query_value: QueryValue = "query", cache_dir: CacheDir = None, device: Device = None,
):
    """Compute global descriptors of every image into the cache (and optionally an .npz file)."""
    import numpy as np

    from .extract import default_device
    from .files import atomic_path
    from .pipeline import embed_dataset

    dataset = _load(root, query_dir, path_column, identity_column, split_column, dataset_column,
                    image_id_column, database_value, query_value)
    chosen = get_preset(preset)
    model = load_backbone(backbone or chosen.backbone, preprocess=None if backbone else chosen.preprocess,
                          device=device or default_device())
    extraction = embed_dataset(dataset, model, cache_dir=cache_dir or default_cache_dir(),
                               batch_size=batch_size or chosen.batch_size)
    console.print(f"{len(dataset.table)} images: {extraction.extracted} extracted, "
                  f"{len(dataset.table) - extraction.extracted - len(extraction.failures)} from the cache, "
                  f"{len(extraction.failures)} unreadable.")
    for row, reason in extraction.failures.items():
        console.print(f"[yellow]skipped[/] {dataset.table['image_id'][row]}: {reason}", markup=True, highlight=False)
    if out:
        with atomic_path(out) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, image_id=dataset.table["image_id"].to_numpy(dtype=str),
                         embeddings=extraction.embeddings, ok=extraction.ok)
        console.print(f"embeddings: {out}")


@app.command()
@friendly_errors
def evaluate(
    root: Annotated[Path, typer.Argument(help="The dataset with true identities for the queries.")],
    submission: Annotated[Path, typer.Argument(help="A submission CSV (image_id,identity).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    candidates: Annotated[Optional[Path], typer.Option(
        help="candidates.csv of the run, for top-1/top-5 accuracy and the new-vs-known AUC.")] = None,
    query_dir: QueryDir = None, path_column: PathColumn = "path", identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split", dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id", database_value: DatabaseValue = "database",
    query_value: QueryValue = "query",
):
    """Score a submission with the AnimalCLEF2025 metric: BAKS, BAUS, sqrt(BAKS*BAUS) per dataset, mean."""
    import pandas as pd

    from .metrics import evaluate as run_evaluate
    from .metrics import load_submission

    dataset = load_dataset(root, query_dir=query_dir, path_column=path_column, identity_column=identity_column,
                           split_column=split_column, dataset_column=dataset_column,
                           image_id_column=image_id_column, database_value=database_value,
                           query_value=query_value, check_files=False)
    detail = pd.read_csv(candidates, dtype={"image_id": str}) if candidates else None
    figures = run_evaluate(dataset, load_submission(submission), detail)
    if as_json:
        from .outputs import _jsonable

        stdout.print_json(json.dumps(_jsonable(figures)))
    else:
        _print_evaluation(figures)


@app.command()
@friendly_errors
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
@friendly_errors
def validate(
    root: Annotated[Path, typer.Argument(help="metadata.csv, a folder holding it, or a folder per identity.")],
    query_dir: QueryDir = None, path_column: PathColumn = "path", identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split", dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id", database_value: DatabaseValue = "database",
    query_value: QueryValue = "query",
):
    """Check a dataset (columns, ids, files) without extracting anything."""
    dataset = _load(root, query_dir, path_column, identity_column, split_column, dataset_column,
                    image_id_column, database_value, query_value)
    table = Table("dataset", "database", "query", "identities")
    for name, rows in dataset.table.groupby("dataset", sort=False):
        table.add_row(str(name), str((rows["split"] == "database").sum()), str((rows["split"] == "query").sum()),
                      str(rows.loc[rows["split"] == "database", "identity"].nunique()))
    stdout.print(table)
    console.print("[green]valid[/]")


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option(help="Output folder for the run.")] = Path("demo-out"),
    data: Annotated[Path, typer.Option(help="Where the generated demo dataset is written.")] = Path("demo-data"),
    preset: PresetOption = DEFAULT_PRESET,
    cache_dir: CacheDir = None,
):
    """Generate the built-in demo dataset (drawn patterned animals), identify it, print the score."""
    from .demo import make_demo_dataset

    metadata = make_demo_dataset(data)
    console.print(f"demo dataset: {metadata}")
    identify(metadata.parent, out, preset=preset, cache_dir=cache_dir)


def _print_thresholds(result) -> None:
    for group, threshold in result.thresholds.items():
        choice = result.threshold_choices.get(group)
        text = "none (closed set)" if threshold is None else f"{threshold:.4f}"
        if choice is not None:
            text += f" (chosen on the database; simulated score {choice.simulated_score:.4f})"
        console.print(f"threshold {group}: {text}", highlight=False)


def _print_evaluation(evaluation: dict) -> None:
    keys = ["score", "baks", "baus", "top1", "top5", "auc_new_vs_known"]
    keys = [k for k in keys if k in evaluation]
    table = Table("dataset", "queries", *keys, title="AnimalCLEF2025 metric")
    for name, figures in evaluation["per_dataset"].items():
        table.add_row(name, str(figures["queries"]), *(f"{figures.get(k, float('nan')):.4f}" for k in keys))
    table.add_row("[bold]mean[/]", "", *(f"{evaluation[k]:.4f}" for k in keys))
    stdout.print(table)


def main() -> None:  # pragma: no cover - entry point for `python -m wildreid`
    app(sys.argv[1:])
