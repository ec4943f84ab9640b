"""`wildreid identify` (a dataset, or photos against a saved gallery) and `wildreid demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from wildreid.cli.app import app, console, default_cache_dir, stdout
from wildreid.cli.options import (
    KEEP,
    AllowOutsidePaths,
    BackboneOption,
    BatchSize,
    CacheDir,
    Compile,
    DatabaseValue,
    DatasetColumn,
    DatasetName,
    Decode,
    DetectionsOption,
    DetectionThreshold,
    Device,
    Engine,
    ExtraLocalOption,
    Fast,
    ForegroundOption,
    GalleryOption,
    IdentityColumn,
    ImageIdColumn,
    LocalOption,
    MirrorOption,
    NoCache,
    PathColumn,
    Precision,
    PresetOption,
    QueryDir,
    QueryValue,
    RegionMargin,
    SplitColumn,
    TopMOption,
    ViewsOption,
    chosen_preset,
    detection_rows,
    evidence_changes,
    grouping_option,
    load,
    region_changes,
    speed_changes,
)
from wildreid.data.dataset import Dataset, DatasetError, validate_dataset
from wildreid.presets import DEFAULT_PRESET, PRESETS, parse_threshold


@app.command()
def identify(
    root: Annotated[
        list[Path],
        typer.Argument(
            help="metadata.csv, a folder holding it, or a folder per identity; with --gallery: query photos, "
            "folders of them, or CSVs of paths."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder: submission.csv, candidates.csv, report.html, run.json.")],
    gallery: GalleryOption = None,
    dataset_name: DatasetName = None,
    preset: Annotated[
        Optional[str],
        typer.Option(
            help=f"Named configuration: {', '.join(PRESETS)} (default {DEFAULT_PRESET}; with --gallery, the "
            "gallery's). See `wildreid presets`."
        ),
    ] = None,
    backbone: BackboneOption = None,
    local: LocalOption = None,
    threshold: Annotated[
        Optional[str],
        typer.Option(
            help="Override the preset's threshold: a number, NAME=VALUE,... per dataset, 'auto' (chosen on "
            "the database by simulating new individuals), or 'none' (closed set)."
        ),
    ] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Candidates kept per query in candidates.csv.")] = None,
    all_datasets: Annotated[
        bool,
        typer.Option("--all-datasets", help="Compare queries with every database image, not only their own dataset's."),
    ] = False,
    report: Annotated[bool, typer.Option(help="Write report.html and plots.")] = True,
    grouping: Annotated[
        Optional[str],
        typer.Option(
            help="Group the queries with each other and with known individuals (groups.csv): 'average' "
            "linkage (the presets' default), 'single', or 'none' (each query decided alone)."
        ),
    ] = None,
    submission_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="submission.csv as AnimalCLEF2025 wants it (image_id,identity) or AnimalCLEF2026 (image_id,cluster).",
        ),
    ] = "animalclef2025",
    query_dir: QueryDir = None,
    path_column: PathColumn = "path",
    identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split",
    dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id",
    database_value: DatabaseValue = "database",
    query_value: QueryValue = "query",
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    device: Device = None,
    fast: Fast = False,
    precision: Precision = None,
    decode: Decode = None,
    compile: Compile = None,
    engine: Engine = None,
    batch_size: BatchSize = None,
    allow_outside_paths: AllowOutsidePaths = False,
    detections: DetectionsOption = None,
    detection_threshold: DetectionThreshold = None,
    region_margin: RegionMargin = None,
    foreground: ForegroundOption = None,
    views: ViewsOption = None,
    mirror: MirrorOption = None,
    extra_local: ExtraLocalOption = None,
    top_m: TopMOption = None,
):
    """Assign every query a known identity or new_individual; write the submission and the report.

    Without --gallery, ROOT is a dataset: a gallery is built from its database rows on the fly
    and its queries identified. With --gallery, ROOT... are query photos and only they are
    described and matched."""
    from wildreid.evaluate.outputs import SUBMISSION_FORMATS, check_out_dir, evaluate_if_possible, write_run

    if submission_format not in SUBMISSION_FORMATS:
        raise ValueError(f"--format {submission_format}: choose one of {', '.join(SUBMISSION_FORMATS)}.")
    grouping_method = grouping_option(grouping)
    check_out_dir(out)  # before the work, not after it
    cache = None if no_cache else (cache_dir or default_cache_dir())
    if gallery is not None and evidence_changes(views, mirror, extra_local, top_m):
        raise ValueError(
            "--views, --mirror, --extra-local and --top-m are fixed when a gallery is built (its calibration "
            "and thresholds were fitted with them); give them to `wildreid gallery build` instead."
        )
    if gallery is not None:
        if local is not None:
            raise ValueError(
                "--local is fixed when a gallery is built (its keypoints are saved in it); leave it out with "
                "--gallery, or build another gallery with `wildreid gallery build --local ...`."
            )
        if region_margin is not None or foreground is not None:
            raise ValueError(
                "--region-margin and --foreground belong to the gallery (its photos were described with "
                "them); queries follow the gallery's. Build a gallery with them to change them."
            )
        result = identify_with_gallery(
            root,
            gallery,
            preset,
            threshold,
            top_k,
            grouping_method,
            dataset_name,
            cache,
            device,
            path_column,
            image_id_column,
            allow_outside_paths,
            detections,
            detection_threshold,
        )
    else:
        from wildreid.gallery.pipeline import identify as run_identify

        if len(root) != 1:
            raise ValueError(
                f"give one dataset (got {len(root)} paths); to identify photos, folders or CSVs of "
                "paths against a saved gallery, add --gallery GALLERY."
            )
        dataset = load(
            root[0],
            query_dir,
            path_column,
            identity_column,
            split_column,
            dataset_column,
            image_id_column,
            database_value,
            query_value,
            allow_outside_paths,
        )
        chosen = chosen_preset(
            preset or DEFAULT_PRESET,
            backbone,
            threshold,
            top_k,
            all_datasets,
            {
                **speed_changes(fast, precision, decode, compile, engine, batch_size),
                **region_changes(region_margin, foreground),
                **evidence_changes(views, mirror, extra_local, top_m),
            },
            local,
        )
        if grouping_method is not KEEP:
            chosen = chosen.replace(grouping=grouping_method)
        rows, no_animal = detection_rows(dataset.table, detections, detection_threshold, labelled=True)
        if no_animal is not None:
            if rows.empty:
                raise DatasetError("MegaDetector found no animal in any of the photos: nothing to identify.")
            dataset = Dataset(rows, dataset.source)
            validate_dataset(dataset, check_files=False)  # e.g. a dataset whose database photos hold no animal
        console.print(
            f"[bold]{len(dataset.database)}[/] database and [bold]{len(dataset.queries)}[/] query "
            f"images in {len(dataset.dataset_names)} dataset(s); preset [bold]{chosen.name}[/] "
            f"({chosen.backbone})"
        )
        result = run_identify(dataset, chosen, cache_dir=cache, device=device)
        result.no_animal = no_animal
    evaluation = evaluate_if_possible(result)
    written = write_run(result, out, evaluation=evaluation, report=report, format=submission_format)
    if len(result.failures):
        console.print(
            f"[yellow]{len(result.failures)} image(s) could not be read and were skipped "
            f"(listed in {written['failures']}); such queries are answered new_individual.[/]"
        )
    if result.no_animal is not None and len(result.no_animal):
        console.print(
            f"[yellow]{len(result.no_animal)} photo(s) without an animal were left out (listed in "
            f"{written['no_animal']}).[/]"
        )
    for note in result.notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False)
    print_thresholds(result)
    if evaluation:
        print_evaluation(evaluation)
    for name, path in written.items():
        console.print(f"{name:>11}: {path}")


def identify_with_gallery(
    sources,
    folder,
    preset,
    threshold,
    top_k,
    grouping,
    dataset_name,
    cache,
    device,
    path_column,
    image_id_column,
    allow_outside_paths,
    detections=None,
    detection_threshold=None,
):
    from wildreid.data.dataset import load_query_photos
    from wildreid.gallery.gallery import FITTED, Gallery

    photos = load_query_photos(
        sources, path_column=path_column, image_id_column=image_id_column, allow_outside_paths=allow_outside_paths
    )
    photos, no_animal = detection_rows(photos, detections, detection_threshold, labelled=False)
    if no_animal is not None and photos.empty:
        raise DatasetError("MegaDetector found no animal in any of the photos: nothing to identify.")
    if dataset_name is not None:
        photos["dataset"] = dataset_name
    saved = Gallery.load(folder, device=device, preset=preset)
    setting = FITTED if threshold is None or threshold.strip().lower() == "auto" else parse_threshold(threshold)
    # The preset's own checks refuse a threshold or top-k that would quietly mean something else.
    saved.preset.replace(
        top_k=top_k or saved.preset.top_k, threshold=saved.preset.threshold if setting == FITTED else setting
    )
    console.print(
        f"[bold]{len(photos)}[/] query photo(s) against the gallery {folder} ({len(saved.table)} photos; "
        f"preset [bold]{saved.preset.name}[/], {saved.backbone.name})"
    )
    result = saved.identify(
        photos, cache_dir=cache, threshold=setting, top_k=top_k, grouping=FITTED if grouping is KEEP else grouping
    )
    result.no_animal = no_animal
    return result


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder for the run.")] = Path("demo-out"),
    data: Annotated[Path, typer.Option(help="Where the generated demo dataset is written.")] = Path("demo-data"),
    preset: PresetOption = DEFAULT_PRESET,
    cache_dir: CacheDir = None,
):
    """Generate the built-in demo dataset (drawn patterned animals), identify it, print the score."""
    from wildreid.data.demo import make_demo_dataset

    metadata = make_demo_dataset(data)
    console.print(f"demo dataset: {metadata}")
    identify([metadata.parent], out, preset=preset, cache_dir=cache_dir)


def print_thresholds(result) -> None:
    for group, threshold in result.thresholds.items():
        choice = result.threshold_choices.get(group)
        text = "none (closed set)" if threshold is None else f"{threshold:.4f}"
        if choice is not None:
            text += f" (chosen on the database; simulated score {choice.simulated_score:.4f})"
        console.print(f"threshold {group}: {text}", highlight=False)


def print_evaluation(evaluation: dict) -> None:
    """AnimalCLEF2025 (score = sqrt(BAKS * BAUS)) and AnimalCLEF2026 (ARI) figures per dataset; a
    2026 submission names clusters, not individuals, so it has no BAKS/BAUS."""
    keys = ["score", "baks", "baus", "ari", "pair_precision", "pair_recall", "top1", "top5", "auc_new_vs_known"]
    keys = [k for k in keys if k in evaluation and evaluation[k] == evaluation[k]]

    def number(value) -> str:
        return "-" if value is None or value != value else f"{value:.4f}"

    table = Table("dataset", "queries", *keys, title="AnimalCLEF2025 metric, and ARI (AnimalCLEF2026)")
    for name, figures in evaluation["per_dataset"].items():
        table.add_row(name, str(figures["queries"]), *(number(figures.get(k)) for k in keys))
    table.add_row("[bold]mean[/]", "", *(number(evaluation[k]) for k in keys))
    stdout.print(table)
