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
from rich.markup import escape
from rich.table import Table

from wildreid.data.dataset import Dataset, DatasetError, load_dataset, validate_dataset
from wildreid.describe.backbones import BackboneUnavailable, load_backbone
from wildreid.presets import DEFAULT_PRESET, PRESETS, get_preset, parse_threshold

app = typer.Typer(
    help="wildreid: identify individual animals from photos.\n\n"
    "Give it a labelled database of photos and query photos; every query gets a known identity "
    "or 'new_individual'. Reads AnimalCLEF2025 metadata.csv folders, any CSV with path/identity/"
    "split columns, or a folder per identity plus a query folder. Writes an AnimalCLEF2025 "
    "submission, a detailed candidate table and an HTML report.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
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
            console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
            raise typer.Exit(2) from None
        except OSError as error:
            # The last resort for the file system saying no (read-only, full, permissions): the
            # file and the reason, never a traceback. Known cases have their own message first.
            where = f"{error.filename}: " if error.filename else ""
            console.print(f"[bold red]error:[/] {escape(where + str(error.strerror or error))}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


# Options shared by the commands that read a dataset.
QueryDir = Annotated[
    Optional[Path],
    typer.Option(help="Folder of query images; ROOT is then a folder with one sub-folder of photos per identity."),
]
PathColumn = Annotated[str, typer.Option(help="CSV column with image paths (relative to the CSV's folder).")]
IdentityColumn = Annotated[str, typer.Option(help="CSV column with identities (empty for unknown queries).")]
SplitColumn = Annotated[str, typer.Option(help="CSV column saying 'database' or 'query'.")]
DatasetColumn = Annotated[
    str, typer.Option(help="CSV column grouping images into datasets; without it, the dataset is the folder name.")
]
ImageIdColumn = Annotated[str, typer.Option(help="CSV column with image ids (default: the row number).")]
DatabaseValue = Annotated[str, typer.Option(help="Value of the split column that marks database images.")]
QueryValue = Annotated[str, typer.Option(help="Value of the split column that marks queries.")]
AllowOutsidePaths = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths",
        help="Read images outside the dataset's folder too (refused by default, so that "
        "a metadata file cannot point wildreid at other files).",
    ),
]
CacheDir = Annotated[
    Optional[Path], typer.Option(help="Where embeddings are cached (default $WILDREID_CACHE or ~/.cache/wildreid).")
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the embedding cache.")]
Device = Annotated[Optional[str], typer.Option(help="'cpu', 'cuda', 'cuda:1'... (default: a GPU if there is one).")]
PresetOption = Annotated[str, typer.Option(help=f"Named configuration: {', '.join(PRESETS)}. See `wildreid presets`.")]
Fast = Annotated[
    bool,
    typer.Option(
        "--fast",
        help="Every extraction speed option on (precision, decoding, compile, engine, batch size: "
        "auto). Features agree with the exact path to cosine >= 0.999 (checked on the first "
        "batch, else it falls back to exact fp32); they are cached apart from exact ones.",
    ),
]
Precision = Annotated[Optional[str], typer.Option(help="Extraction precision: fp32 (exact), bf16, fp16 or auto.")]
Decode = Annotated[
    Optional[str],
    typer.Option(
        help="Image decoding: exact (PIL, the reference), fast (PIL at reduced JPEG scale), device "
        "(nvJPEG on a GPU, torchvision on a CPU) or auto."
    ),
]
Compile = Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model.")]
Engine = Annotated[Optional[str], typer.Option(help="Model engine: torch, onnxruntime (CPU only) or auto.")]
BatchSize = Annotated[Optional[str], typer.Option(help="Images per forward pass, or 'auto' (from free GPU memory).")]


def _speed_changes(fast: bool, precision, decode, compile, engine, batch_size) -> dict:
    """Preset changes for the extraction speed options given on the command line."""
    from wildreid.describe.extract import FAST

    changes = dict(FAST) if fast else {}
    given = dict(
        precision=precision,
        decode=decode,
        compile=compile,
        engine=engine,
        batch_size=int(batch_size) if batch_size and batch_size.isdigit() else batch_size,
    )
    changes.update({name: value for name, value in given.items() if value is not None})
    return changes


LocalOption = Annotated[
    Optional[str],
    typer.Option(
        help="Override the preset's local keypoint matcher: rootsift, sift, aliked-lightglue, disk-lightglue "
        "(ALIKED/DISK + LightGlue; weights from disk only, see README), or 'none' (global descriptor only). "
        "Its scores are calibrated and fused as the preset's fusion settings say."
    ),
]
DetectionsOption = Annotated[
    Optional[Path],
    typer.Option(
        "--detections",
        help="MegaDetector results for these photos (its batch-output JSON, as AddaxAI/EcoAssist write it): "
        "each animal above --detection-threshold becomes its own row, id IMAGE_ID#K, described by its box; "
        "photos without one are reported (no_animal.csv). See docs/regions.md.",
    ),
]
DetectionThreshold = Annotated[
    Optional[float],
    typer.Option(
        help="Lowest MegaDetector confidence of an animal that is used (default 0.2, MegaDetector v5's "
        "typical threshold). Needs --detections."
    ),
]
RegionMargin = Annotated[
    Optional[float],
    typer.Option(
        help="Margin added around every region's box (metadata bbox/segmentation, detections, foreground), "
        "as a fraction of its width and height (default: the preset's, 0.1)."
    ),
]
ForegroundOption = Annotated[
    Optional[str],
    typer.Option(
        help="Automatic foreground for photos without a region: 'cam' (a box from the class-activation map "
        "of the offline ImageNet classifier), 'cam-mask' (that box and the map's outline as a mask) or "
        "'none' (the whole photo). Default: the preset's (none). See docs/regions.md."
    ),
]
ViewsOption = Annotated[
    Optional[str],
    typer.Option(
        "--views",
        help="Compare only compatible viewpoints (the 'viewpoint' or 'orientation' column): 'same' (equal "
        "views), compatible pairs 'left=front,right=front', a CSV file of pairs, or 'off'. A photo of "
        "unknown view is compatible with all. Default: the preset's.",
    ),
]
MirrorOption = Annotated[
    Optional[bool],
    typer.Option(
        "--mirror/--no-mirror",
        help="Also compare a view with its mirror view (left/right) after flipping the photo, for species "
        "whose two sides look alike. Needs --views.",
    ),
]
ExtraLocalOption = Annotated[
    Optional[str],
    typer.Option(
        "--extra-local",
        help="More local features fused as their own calibrated inlier counts, comma-separated (orb), "
        "or 'none'. Default: the preset's.",
    ),
]
TopMOption = Annotated[
    Optional[str],
    typer.Option(
        "--top-m",
        help="Score an identity by the mean of its m best photos (1: its best photo), or 'auto' (the m "
        "whose simulated open-set score on the database is best).",
    ),
]


def _region_changes(region_margin: float | None, foreground: str | None) -> dict:
    """Preset changes for the region options given on the command line."""
    changes = {}
    if region_margin is not None:
        changes["region_margin"] = region_margin
    if foreground is not None:
        changes["foreground"] = foreground
    return changes


def _detection_rows(table, detections: Path | None, threshold: float | None, *, labelled: bool):
    """With --detections: (one row per animal, the photos without one); else (table, None)."""
    if detections is None:
        if threshold is not None:
            raise ValueError("--detection-threshold applies to MegaDetector results: give them with --detections.")
        return table, None
    from wildreid.data.detections import DEFAULT_THRESHOLD, DETECTION, read_detections, split_by_detections

    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    rows, no_animal = split_by_detections(table, read_detections(detections), threshold)
    photos = len(table) - len(no_animal)
    console.print(
        f"MegaDetector ({detections.name}): {len(rows)} animal(s) at or above {threshold:g} in {photos} of "
        f"{len(table)} photo(s); {len(no_animal)} photo(s) without one are left out.",
        highlight=False,
    )
    for item in no_animal.head(10).itertuples():
        console.print(f"[yellow]no animal[/] {escape(str(item.image_id))}: {escape(item.reason)}", highlight=False)
    if len(no_animal) > 10:
        console.print(f"[yellow]... and {len(no_animal) - 10} more[/]")
    if labelled and len(rows):
        several = rows.loc[rows.duplicated("path", keep=False) & rows["identity"].notna(), "path"].nunique()
        if several:
            console.print(
                f"[yellow]{several} labelled photo(s) hold several animals: each animal got the photo's identity. "
                f"Check them (column '{DETECTION}' numbers the animals), or raise --detection-threshold.[/]"
            )
    return rows, no_animal


def _evidence_changes(views, mirror, extra_local, top_m) -> dict:
    """Preset changes for the viewpoint and evidence options given on the command line."""
    from wildreid.data.views import parse_view_rule

    changes = {}
    if views is not None:
        changes["views"] = parse_view_rule(views)
    if mirror is not None:
        changes["mirror"] = mirror
    if extra_local is not None:
        names = [] if extra_local.strip().lower() == "none" else [n.strip().lower() for n in extra_local.split(",")]
        from wildreid.local.base import method_names

        unknown = [n for n in names if n not in method_names()]
        if unknown:
            raise ValueError(
                f"--extra-local: unknown method(s) {', '.join(unknown)}; choose from {', '.join(method_names())}."
            )
        changes["extra_local"] = tuple(names)
    if top_m is not None:
        text = top_m.strip().lower()
        if text != "auto" and not text.isdigit():
            raise ValueError(f"--top-m: '{top_m}' is not a whole number or 'auto'.")
        changes["top_m"] = text if text == "auto" else int(text)
    return changes


BackboneOption = Annotated[
    Optional[str],
    typer.Option(
        help="Override the preset's descriptor: a short name (megadescriptor-l-384, efficientnet-lite0, ...), "
        "any timm name, hf-hub:ORG/NAME, or local-dir:FOLDER."
    ),
]


def _load(
    root: Path,
    query_dir,
    path_column,
    identity_column,
    split_column,
    dataset_column,
    image_id_column,
    database_value,
    query_value,
    allow_outside_paths: bool = False,
) -> Dataset:
    return load_dataset(
        root,
        query_dir=query_dir,
        path_column=path_column,
        identity_column=identity_column,
        split_column=split_column,
        dataset_column=dataset_column,
        image_id_column=image_id_column,
        database_value=database_value,
        query_value=query_value,
        allow_outside_paths=allow_outside_paths,
    )


GalleryOption = Annotated[
    Optional[Path],
    typer.Option(
        help="A gallery from `wildreid gallery build`: ROOT... are then query photos (files, folders, or CSVs "
        "with a path column) identified against it, without refitting anything."
    ),
]
DatasetName = Annotated[
    Optional[str],
    typer.Option(
        "--dataset",
        help="With --gallery: the dataset the query photos belong to (needed when the gallery holds several "
        "and the queries carry no dataset column).",
    ),
]


@app.command()
@friendly_errors
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
    grouping_method = _grouping_option(grouping)
    check_out_dir(out)  # before the work, not after it
    cache = None if no_cache else (cache_dir or default_cache_dir())
    if gallery is not None and _evidence_changes(views, mirror, extra_local, top_m):
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
        result = _identify_with_gallery(
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
        dataset = _load(
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
        chosen = _chosen_preset(
            preset or DEFAULT_PRESET,
            backbone,
            threshold,
            top_k,
            all_datasets,
            {
                **_speed_changes(fast, precision, decode, compile, engine, batch_size),
                **_region_changes(region_margin, foreground),
                **_evidence_changes(views, mirror, extra_local, top_m),
            },
            local,
        )
        if grouping_method is not KEEP:
            chosen = chosen.replace(grouping=grouping_method)
        rows, no_animal = _detection_rows(dataset.table, detections, detection_threshold, labelled=True)
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
    _print_thresholds(result)
    if evaluation:
        _print_evaluation(evaluation)
    for name, path in written.items():
        console.print(f"{name:>11}: {path}")


KEEP = object()  # an option not given: the preset's own setting stays


def _grouping_option(text: str | None):
    """--grouping: KEEP when absent, None for 'none', else a linkage method."""
    from wildreid.decide.cluster import METHODS

    if text is None:
        return KEEP
    lowered = text.strip().lower()
    if lowered == "none":
        return None
    if lowered not in METHODS:
        raise ValueError(f"--grouping {text}: choose one of {', '.join(METHODS)} or none.")
    return lowered


def _chosen_preset(name: str, backbone, threshold, top_k, all_datasets, speed: dict, local: str | None = None):
    """The named preset with the command line's changes."""
    changes = dict(speed)
    if local is not None:
        changes.update(_local_changes(get_preset(name), local))
    if backbone:
        changes.update(backbone=backbone, preprocess=None)
    if threshold is not None:
        changes["threshold"] = parse_threshold(threshold)
    if top_k is not None:
        changes["top_k"] = top_k
    if all_datasets:
        changes["same_dataset_only"] = False
    return get_preset(name).replace(**changes)


def _identify_with_gallery(
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
    photos, no_animal = _detection_rows(photos, detections, detection_threshold, labelled=False)
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


def _local_changes(preset, local: str) -> dict:
    """Preset changes for --local: the method, and its options only when it is the preset's own
    (another method starts from its own defaults)."""
    from wildreid.local.base import method_names

    name = local.strip().lower()
    if name == "none":
        return {"local": None, "local_options": {}}
    if name not in method_names():
        raise ValueError(
            f"--local {local}: unknown local feature method; choose one of {', '.join(method_names())}, or none."
        )
    return {"local": name, "local_options": preset.local_options if name == preset.local else {}}


@app.command()
@friendly_errors
def extract(
    root: Annotated[Path, typer.Argument(help="metadata.csv, a folder holding it, or a folder per identity.")],
    preset: PresetOption = DEFAULT_PRESET,
    backbone: BackboneOption = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Also save the embeddings to this .npz (image_id, embeddings).")
    ] = None,
    batch_size: BatchSize = None,
    query_dir: QueryDir = None,
    path_column: PathColumn = "path",
    identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split",
    dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id",
    database_value: DatabaseValue = "database",
    query_value: QueryValue = "query",
    cache_dir: CacheDir = None,
    device: Device = None,
    fast: Fast = False,
    precision: Precision = None,
    decode: Decode = None,
    compile: Compile = None,
    engine: Engine = None,
    allow_outside_paths: AllowOutsidePaths = False,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            help="Extract on a Ray cluster: 'auto' (this machine's cluster, else a new local one) or "
            "a cluster ADDRESS (exact path only; needs pip install 'wildreid[ray]'; docs/scale.md).",
        ),
    ] = None,
    local: Annotated[
        Optional[str],
        typer.Option(
            help="Also cache local keypoints with this method (rootsift, sift, aliked-lightglue, disk-lightglue); "
            "default: the preset's (fusion: rootsift); 'none': descriptors only."
        ),
    ] = None,
    detections: DetectionsOption = None,
    detection_threshold: DetectionThreshold = None,
    region_margin: RegionMargin = None,
    foreground: ForegroundOption = None,
):
    """Compute global descriptors (and the preset's keypoints) of every image into the cache (and optionally
    an .npz file)."""
    import numpy as np

    from wildreid.describe.extract import default_device
    from wildreid.gallery.pipeline import embed_dataset
    from wildreid.util.files import atomic_path

    dataset = _load(
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
    speed = _speed_changes(fast, precision, decode, compile, engine, batch_size)
    chosen = get_preset(preset).replace(**speed, **_region_changes(region_margin, foreground))
    if local is not None:
        chosen = chosen.replace(**_local_changes(chosen, local))
    local_method, local_options = chosen.local, chosen.local_options
    rows, _ = _detection_rows(dataset.table, detections, detection_threshold, labelled=True)
    dataset = Dataset(rows, dataset.source)
    # The regions the photos will be described by (the foreground's boxes are computed here, on
    # this machine), so the caches hold exactly what `identify` with the same options reads.
    from wildreid.describe.foreground import table_regions

    table, regions, _ = table_regions(
        dataset.table, chosen.region_margin, chosen.foreground, cache_dir=cache_dir or default_cache_dir()
    )
    dataset = Dataset(table, dataset.source)
    if ray:
        if set(speed) - {"batch_size"}:
            raise ValueError(
                "--ray extracts on the exact path (fp32, PIL decoding): leave out --fast, --precision, "
                "--decode, --compile and --engine."
            )
        _extract_on_ray(
            dataset.table["path"].tolist(),
            backbone or chosen.backbone,
            None if backbone else chosen.preprocess,
            local_method,
            local_options,
            cache_dir or default_cache_dir(),
            ray,
            chosen.batch_size if isinstance(chosen.batch_size, int) else 32,
            regions,
        )
        if not out:
            return
        # --out: the single-machine path below finds every vector in the cache and writes the file.
    elif local_method:
        from wildreid.local.base import get_method
        from wildreid.local.cache import local_features

        local_features(
            dataset.table["path"].tolist(),
            get_method(local_method, **local_options),
            cache_dir=cache_dir or default_cache_dir(),
            regions=regions,
        )
    model = load_backbone(
        backbone or chosen.backbone,
        preprocess=None if backbone else chosen.preprocess,
        device=device or default_device(),
    )
    extraction = embed_dataset(
        dataset, model, cache_dir=cache_dir or default_cache_dir(), regions=regions, **chosen.extraction_options()
    )
    console.print(
        f"{len(dataset.table)} images: {extraction.extracted} extracted, "
        f"{len(dataset.table) - extraction.extracted - len(extraction.failures)} from the cache, "
        f"{len(extraction.failures)} unreadable."
    )
    ran = extraction.settings
    if ran.get("batch_size"):
        agreement = "" if ran["agreement"] is None else f", agreement with exact fp32 {ran['agreement']:.5f}"
        console.print(
            f"extraction: {ran['precision']}, decode {ran['decode']}, engine {ran['engine']}, "
            f"compile {ran['compile']}, batch {ran['batch_size']}{agreement}"
            + (" (fell back)" if ran["fell_back"] else ""),
            highlight=False,
        )
    for row, reason in extraction.failures.items():
        console.print(f"[yellow]skipped[/] {dataset.table['image_id'][row]}: {reason}", markup=True, highlight=False)
    if out:
        with atomic_path(out) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(
                    handle,
                    image_id=dataset.table["image_id"].to_numpy(dtype=str),
                    embeddings=extraction.embeddings,
                    ok=extraction.ok,
                )
        console.print(f"embeddings: {out}")


def _extract_on_ray(
    paths, backbone, preprocess, local, local_options, cache_dir, address, batch_size, regions=None
) -> None:
    """Fill the caches on a Ray cluster (wildreid.distributed); the single-machine code then
    finds every vector and keypoint there."""
    from wildreid.describe.distributed import RayUnavailable, extract_with_ray

    try:
        summary = extract_with_ray(
            paths,
            backbone,
            preprocess=preprocess,
            local=local,
            local_options=local_options,
            cache_dir=cache_dir,
            address=address,
            batch_size=batch_size,
            regions=regions,
        )
    except RayUnavailable as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from None
    console.print(summary.line(), highlight=False)
    for reason in summary.failures.values():
        console.print(f"[yellow]skipped[/] {escape(reason)}", highlight=False)


@app.command()
@friendly_errors
def evaluate(
    root: Annotated[Path, typer.Argument(help="The dataset with true identities for the queries.")],
    submission: Annotated[Path, typer.Argument(help="A submission CSV (image_id,identity).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    candidates: Annotated[
        Optional[Path],
        typer.Option(help="candidates.csv of the run, for top-1/top-5 accuracy and the new-vs-known AUC."),
    ] = None,
    query_dir: QueryDir = None,
    path_column: PathColumn = "path",
    identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split",
    dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id",
    database_value: DatabaseValue = "database",
    query_value: QueryValue = "query",
):
    """Score a submission with the AnimalCLEF2025 metric: BAKS, BAUS, sqrt(BAKS*BAUS) per dataset, mean."""
    import pandas as pd

    from wildreid.evaluate.metrics import evaluate as run_evaluate
    from wildreid.evaluate.metrics import load_submission

    dataset = load_dataset(
        root,
        query_dir=query_dir,
        path_column=path_column,
        identity_column=identity_column,
        split_column=split_column,
        dataset_column=dataset_column,
        image_id_column=image_id_column,
        database_value=database_value,
        query_value=query_value,
        check_files=False,
        allow_outside_paths=True,
    )  # evaluation never opens an image
    detail = pd.read_csv(candidates, dtype={"image_id": str}) if candidates else None
    figures = run_evaluate(dataset, load_submission(submission, queries=dataset.queries["image_id"]), detail)
    if as_json:
        from wildreid.util.files import jsonable

        stdout.print_json(json.dumps(jsonable(figures)))
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
    """Check a dataset (columns, ids, files) without extracting anything."""
    dataset = _load(
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


@app.command()
@friendly_errors
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


def _print_thresholds(result) -> None:
    for group, threshold in result.thresholds.items():
        choice = result.threshold_choices.get(group)
        text = "none (closed set)" if threshold is None else f"{threshold:.4f}"
        if choice is not None:
            text += f" (chosen on the database; simulated score {choice.simulated_score:.4f})"
        console.print(f"threshold {group}: {text}", highlight=False)


def _print_evaluation(evaluation: dict) -> None:
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


# --------------------------------------------------------------------------------------------
# The catalogue (`wildreid catalog ...`) and the review web app (`wildreid serve`)

catalog_app = typer.Typer(
    help="A durable catalogue of known individuals: an SQLite file with their photos (copied into "
    "<file>.images/ beside it), descriptors and review decisions.",
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
@friendly_errors
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

    dataset = _load(
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


def _camtrap_option(help: str, *names: str):
    return typer.Option(*names, help=help, rich_help_panel=CAMTRAP)


@catalog_app.command("export")
@friendly_errors
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
    dataset: Annotated[Optional[list[str]], _camtrap_option("Export only this dataset (repeatable).")] = None,
    sampling_design: Annotated[
        Optional[str],
        _camtrap_option(
            "The cameras' layout: simpleRandom, systematicRandom, clusteredRandom, experimental, targeted, "
            "opportunistic."
        ),
    ] = None,
    capture_method: Annotated[
        Optional[list[str]],
        _camtrap_option("How the photos were taken (repeatable): activityDetection, timeLapse."),
    ] = None,
    contact: Annotated[
        Optional[list[str]], _camtrap_option("A contact for the data, 'Name <email>' (repeatable).")
    ] = None,
    title: Annotated[Optional[str], _camtrap_option("Title of the package and its project.")] = None,
    locations: Annotated[
        Optional[Path],
        _camtrap_option(
            "CSV location,latitude,longitude[,coordinateUncertainty]: where each location the photos name is."
        ),
    ] = None,
    latitude: Annotated[
        Optional[float], _camtrap_option("Latitude (WGS84) of photos whose location is not in --locations.")
    ] = None,
    longitude: Annotated[
        Optional[float], _camtrap_option("Longitude (WGS84) of photos whose location is not in --locations.")
    ] = None,
    coordinate_uncertainty: Annotated[
        Optional[int], _camtrap_option("Uncertainty of --latitude/--longitude, in metres.")
    ] = None,
    timezone: Annotated[
        Optional[str],
        _camtrap_option(
            "UTC offset (+02:00) or zone name (Africa/Johannesburg) of sighting times written without one."
        ),
    ] = None,
    scientific_name: Annotated[
        Optional[list[str]],
        _camtrap_option("DATASET='Genus species', for a dataset whose species text holds no scientific name."),
    ] = None,
    labels_by: Annotated[
        Optional[str],
        _camtrap_option("Who labelled the imported datasets (people): their photos become human classifications."),
    ] = None,
    media_url: Annotated[
        Optional[str],
        _camtrap_option(
            "Address where the catalogue's photo store (<catalogue>.images/) is published; else the "
            "photos are copied into OUT/media/."
        ),
    ] = None,
    private_media: Annotated[
        bool, _camtrap_option("The photos are not publicly accessible (filePublic false).", "--private-media")
    ] = False,
    include_machine: Annotated[
        bool,
        _camtrap_option(
            "Also publish uploaded photos awaiting review, as the machine's classifications.", "--include-machine"
        ),
    ] = False,
    skip_undated: Annotated[
        bool, _camtrap_option("Leave out photos without a usable sighting date.", "--skip-undated")
    ] = False,
    validate: Annotated[
        bool,
        _camtrap_option("Validate the package (frictionless) before putting it in place.", "--validate/--no-validate"),
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
@friendly_errors
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
    _print_thresholds(result)
    for name, path in written.items():
        console.print(f"{name:>11}: {path}")


@catalog_app.command("info")
@friendly_errors
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
@friendly_errors
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


@app.command()
@friendly_errors
def serve(
    catalog: CatalogPath = DEFAULT_CATALOG,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token_file: Annotated[
        Optional[Path],
        typer.Option(help="File holding the review token (else $WILDREID_TOKEN, else one is generated and printed)."),
    ] = None,
    preset: PresetOption = DEFAULT_PRESET,
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="Embedding cache (default: <catalogue>.cache beside the catalogue).")
    ] = None,
    device: Device = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest photo accepted, in MiB.")] = 20,
    max_files: Annotated[int, typer.Option(help="Most photos in one upload.")] = 20,
    allowed_host: Annotated[
        Optional[list[str]],
        typer.Option(
            help="A Host name the app answers to besides localhost and --host (e.g. the name of a reverse "
            "proxy in front of it); repeat for several. Other names get 400 (DNS-rebinding guard)."
        ),
    ] = None,
):
    """Start the review web app: upload photos, confirm candidates, browse individuals."""
    import logging

    import uvicorn

    from wildreid.web.app import create_app
    from wildreid.web.config import WebConfig

    if not catalog.is_file():
        raise FileNotFoundError(
            f"{catalog}: no catalogue here. Create one first with "
            f"`wildreid catalog import --catalog {catalog} DATASET`."
        )
    token = token_file.read_text(encoding="utf-8").strip() if token_file else ""
    config = WebConfig(
        catalog,
        token=token,
        preset=get_preset(preset).name,
        cache_dir=cache_dir,
        device=device,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        max_files=max_files,
        allowed_hosts=[host, *(allowed_host or [])],
    )
    # The app logs failures (with their reference numbers) under 'wildreid.web'.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = create_app(config)
    console.print(f"review app on http://{host}:{port}/ (catalogue {catalog}, preset {config.preset})", highlight=False)
    if config.token_generated:
        console.print(
            f"review token: [bold]{config.token}[/] (needed to upload and decide; set "
            "WILDREID_TOKEN or --token-file to choose your own)",
            highlight=False,
        )
    uvicorn.run(application, host=host, port=port, server_header=False)


@app.command()
@friendly_errors
def train(
    root: Annotated[Path, typer.Argument(help="metadata.csv, a folder holding it, or a folder per identity.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the trained model (config.json + model.safetensors, timm's local-dir layout), "
            "train.json and the resumable checkpoint."
        ),
    ],
    backbone: Annotated[
        str,
        typer.Option(
            help="Starting weights: efficientnet-lite0 (offline), megadescriptor-..., any timm name, "
            "hf-hub:ORG/NAME, local-dir:FOLDER, random:TIMM_NAME."
        ),
    ] = "efficientnet-lite0",
    epochs: Annotated[
        Optional[int],
        typer.Option(
            help="Most epochs (early stopping may end sooner). Default: chosen by validation (at most 20).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[
        Optional[float],
        typer.Option(
            help="Peak backbone learning rate (AdamW, warm-up then cosine); the ArcFace head's is 10 times higher. "
            "Default: chosen by validation among 3e-4 and 1e-3.",
            show_default=False,
        ),
    ] = None,
    image_size: Annotated[
        Optional[int], typer.Option(help="Square input side in pixels (default: the backbone's own).")
    ] = None,
    margin: Annotated[float, typer.Option(help="ArcFace angular margin, radians.")] = 0.3,
    scale: Annotated[float, typer.Option(help="ArcFace logit scale.")] = 30.0,
    sub_centers: Annotated[
        int, typer.Option(help="Prototypes per identity; above 1 is sub-center ArcFace (for very varied pictures).")
    ] = 1,
    head_epochs: Annotated[
        int,
        typer.Option(
            help="First epochs that train the ArcFace head alone, the backbone frozen (protects the "
            "pretrained features from a random head)."
        ),
    ] = 2,
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Training images held out for validation (half whole identities, half single images); "
            "0 turns validation and early stopping off (then give --flip/--no-flip, --lr and --epochs)."
        ),
    ] = 0.15,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation mAP before stopping.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the validation split, initialisation and augmentation.")] = 0,
    flip: Annotated[
        Optional[bool],
        typer.Option(
            "--flip/--no-flip",
            help="Mirror training images at random (only right where an animal's two sides look alike). "
            "Default: chosen by validation.",
            show_default=False,
        ),
    ] = None,
    refit: Annotated[
        bool,
        typer.Option(
            "--refit/--no-refit",
            help="When settings were chosen by validation: train the final model again on every training image "
            "(default), or keep the chosen validated run, whose held-out photos identification then uses to "
            "calibrate (better inside the fusion preset).",
        ),
    ] = True,
    min_crop_scale: Annotated[
        float, typer.Option(help="Smallest random crop, as a fraction of the picture's area.")
    ] = 0.7,
    color_jitter: Annotated[
        float, typer.Option(help="Brightness/contrast jitter (saturation half of it; hue is never shifted); 0: off.")
    ] = 0.3,
    split_file: Annotated[
        Optional[Path],
        typer.Option(
            help="CSV of image_id and --split-column (e.g. LionData/paper_split.csv), joined to the metadata "
            "by image_id, choosing the training images."
        ),
    ] = None,
    split_column: Annotated[
        str, typer.Option(help="Column whose value --train-value marks the training images (default: the database).")
    ] = "split",
    train_value: Annotated[str, typer.Option(help="Value of --split-column that marks training images.")] = "database",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start from scratch even if OUT holds a checkpoint or a trained model.")
    ] = False,
    workers: Annotated[
        Optional[int], typer.Option(help="Augmentation processes (default: 1 on CPU, up to 8 with a GPU).")
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option(
            help="CPU threads for torch (default: one per core). On a small machine busy with other work, "
            "1 can be several times faster."
        ),
    ] = None,
    device: Device = None,
    query_dir: QueryDir = None,
    path_column: PathColumn = "path",
    identity_column: IdentityColumn = "identity",
    image_id_column: ImageIdColumn = "image_id",
    allow_outside_paths: AllowOutsidePaths = False,
):
    """Fine-tune a backbone on the database images with ArcFace; resumable; use it with --backbone local-dir:OUT.

    Flip, learning rate and epochs that are not given are chosen by validation on the database images.
    """
    from wildreid.train.augment import AugmentConfig
    from wildreid.train.finetune import TrainConfig, training_images
    from wildreid.train.finetune import train as run_training
    from wildreid.train.tuning import SearchSpace, free_settings, train_with_search

    if threads:
        import torch

        torch.set_num_threads(threads)
    dataset = load_dataset(
        root,
        query_dir=query_dir,
        path_column=path_column,
        identity_column=identity_column,
        image_id_column=image_id_column,
        allow_outside_paths=allow_outside_paths,
    )
    images = training_images(dataset, split_file=split_file, split_column=split_column, train_value=train_value)
    # Settings not given are chosen by validation on the training images (tuning.py); the values
    # here are then only placeholders that the search replaces.
    free = free_settings(flip, lr, epochs)
    space = SearchSpace()
    config = TrainConfig(
        backbone=backbone,
        epochs=epochs if epochs is not None else space.max_epochs,
        batch_size=batch_size,
        lr=lr if lr is not None else TrainConfig.lr,
        image_size=image_size,
        margin=margin,
        scale=scale,
        sub_centers=sub_centers,
        head_epochs=head_epochs,
        val_fraction=val_fraction,
        patience=patience,
        seed=seed,
        augment=AugmentConfig(min_crop_scale=min_crop_scale, color_jitter=color_jitter, flip=bool(flip)),
        device=device,
        num_workers=workers,
    )
    console.print(
        f"training on [bold]{len(images)}[/] images of [bold]{images['identity'].nunique()}[/] "
        f"identities from {dataset.source}; backbone {backbone}"
    )
    if images["was_query"].any():
        console.print(
            f"[yellow]{int(images['was_query'].sum())} of the training images are queries in "
            f"{dataset.source}: scores on that split would be optimistic.[/]"
        )
    source = {
        "root": str(root),
        "split_file": str(split_file) if split_file else None,
        "split_column": split_column,
        "train_value": train_value,
    }
    if free:
        console.print(
            f"choosing {', '.join(sorted(free))} by validation on {val_fraction:.0%} of the training images "
            "(give --flip/--no-flip, --lr and --epochs to skip)"
        )
        result = train_with_search(images, out, config, free, space, refit=refit, source=source, overwrite=overwrite)
        chosen = result.record["selection"]["chosen"]
        console.print(
            f"chosen: flip {'on' if chosen['flip'] else 'off'}, lr {chosen['lr']:g}, {chosen['epochs']} epoch(s) "
            f"(validation mAP {chosen['val_map']:.3f}, top-1 {chosen['val_top1']:.3f}); "
            f"{result.record['selection']['final']}",
            highlight=False,
        )
    else:
        result = run_training(images, out, config, source=source, overwrite=overwrite)
    record = result.record
    best, best_map = record["best_val_top1"], record["best_val_map"]
    console.print(
        f"trained {record['epochs_run']} epoch(s) in {record['wall_time_s']:.0f} s"
        + (
            f"; best validation mAP {best_map:.3f}, top-1 {best:.3f} (epoch {record['best_epoch']})"
            if best is not None
            else ""
        ),
        highlight=False,
    )
    console.print(f"model: {out} (use it with [bold]--backbone local-dir:{out}[/]); record: {out / 'train.json'}")


# --------------------------------------------------------------------------------------------
# The gallery (`wildreid gallery ...`) and the watch folder (`wildreid watch`)

gallery_app = typer.Typer(
    help="A gallery is the database side fitted once and saved: descriptors in a FAISS index, keypoints, "
    "calibration and thresholds. Identify against it with `wildreid identify PHOTOS --gallery G`.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(gallery_app, name="gallery")


def _labelled_photos(
    root: Path,
    path_column,
    identity_column,
    split_column,
    dataset_column,
    image_id_column,
    database_value,
    allow_outside_paths,
    include_queries: bool,
):
    """The labelled photos of ROOT: database rows of a metadata CSV (and labelled queries if asked),
    or every photo of a folder-per-identity layout."""
    from wildreid.data.dataset import DATABASE, load_folders

    if root.is_dir() and not (root / "metadata.csv").is_file():
        return load_folders(root, None, allow_outside_paths=allow_outside_paths).table
    dataset = _load(
        root,
        None,
        path_column,
        identity_column,
        split_column,
        dataset_column,
        image_id_column,
        database_value,
        "query",
        allow_outside_paths,
    )
    table = dataset.table
    keep = table["split"] == DATABASE
    if include_queries:
        keep |= table["identity"].notna()
    return table[keep]


@gallery_app.command("build")
@friendly_errors
def gallery_build(
    root: Annotated[
        Path, typer.Argument(help="metadata.csv (its database rows), a folder holding it, or a folder per identity.")
    ],
    out: Annotated[Path, typer.Option(help="The gallery folder to write (replaced atomically if it exists).")],
    preset: PresetOption = DEFAULT_PRESET,
    backbone: BackboneOption = None,
    local: LocalOption = None,
    threshold: Annotated[
        Optional[str], typer.Option(help="Override the preset's threshold: a number, NAME=VALUE,..., 'auto' or 'none'.")
    ] = None,
    all_datasets: Annotated[
        bool, typer.Option("--all-datasets", help="One group for every dataset: queries may match any of them.")
    ] = False,
    path_column: PathColumn = "path",
    identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split",
    dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id",
    database_value: DatabaseValue = "database",
    cache_dir: CacheDir = None,
    device: Device = None,
    allow_outside_paths: AllowOutsidePaths = False,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            help="Describe the photos on a Ray cluster first ('auto' or an ADDRESS, as `wildreid extract --ray`); "
            "the gallery is then built from the filled caches.",
        ),
    ] = None,
    detections: DetectionsOption = None,
    detection_threshold: DetectionThreshold = None,
    region_margin: RegionMargin = None,
    foreground: ForegroundOption = None,
    views: ViewsOption = None,
    mirror: MirrorOption = None,
    extra_local: ExtraLocalOption = None,
    top_m: TopMOption = None,
):
    """Describe the labelled photos, index them and fit calibration and thresholds; save the gallery."""
    from wildreid.gallery.gallery import Gallery

    photos = _labelled_photos(
        root,
        path_column,
        identity_column,
        split_column,
        dataset_column,
        image_id_column,
        database_value,
        allow_outside_paths,
        include_queries=False,
    )
    chosen = _chosen_preset(
        preset,
        backbone,
        threshold,
        None,
        all_datasets,
        {**_region_changes(region_margin, foreground), **_evidence_changes(views, mirror, extra_local, top_m)},
        local,
    )
    photos, no_animal = _detection_rows(photos, detections, detection_threshold, labelled=True)
    if no_animal is not None and photos.empty:
        raise DatasetError("MegaDetector found no animal in any of the photos: nothing to build a gallery of.")
    if ray:
        from wildreid.describe.foreground import table_regions

        # The foreground's boxes (if any) are computed here; the cluster describes the regions.
        photos, regions, _ = table_regions(
            photos, chosen.region_margin, chosen.foreground, cache_dir=cache_dir or default_cache_dir()
        )
        _extract_on_ray(
            photos["path"].tolist(),
            chosen.backbone,
            chosen.preprocess,
            chosen.local,
            chosen.local_options,
            cache_dir or default_cache_dir(),
            ray,
            chosen.batch_size if isinstance(chosen.batch_size, int) else 32,
            regions,
        )
    console.print(f"building a [bold]{chosen.name}[/] gallery of {len(photos)} photos ({chosen.backbone})")
    built = Gallery.build(photos, chosen, cache_dir=cache_dir or default_cache_dir(), device=device)
    built.save(out)
    _print_gallery(built, out)


@gallery_app.command("add")
@friendly_errors
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
    path_column: PathColumn = "path",
    identity_column: IdentityColumn = "identity",
    split_column: SplitColumn = "split",
    dataset_column: DatasetColumn = "dataset",
    image_id_column: ImageIdColumn = "image_id",
    database_value: DatabaseValue = "database",
    cache_dir: CacheDir = None,
    device: Device = None,
    allow_outside_paths: AllowOutsidePaths = False,
):
    """Append labelled photos (known or new individuals) to a gallery without rebuilding it."""
    from wildreid.gallery.gallery import Gallery

    photos = _labelled_photos(
        root,
        path_column,
        identity_column,
        split_column,
        dataset_column,
        image_id_column,
        database_value,
        allow_outside_paths,
        include_queries,
    )
    saved = Gallery.load(gallery, device=device)
    counts = saved.add(photos, cache_dir=cache_dir or default_cache_dir(), refit=refit)
    saved.save(gallery)
    console.print(
        f"added {counts['added']} photo(s); {counts['skipped_duplicates']} already in the gallery, "
        f"{counts['failed']} unreadable; refitted: {', '.join(counts['refitted']) or 'nothing'}",
        highlight=False,
    )
    _print_gallery(saved, gallery)


@gallery_app.command("refit")
@friendly_errors
def gallery_refit(gallery: Annotated[Path, typer.Argument(help="The gallery folder.")], device: Device = None):
    """Fit calibration and thresholds again on the gallery as it is now."""
    from wildreid.gallery.gallery import Gallery

    saved = Gallery.load(gallery, device=device)
    saved.refit()
    saved.save(gallery)
    _print_gallery(saved, gallery)


@gallery_app.command("info")
@friendly_errors
def gallery_info(
    gallery: Annotated[Path, typer.Argument(help="The gallery folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
):
    """What a gallery holds: preset, descriptor, photos, and per group its index and last fit."""
    from wildreid.gallery.gallery import GalleryError
    from wildreid.util.files import jsonable

    record = gallery / "gallery.json"
    if not record.is_file():
        raise GalleryError(f"{gallery}: not a gallery (no gallery.json).")
    info = json.loads(record.read_text(encoding="utf-8"))
    shown = {
        k: info[k]
        for k in (
            "format_version",
            "preset",
            "backbone",
            "backbone_fingerprint",
            "local_features",
            "images",
            "identities",
            "groups",
            "saved_at",
        )
    }
    if as_json:
        stdout.print_json(json.dumps(jsonable(shown)))
        return
    _print_gallery_info(shown, gallery)


def _print_gallery(saved, folder: Path) -> None:
    for note in saved.notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False)
    _print_gallery_info(saved.info(), folder)


def _print_gallery_info(info: dict, folder: Path) -> None:
    console.print(
        f"gallery {folder}: preset {info['preset']}, {info['backbone']}, {info['images']} photos of "
        f"{info['identities']} identities (format {info['format_version']})",
        highlight=False,
    )
    table = Table("group", "photos", "identities", "index", "threshold", "fitted on", "fitted at", "refit due at")
    for name, group in info["groups"].items():
        threshold = group["threshold"]
        table.add_row(
            name,
            str(group["images"]),
            str(group["identities"]),
            group["index"],
            "none" if threshold in (None, "none") else f"{float(threshold):.4f}",
            str(group["fitted_images"]),
            str(group["fitted_at"]),
            str(group["refit_due_at"]),
        )
    stdout.print(table)


@app.command()
@friendly_errors
def watch(
    folder: Annotated[Path, typer.Argument(help="The folder photos arrive in (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Where results.csv is appended (the columns of candidates.csv).")],
    gallery: Annotated[Optional[Path], typer.Option(help="The gallery to identify against.")] = None,
    catalog: Annotated[
        Optional[Path],
        typer.Option(
            "--catalog",
            help="Identify against this catalogue's photos instead, and file every photo as a query "
            "waiting for review in the web app.",
        ),
    ] = None,
    dataset_name: DatasetName = None,
    preset: Annotated[str, typer.Option(help="With --catalog: the preset of its gallery.")] = DEFAULT_PRESET,
    settle_seconds: Annotated[
        float,
        typer.Option(help="A photo is read once unchanged for this long (so a file still being copied is not read)."),
    ] = 2.0,
    poll_seconds: Annotated[float, typer.Option(help="Seconds between looks at the folder.")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Identify what is there, then stop.")] = False,
    cache_dir: CacheDir = None,
    device: Device = None,
):
    """Identify photos as they land in FOLDER; stop with Ctrl-C. Safe to kill and restart: every
    photo is recorded exactly once."""
    from wildreid.gallery.gallery import Gallery
    from wildreid.review.watch import Watcher

    if (gallery is None) == (catalog is None):
        raise ValueError("give --gallery GALLERY or --catalog CATALOGUE (one of them).")
    cache = cache_dir or default_cache_dir()
    store = None
    if catalog is not None:
        from wildreid.catalog.store import Catalog
        from wildreid.review.identify import catalog_gallery
        from wildreid.review.identify import default_cache_dir as catalog_cache

        store = Catalog(catalog, create=False)
        cache = cache_dir or catalog_cache(catalog)
        chosen = get_preset(preset)
        loaded = catalog_gallery(
            store,
            chosen,
            cache_dir=cache,
            backbone=load_backbone(chosen.backbone, preprocess=chosen.preprocess, device=device or _default_device()),
        )
        if dataset_name is None:
            names = store.datasets()
            if len(names) > 1:
                raise ValueError(
                    f"the catalogue holds several datasets ({', '.join(names)}); say which one the "
                    "photos belong to (--dataset)."
                )
            dataset_name = names[0]
    else:
        loaded = Gallery.load(gallery, device=device)
    watcher = Watcher(
        folder,
        out,
        loaded,
        catalog=store,
        dataset=dataset_name,
        cache_dir=cache,
        settle_seconds=settle_seconds,
        report=lambda line: console.print(escape(line), highlight=False),
    )
    console.print(
        f"watching {folder} ({len(watcher.done)} photo(s) already recorded in {watcher.results}); Ctrl-C stops",
        highlight=False,
    )
    try:
        watcher.run(poll_seconds, once=once)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        if store is not None:
            store.close()


def _default_device() -> str:
    from wildreid.describe.extract import default_device

    return default_device()


def main() -> None:  # pragma: no cover - entry point for `python -m wildreid`
    app(sys.argv[1:])
