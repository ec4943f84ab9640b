"""`wildreid gallery ...`: build, grow, refit and describe a saved gallery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from wildreid.cli.app import App, app, console, print_columns, print_legend, stdout, user_cache_dir
from wildreid.cli.extract import extract_on_ray
from wildreid.cli.options import (
    AllowOutsidePaths,
    BackboneOption,
    CacheDir,
    Device,
    EvidenceOptions,
    LabelledColumns,
    LocalOption,
    PresetOption,
    RegionOptions,
)
from wildreid.presets import DEFAULT_PRESET, customised_preset
from wildreid.util.lock import exclusive

gallery_app = App(
    help=(
        "A gallery is the database side fitted once and saved: descriptors in a FAISS index, keypoints, "
        "calibration and thresholds. Identify against it with `wildreid identify PHOTOS --gallery G`."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(gallery_app, name="gallery")

BuildRoot = Annotated[
    Path, typer.Argument(help="metadata.csv (its database rows), a folder holding it, or a folder per identity.")
]
GalleryOut = Annotated[Path, typer.Option(help="The gallery folder to write (replaced atomically if it exists).")]
GalleryThreshold = Annotated[
    Optional[str], typer.Option(help="Override the preset's threshold: a number, NAME=VALUE,..., 'auto' or 'none'.")
]
OneGroup = Annotated[
    bool, typer.Option("--all-datasets", help="One group for every dataset: queries may match any of them.")
]
DescribeOnRay = Annotated[
    Optional[str],
    typer.Option(
        "--ray",
        help="Describe the photos on a Ray cluster first ('auto' or an ADDRESS, as `wildreid extract --ray`); "
        "the gallery is then built from the filled caches.",
    ),
]


@gallery_app.command("build")
def gallery_build(
    root: BuildRoot,
    out: GalleryOut,
    preset: PresetOption = DEFAULT_PRESET,
    backbone: BackboneOption = None,
    local: LocalOption = None,
    threshold: GalleryThreshold = None,
    all_datasets: OneGroup = False,
    columns: LabelledColumns = LabelledColumns(),
    cache_dir: CacheDir = None,
    device: Device = None,
    allow_outside_paths: AllowOutsidePaths = False,
    ray: DescribeOnRay = None,
    regions: RegionOptions = RegionOptions(),
    evidence: EvidenceOptions = EvidenceOptions(),
):
    """Describe the labelled photos, index them and fit calibration and thresholds; save the gallery."""
    from wildreid.data.dataset import DatasetError
    from wildreid.gallery.gallery import Gallery
    from wildreid.gallery.storage import check_target

    check_target(out)  # a file or another folder there is refused before any photo is described
    cache = cache_dir or user_cache_dir()
    photos = columns.labelled_photos(root, allow_outside_paths=allow_outside_paths, include_queries=False)
    changes = {**regions.changes(), **evidence.changes()}
    chosen = customised_preset(
        preset, backbone=backbone, local=local, threshold=threshold, all_datasets=all_datasets, changes=changes
    )
    # Held from here to the write: a second writer of the same folder is refused now, not after
    # every descriptor has been computed.
    with exclusive(out, "the gallery"):
        photos, no_animal = regions.animals(photos, labelled=True)
        if no_animal is not None and photos.empty:
            raise DatasetError("MegaDetector found no animal in any of the photos: nothing to build a gallery of.")
        if ray:
            from wildreid.describe.foreground import table_regions

            # The foreground's boxes (if any) are computed here; the cluster describes the regions.
            photos, boxes, _ = table_regions(photos, chosen.region_margin, chosen.foreground, cache_dir=cache)
            extract_on_ray(photos, chosen, cache, ray, boxes)
        console.print(f"building a [bold]{chosen.name}[/] gallery of {len(photos)} photos ({chosen.backbone})")
        built = Gallery.build(photos, chosen, cache_dir=cache, device=device)
        built.save(out)
    print_gallery(built, out)


@gallery_app.command("add")
def gallery_add(
    root: Annotated[
        Path, typer.Argument(help="Labelled photos: metadata.csv, a folder holding it, or a folder per identity.")
    ],
    gallery: Annotated[Path, typer.Option(help="The gallery to grow (saved again atomically).")],
    include_queries: Annotated[
        bool, typer.Option("--include-queries", help="Also add query rows whose identity is known.")
    ] = False,
    refit: Annotated[
        Optional[bool],
        typer.Option(
            "--refit/--no-refit",
            help="Refit calibration and thresholds now, or never; by default only a group that "
            "is new or has grown by a quarter since its last fit is refitted.",
        ),
    ] = None,
    columns: LabelledColumns = LabelledColumns(),
    cache_dir: CacheDir = None,
    device: Device = None,
    allow_outside_paths: AllowOutsidePaths = False,
):
    """Append labelled photos (known or new individuals) to a gallery without rebuilding it."""
    from wildreid.gallery.gallery import Gallery

    photos = columns.labelled_photos(root, allow_outside_paths=allow_outside_paths, include_queries=include_queries)
    # Held from the read to the write: two adds that both read the same gallery would each save
    # their own version, and one's photos would be lost.
    with exclusive(gallery, "the gallery"):
        saved = Gallery.load(gallery, device=device)
        counts = saved.add(photos, cache_dir=cache_dir or user_cache_dir(), refit=refit)
        saved.save(gallery)
    for conflict in counts["label_conflicts"]:
        console.print(f"[yellow]label conflict: {escape(conflict)}[/]", highlight=False)
    console.print(
        f"added {counts['added']} photo(s); {counts['skipped_duplicates']} already in the gallery, "
        f"{counts['failed']} unreadable; refitted: {', '.join(counts['refitted']) or 'nothing'}",
        highlight=False,
    )
    print_gallery(saved, gallery)


@gallery_app.command("refit")
def gallery_refit(
    gallery: Annotated[Path, typer.Argument(help="The gallery folder.")],
    answers: Annotated[
        Optional[Path],
        typer.Option(
            help="Reviewers' answers to learn from (CSV: photo, other, individual, answer[, dataset]; "
            "docs/adaptation.md): photos their 'same' answers tie together teach the adapter too. "
            "Replaces the answers given before; without it the gallery keeps those.",
        ),
    ] = None,
    cache_dir: CacheDir = None,
    device: Device = None,
):
    """Fit the adapter, calibration and thresholds again on the gallery as it is now."""
    from wildreid.data.answers_file import read_answers
    from wildreid.decide.answers import answered_photos
    from wildreid.gallery.gallery import Gallery

    photos = answered_photos(read_answers(answers)) if answers is not None else None
    with exclusive(gallery, "the gallery"):
        saved = Gallery.load(gallery, device=device)
        if photos is not None:
            taught, unreadable = saved.teach(photos, cache_dir=cache_dir or user_cache_dir())
            console.print(
                f"{len(photos)} photo(s) labelled by the answers; learned from: "
                + ", ".join(f"{name} {count}" for name, count in taught.items()),
                highlight=False,
            )
            for path, reason in unreadable.items():
                console.print(f"[yellow]left out, unreadable: {escape(path)} ({escape(reason)})[/]", highlight=False)
        saved.refit()
        saved.save(gallery)
    print_gallery(saved, gallery)


@gallery_app.command("info")
def gallery_info(
    gallery: Annotated[Path, typer.Argument(help="The gallery folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
):
    """What a gallery holds: preset, descriptor, photos, and per group its index and last fit."""
    from wildreid.gallery.storage import RECORD, check_gallery, reading
    from wildreid.util.files import jsonable

    # Every file present and of its saved size (cheap); `gallery check` also reads their contents.
    info, notes = check_gallery(gallery, thorough=False)
    with reading(gallery / RECORD, gallery, "field"):
        shown = {k: info[k] for k in INFO_FIELDS}
        shown["saved_at"] = info.get("saved_at")
        for group in shown["groups"].values():
            for key in GROUP_FIELDS:
                group[key]  # noqa: B018 - a field print_gallery_info shows must be there
    for note in notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False)
    if as_json:
        stdout.print_json(json.dumps(jsonable(shown)))
        return
    print_gallery_info(shown, gallery)


INFO_FIELDS = ("format_version", "preset", "backbone", "backbone_fingerprint", "local_features", "images")
INFO_FIELDS += ("identities", "groups")
GROUP_FIELDS = ("images", "identities", "index", "threshold", "fitted_images", "fitted_at", "refit_due_at")


@gallery_app.command("check")
def gallery_check(gallery: Annotated[Path, typer.Argument(help="The gallery folder.")]):
    """Check that a gallery can be used: gallery.json whole and unchanged, every file present and
    matching its checksum, every index and keypoint file readable and of the photos listed."""
    from wildreid.gallery.errors import UnreadableGallery
    from wildreid.gallery.storage import check_gallery

    try:
        _, notes = check_gallery(gallery)
    except UnreadableGallery as problem:
        console.print(f"[bold red]damaged[/]: {escape(str(problem))}", highlight=False)
        raise typer.Exit(1) from None
    for note in notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False)
    console.print(f"[green]OK[/]: {escape(str(gallery))} is whole", highlight=False)


def print_gallery(saved, folder: Path) -> None:
    for note in saved.notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False)
    print_gallery_info(saved.info(), folder)


def print_gallery_info(info: dict, folder: Path) -> None:
    console.print(
        f"gallery {folder}: preset {info['preset']}, {info['backbone']}, {info['images']} photos of "
        f"{info['identities']} identities (format {info['format_version']})",
        highlight=False,
    )
    rows = ["photos", "identities", "index", "threshold", "fitted on", "fitted at", "refit due at"]
    columns = []
    for name, group in info["groups"].items():
        threshold = group["threshold"]
        columns.append(
            (
                name,
                [
                    str(group["images"]),
                    str(group["identities"]),
                    str(group["index"]),
                    "none" if threshold in (None, "none") else f"{float(threshold):.4f}",
                    f"{group['fitted_images']} photos",
                    _when(group["fitted_at"]),
                    f"{group['refit_due_at']} photos",
                ],
            )
        )
    print_columns(rows, columns, cell_width=16)
    print_legend(
        [
            ("threshold:", "a query whose best score is below it is answered new_individual"),
            ("fitted on:", "the photos the calibration and threshold were chosen on"),
            ("refit due at:", "the size at which `gallery add` refits the group by itself"),
        ]
    )


def _when(stamp) -> str:
    """2026-12-04T05:10:31+0000 -> 2026-12-04 05:10 +0000: fits a column of 16-22 characters."""
    if not isinstance(stamp, str) or "T" not in stamp:
        return str(stamp)
    day, time_of_day = stamp.split("T", 1)
    return f"{day} {time_of_day[:5]} {time_of_day[8:]}".strip()
