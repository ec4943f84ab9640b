"""`wildreid catalog ...`: the durable catalogue of known individuals (import, export, identify,
info, check)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from wildreid.catalog.camtrap_terms import CAPTURE_METHODS, SAMPLING_DESIGNS
from wildreid.cli.app import App, OptionGroup, app, console, stdout
from wildreid.cli.identify import print_thresholds, print_written
from wildreid.cli.options import (
    AllowOutsidePaths,
    DatasetColumns,
    DatasetRoot,
    Device,
    PresetOption,
    Report,
    RunOut,
    TopK,
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
CatalogCache = Annotated[
    Optional[Path], typer.Option(help="Embedding cache (default: <catalogue>.cache beside the catalogue).")
]


@catalog_app.command("import")
def catalog_import(
    root: DatasetRoot,
    catalog: CatalogPath = DEFAULT_CATALOG,
    include_queries: Annotated[
        bool, typer.Option("--include-queries", help="Also import query photos whose identity is known.")
    ] = False,
    columns: DatasetColumns = DatasetColumns(),
    allow_outside_paths: AllowOutsidePaths = False,
):
    """Copy the labelled photos of a dataset into the catalogue (creating it if needed).
    Safe to interrupt and run again: photos already in are recognised by content and skipped."""
    from rich.progress import Progress

    from wildreid.catalog.importer import import_dataset, rows_to_import
    from wildreid.catalog.store import Catalog

    dataset = columns.load(root, allow_outside_paths=allow_outside_paths)
    rows_to_import(dataset, include_queries=include_queries)  # refused before the catalogue is created
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


@catalog_app.command("sites")
def catalog_sites(
    places: Annotated[
        Optional[Path],
        typer.Argument(
            help="CSV location,latitude,longitude[,coordinateUncertainty]: sites to add, or move (WGS84 degrees; "
            "uncertainty in metres). Without it, the sites are listed."
        ),
    ] = None,
    catalog: CatalogPath = DEFAULT_CATALOG,
):
    """Named sites with coordinates (camera stations, waterholes). A photo whose location names a
    site and that has no GPS position of its own is placed at the site: on the map of its
    individual, and as its deployment in a Camtrap DP export."""
    from wildreid.catalog.camtrap import read_places
    from wildreid.catalog.store import Catalog

    given = read_places(places, "sites") if places is not None else {}
    with Catalog(catalog, create=False) as store:
        added = sum(
            store.set_site(name, place.latitude, place.longitude, uncertainty=place.uncertainty)
            for name, place in given.items()
        )
        if places is not None:
            console.print(f"{added} site(s) added, {len(given) - added} updated, from {places}")
        table = Table("site", "latitude", "longitude", "uncertainty (m)")
        for site in store.sites():
            table.add_row(
                site["name"], f"{site['latitude']:.6f}", f"{site['longitude']:.6f}", str(site["uncertainty"] or "")
            )
        stdout.print(table)


CAMTRAP = "Camtrap DP (--format camtrap-dp)"


def camtrap_option(help: str, *names: str):
    return typer.Option(*names, help=help, rich_help_panel=CAMTRAP)


@dataclass(frozen=True)
class CamtrapOptions(OptionGroup):
    """What a Camtrap DP package needs that the catalogue cannot know (--format camtrap-dp only)."""

    dataset: Annotated[
        Optional[list[str]],
        camtrap_option("Export only this dataset (repeatable; capture-history: the one dataset to write)."),
    ] = None
    sampling_design: Annotated[
        Optional[str],
        camtrap_option(f"The cameras' layout: {', '.join(SAMPLING_DESIGNS)}."),
    ] = None
    capture_method: Annotated[
        Optional[list[str]],
        camtrap_option(f"How the photos were taken (repeatable): {', '.join(CAPTURE_METHODS)}."),
    ] = None
    contact: Annotated[Optional[list[str]], camtrap_option("A contact for the data, 'Name <email>' (repeatable).")] = (
        None
    )
    title: Annotated[Optional[str], camtrap_option("Title of the package and its project.")] = None
    locations: Annotated[
        Optional[Path],
        camtrap_option(
            "CSV location,latitude,longitude[,coordinateUncertainty]: where each location the photos name is."
        ),
    ] = None
    latitude: Annotated[
        Optional[float], camtrap_option("Latitude (WGS84) of photos whose location is not in --locations.")
    ] = None
    longitude: Annotated[
        Optional[float], camtrap_option("Longitude (WGS84) of photos whose location is not in --locations.")
    ] = None
    coordinate_uncertainty: Annotated[
        Optional[int], camtrap_option("Uncertainty of --latitude/--longitude, in metres.")
    ] = None
    timezone: Annotated[
        Optional[str],
        camtrap_option("UTC offset (+02:00) or zone name (Africa/Johannesburg) of sighting times written without one."),
    ] = None
    scientific_name: Annotated[
        Optional[list[str]],
        camtrap_option("DATASET='Genus species', for a dataset whose species text holds no scientific name."),
    ] = None
    labels_by: Annotated[
        Optional[str],
        camtrap_option("Who labelled the imported datasets (people): their photos become human classifications."),
    ] = None
    media_url: Annotated[
        Optional[str],
        camtrap_option(
            "Address where the catalogue's photo store (<catalogue>.images/) is published; else the "
            "photos are copied into OUT/media/."
        ),
    ] = None
    private_media: Annotated[
        bool, camtrap_option("The photos are not publicly accessible (filePublic false).", "--private-media")
    ] = False
    include_machine: Annotated[
        bool,
        camtrap_option(
            "Also publish uploaded photos awaiting review, as the machine's classifications.", "--include-machine"
        ),
    ] = False
    skip_undated: Annotated[
        bool,
        camtrap_option(
            "Leave out photos without a usable sighting time (no date, or a date without a time of day).",
            "--skip-undated",
        ),
    ] = False
    midnight_for_dates: Annotated[
        bool,
        camtrap_option(
            "Export a sighting date without a time of day as that whole day: 00:00:00 to 23:59:59, "
            "its deployment flagged timestampIssues.",
            "--midnight-for-dates",
        ),
    ] = False

    def given(self) -> list[str]:
        """The options given on the command line, as they are written there."""
        return [
            "--" + field.name.replace("_", "-")
            for field in fields(self)
            if getattr(self, field.name) not in (None, False, [])
        ]

    def settings(self):
        from wildreid.catalog.camtrap import CamtrapSettings, make_place, parse_scientific_names, read_places

        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give --latitude and --longitude together.")
        names = parse_scientific_names(self.scientific_name or [])
        return CamtrapSettings(
            sampling_design=self.sampling_design,
            capture_methods=self.capture_method or [],
            contacts=self.contact or [],
            title=self.title,
            places=read_places(self.locations) if self.locations else {},
            default_place=(
                make_place(self.latitude, self.longitude, self.coordinate_uncertainty, "--latitude/--longitude")
                if self.latitude is not None
                else None
            ),
            timezone=self.timezone,
            scientific_names=names,
            labels_by=self.labels_by,
            media_url=self.media_url,
            private_media=self.private_media,
            include_machine=self.include_machine,
            skip_undated=self.skip_undated,
            midnight_for_dates=self.midnight_for_dates,
            datasets=self.dataset,
        )


HISTORY = "Capture history (--format capture-history)"


@dataclass(frozen=True)
class HistoryOptions(OptionGroup):
    """How sightings become mark-recapture occasions (--format capture-history only)."""

    occasion: Annotated[
        str,
        typer.Option(
            help="day, week (7-day blocks from the first sighting) or survey (the sessions of --surveys); "
            "see docs/capture-history.md.",
            rich_help_panel=HISTORY,
        ),
    ] = "day"
    surveys: Annotated[
        Optional[Path],
        typer.Option(
            help="CSV survey,start,end[,site]: one row per sampling session (dates YYYY-MM-DD), for --occasion survey.",
            rich_help_panel=HISTORY,
        ),
    ] = None
    empty_occasions: Annotated[
        bool,
        typer.Option(
            "--empty-occasions",
            help="Keep days or weeks without any sighting as occasions (cameras ran throughout): every one from "
            "the first sighting to the last.",
            rich_help_panel=HISTORY,
        ),
    ] = False

    def given(self) -> list[str]:
        return [
            "--" + f.name.replace("_", "-")
            for f in fields(self)
            if getattr(self, f.name) not in (None, False, []) and not (f.name == "occasion" and self.occasion == "day")
        ]


ExportOut = Annotated[Path, typer.Argument(help="Folder to write the export into.")]
ExportFormat = Annotated[
    str,
    typer.Option(
        "--format",
        help="animalclef: an AnimalCLEF2025-style metadata.csv; camtrap-dp: a Camtrap DP 1.0.2 package "
        "(the TDWG standard GBIF ingests), see docs/camtrap-dp.md; capture-history: the individual-by-occasion "
        "matrix for mark-recapture (MARK .inp, CSV for R's RMark and secr), see docs/capture-history.md.",
    ),
]
CopyImages = Annotated[
    bool,
    typer.Option(
        "--copy-images", help="animalclef: copy the photos into OUT/images/ (a self-contained dataset folder)."
    ),
]
Validate = Annotated[
    bool,
    camtrap_option("Validate the package (frictionless) before putting it in place.", "--validate/--no-validate"),
]


@catalog_app.command("export")
def catalog_export(
    out: ExportOut,
    catalog: CatalogPath = DEFAULT_CATALOG,
    format: ExportFormat = "animalclef",
    copy_images: CopyImages = False,
    camtrap: CamtrapOptions = CamtrapOptions(),
    history: HistoryOptions = HistoryOptions(),
    validate: Validate = True,
):
    """Write the catalogue as an AnimalCLEF2025-style metadata.csv (every photo a database row), its
    sightings as a Camtrap DP package, or its individuals' capture history for mark-recapture."""
    from wildreid.catalog.export import export_metadata
    from wildreid.catalog.store import Catalog

    if format != "capture-history" and history.given():
        raise ValueError(f"{', '.join(history.given())}: only for --format capture-history.")
    if format == "capture-history":
        extra = [option for option in camtrap.given() if option != "--dataset"]
        if extra or copy_images:
            raise ValueError(f"{', '.join(extra or ['--copy-images'])}: not for --format capture-history.")
        if camtrap.dataset and len(camtrap.dataset) > 1:
            raise ValueError("--dataset: a capture history is of one population; give one dataset.")
        from wildreid.catalog.capture_history import capture_history, read_surveys, write_capture_history

        surveys = read_surveys(history.surveys) if history.surveys else None
        with Catalog(catalog, create=False) as store:
            result = capture_history(
                store,
                occasion=history.occasion,
                dataset=camtrap.dataset[0] if camtrap.dataset else None,
                surveys=surveys,
                empty_occasions=history.empty_occasions,
            )
        write_capture_history(result, out)
        for line in result.lines(out):
            console.print(line, highlight=False, markup=False)
        return
    if format == "animalclef":
        if camtrap.given():
            raise ValueError(f"{', '.join(camtrap.given())}: only for --format camtrap-dp.")
        with Catalog(catalog, create=False) as store:
            console.print(f"written: {export_metadata(store, out, copy_images=copy_images)}")
        return
    if format != "camtrap-dp":
        raise ValueError(f"--format '{format}': choose animalclef, camtrap-dp or capture-history.")
    if copy_images:
        raise ValueError("--copy-images: only for --format animalclef (camtrap-dp copies photos unless --media-url).")
    from wildreid.catalog.camtrap import export_camtrap_dp

    settings = camtrap.settings()
    with Catalog(catalog, create=False) as store:
        report = export_camtrap_dp(store, out, settings, validate=validate)
    for line in report.lines():
        console.print(line, highlight=False, markup=False)


