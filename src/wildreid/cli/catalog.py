"""`wildreid catalog ...`: the durable catalogue of known individuals (import, export, identify,
info, check)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from wildreid.cli.app import App, app, console, stdout
from wildreid.cli.identify import print_thresholds
from wildreid.cli.options import (
    AllowOutsidePaths,
    DatabaseValue,
    DatasetColumn,
    Device,
    IdentityColumn,
    ImageIdColumn,
    PathColumn,
    PresetOption,
    QueryDir,
    QueryValue,
    SplitColumn,
    load,
)
from wildreid.presets import DEFAULT_PRESET, get_preset

catalog_app = App(
    help=(
        "A durable catalogue of known individuals: an SQLite file with their photos (copied into "
        "<file>.images/ beside it), descriptors and review decisions."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(catalog_app, name="catalog")

CatalogPath = Annotated[
    Path,
    typer.Option(
        "--catalog",
        "-c",
        envvar="WILDREID_CATALOG",
        help="The catalogue's SQLite file; its photos live in <file>.images/ beside it.",
    ),
]
DEFAULT_CATALOG = Path("wildreid-catalog.sqlite")


@catalog_app.command("import")
def catalog_import(
    root: Annotated[Path, typer.Argument(help="metadata.csv, a folder holding it, or a folder per identity.")],
    catalog: CatalogPath = DEFAULT_CATALOG,
    include_queries: Annotated[
        bool, typer.Option("--include-queries", help="Also import query photos whose identity is known.")
    ] = False,
    query_dir: QueryDir = None,
    path_column: PathColumn = "path",
    identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split",
    dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id",
    database_value: DatabaseValue = "database",
    query_value: QueryValue = "query",
    allow_outside_paths: AllowOutsidePaths = False,
):
    """Copy the labelled photos of a dataset into the catalogue (creating it if needed).
    Safe to interrupt and run again: photos already in are recognised by content and skipped."""
    from rich.progress import Progress

    from wildreid.catalog.importer import import_dataset
    from wildreid.catalog.store import Catalog

    dataset = load(
        root,
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
    with Catalog(catalog) as store, Progress(console=console, transient=True) as bar:
        task = bar.add_task("importing", total=None)
        report = import_dataset(
            store,
            dataset,
            include_queries=include_queries,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        counts = store.counts()
    for line in report.lines():
        console.print(line, highlight=False, markup=False)
    console.print(f"catalogue {catalog}: {counts['individuals']} individuals, {counts['images']} photos")


CAMTRAP = "Camtrap DP (--format camtrap-dp)"


def camtrap_option(help: str, *names: str):
    return typer.Option(*names, help=help, rich_help_panel=CAMTRAP)


@catalog_app.command("export")
def catalog_export(
    out: Annotated[Path, typer.Argument(help="Folder to write the export into.")],
    catalog: CatalogPath = DEFAULT_CATALOG,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="animalclef: an AnimalCLEF2025-style metadata.csv; camtrap-dp: a Camtrap DP 1.0.2 package "
            "(the TDWG standard GBIF ingests), see docs/camtrap-dp.md.",
        ),
    ] = "animalclef",
    copy_images: Annotated[
        bool,
        typer.Option(
            "--copy-images", help="animalclef: copy the photos into OUT/images/ (a self-contained dataset folder)."
        ),
    ] = False,
    dataset: Annotated[Optional[list[str]], camtrap_option("Export only this dataset (repeatable).")] = None,
    sampling_design: Annotated[
        Optional[str],
        camtrap_option(
            "The cameras' layout: simpleRandom, systematicRandom, clusteredRandom, experimental, targeted, "
            "opportunistic."
        ),
    ] = None,
    capture_method: Annotated[
        Optional[list[str]],
        camtrap_option("How the photos were taken (repeatable): activityDetection, timeLapse."),
    ] = None,
    contact: Annotated[
        Optional[list[str]], camtrap_option("A contact for the data, 'Name <email>' (repeatable).")
    ] = None,
    title: Annotated[Optional[str], camtrap_option("Title of the package and its project.")] = None,
    locations: Annotated[
        Optional[Path],
        camtrap_option(
            "CSV location,latitude,longitude[,coordinateUncertainty]: where each location the photos name is."
        ),
    ] = None,
    latitude: Annotated[
        Optional[float], camtrap_option("Latitude (WGS84) of photos whose location is not in --locations.")
    ] = None,
    longitude: Annotated[
        Optional[float], camtrap_option("Longitude (WGS84) of photos whose location is not in --locations.")
    ] = None,
    coordinate_uncertainty: Annotated[
        Optional[int], camtrap_option("Uncertainty of --latitude/--longitude, in metres.")
    ] = None,
    timezone: Annotated[
        Optional[str],
        camtrap_option("UTC offset (+02:00) or zone name (Africa/Johannesburg) of sighting times written without one."),
    ] = None,
    scientific_name: Annotated[
        Optional[list[str]],
        camtrap_option("DATASET='Genus species', for a dataset whose species text holds no scientific name."),
    ] = None,
    labels_by: Annotated[
        Optional[str],
        camtrap_option("Who labelled the imported datasets (people): their photos become human classifications."),
    ] = None,
    media_url: Annotated[
        Optional[str],
        camtrap_option(
            "Address where the catalogue's photo store (<catalogue>.images/) is published; else the "
            "photos are copied into OUT/media/."
        ),
    ] = None,
    private_media: Annotated[
        bool, camtrap_option("The photos are not publicly accessible (filePublic false).", "--private-media")
    ] = False,
    include_machine: Annotated[
        bool,
        camtrap_option(
            "Also publish uploaded photos awaiting review, as the machine's classifications.", "--include-machine"
        ),
    ] = False,
    skip_undated: Annotated[
        bool, camtrap_option("Leave out photos without a usable sighting date.", "--skip-undated")
    ] = False,
    validate: Annotated[
        bool,
        camtrap_option("Validate the package (frictionless) before putting it in place.", "--validate/--no-validate"),
    ] = True,
):
    """Write the catalogue as an AnimalCLEF2025-style metadata.csv (every photo a database row), or
    its sightings as a Camtrap DP package."""
    from wildreid.catalog.export import export_metadata
    from wildreid.catalog.store import Catalog

    camtrap_given = [
        name
        for name, value in {
            "--dataset": dataset,
            "--sampling-design": sampling_design,
            "--capture-method": capture_method,
            "--contact": contact,
            "--title": title,
            "--locations": locations,
            "--latitude": latitude,
            "--longitude": longitude,
            "--coordinate-uncertainty": coordinate_uncertainty,
            "--timezone": timezone,
            "--scientific-name": scientific_name,
            "--labels-by": labels_by,
            "--media-url": media_url,
            "--private-media": private_media,
            "--include-machine": include_machine,
            "--skip-undated": skip_undated,
        }.items()
        if value not in (None, False, [])
    ]
    if format == "animalclef":
        if camtrap_given:
            raise ValueError(f"{', '.join(camtrap_given)}: only for --format camtrap-dp.")
        with Catalog(catalog, create=False) as store:
            console.print(f"written: {export_metadata(store, out, copy_images=copy_images)}")
        return
    if format != "camtrap-dp":
        raise ValueError(f"--format '{format}': choose animalclef or camtrap-dp.")
    if copy_images:
        raise ValueError("--copy-images: only for --format animalclef (camtrap-dp copies photos unless --media-url).")
    from wildreid.catalog.camtrap import CamtrapSettings, export_camtrap_dp, make_place, read_places

    if (latitude is None) != (longitude is None):
        raise ValueError("give --latitude and --longitude together.")
    names = {}
    for item in scientific_name or []:
        name_of, equals, value = item.partition("=")
        if not equals or not name_of.strip() or not value.strip():
            raise ValueError(f"--scientific-name '{item}': write DATASET='Genus species'.")
        names[name_of.strip()] = value.strip().strip("'\"")
    settings = CamtrapSettings(
        sampling_design=sampling_design,
        capture_methods=capture_method or [],
        contacts=contact or [],
        title=title,
        places=read_places(locations) if locations else {},
        default_place=(
            make_place(latitude, longitude, coordinate_uncertainty, "--latitude/--longitude")
            if latitude is not None
            else None
        ),
        timezone=timezone,
        scientific_names=names,
        labels_by=labels_by,
        media_url=media_url,
        private_media=private_media,
        include_machine=include_machine,
        skip_undated=skip_undated,
        datasets=dataset,
    )
    with Catalog(catalog, create=False) as store:
        report = export_camtrap_dp(store, out, settings, validate=validate)
    for line in report.lines():
        console.print(line, highlight=False, markup=False)


@catalog_app.command("identify")
def catalog_identify(
    query_dir: Annotated[Path, typer.Argument(help="Folder of query photos (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Output folder: submission.csv, candidates.csv, report.html, run.json.")],
    catalog: CatalogPath = DEFAULT_CATALOG,
    dataset: Annotated[
        Optional[str], typer.Option(help="The catalogue dataset the queries belong to (needed when it holds several).")
    ] = None,
    preset: PresetOption = DEFAULT_PRESET,
    top_k: Annotated[Optional[int], typer.Option(help="Candidates kept per query in candidates.csv.")] = None,
    report: Annotated[bool, typer.Option(help="Write report.html and plots.")] = True,
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="Embedding cache (default: <catalogue>.cache beside the catalogue).")
    ] = None,
    device: Device = None,
):
    """Identify query photos with the catalogue as the database; write the usual run outputs."""
    from wildreid.catalog.store import Catalog
    from wildreid.data.images import IMAGE_SUFFIXES
    from wildreid.evaluate.outputs import check_out_dir, evaluate_if_possible, write_run
    from wildreid.review.identify import identify_with_catalog

    check_out_dir(out)
    if not query_dir.is_dir():
        raise FileNotFoundError(f"{query_dir}: no such folder of query photos.")
    paths = sorted(p for p in query_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{query_dir}: no photos found ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    chosen = get_preset(preset)
    if top_k is not None:
        chosen = chosen.replace(top_k=top_k)
    with Catalog(catalog, create=False) as store:
        console.print(
            f"{len(paths)} query photo(s) against {store.counts()['images']} catalogue photos; "
            f"preset [bold]{chosen.name}[/] ({chosen.backbone})"
        )
        result = identify_with_catalog(
            store,
            paths,
            chosen,
            dataset=dataset,
            cache_dir=cache_dir,
            device=device,
            query_ids=[p.relative_to(query_dir).as_posix() for p in paths],
        )
    written = write_run(result, out, evaluation=evaluate_if_possible(result), report=report)
    print_thresholds(result)
    for name, path in written.items():
        console.print(f"{name:>11}: {path}")


@catalog_app.command("info")
def catalog_info(catalog: CatalogPath = DEFAULT_CATALOG):
    """Counts and datasets of a catalogue."""
    from wildreid.catalog.store import Catalog

    with Catalog(catalog, create=False) as store:
        table = Table("what", "count")
        for name, count in store.counts().items():
            table.add_row(name, str(count))
        stdout.print(table)
        console.print(f"schema version {store.schema_version}; datasets: {', '.join(store.datasets()) or '-'}")


@catalog_app.command("check")
def catalog_check(
    catalog: CatalogPath = DEFAULT_CATALOG,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Delete what interrupted writes left behind (unreferenced photos, temporary files)."
        ),
    ] = False,
):
    """Check a catalogue's consistency: SQLite integrity, references, every photo file present."""
    from wildreid.catalog.store import Catalog

    with Catalog(catalog, create=False) as store:
        result = store.check(repair=repair)
    for line in result.lines():
        console.print(line, highlight=False, markup=False)
    if not result.ok:
        console.print("[bold red]inconsistent[/]: restore the catalogue from a backup, or report this.")
        raise typer.Exit(1)
    console.print("[green]consistent[/]")