@catalog_app.command("identify")
def catalog_identify(
    query_dir: Annotated[Path, typer.Argument(help="Folder of query photos (searched recursively).")],
    out: RunOut,
    catalog: CatalogPath = DEFAULT_CATALOG,
    dataset: Annotated[
        Optional[str], typer.Option(help="The catalogue dataset the queries belong to (needed when it holds several).")
    ] = None,
    preset: PresetOption = DEFAULT_PRESET,
    top_k: TopK = None,
    report: Report = True,
    cache_dir: CatalogCache = None,
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
    print_written(written)


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
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Only check that every photo file is there, without reading it to verify its SHA-256."
        ),
    ] = False,
):
    """Check a catalogue's consistency: SQLite integrity, references, text, every photo file
    present with the content (SHA-256) it was stored with."""
    from wildreid.catalog.store import Catalog

    with Catalog(catalog, create=False) as store:
        result = store.check(repair=repair, quick=quick)
    for line in result.lines():
        console.print(line, highlight=False, markup=False)
    if repair and not result.repaired:
        console.print("--repair: nothing deleted, because the catalogue is not consistent.")
    if not result.ok:
        console.print("[bold red]inconsistent[/]: restore the catalogue from a backup, or report this.")
        raise typer.Exit(1)
    console.print("[green]consistent[/]")
