"""`wildreid extract`: describe every photo of a dataset into the caches (here or on a Ray cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from wildreid.cli.app import app, console, default_cache_dir
from wildreid.cli.options import (
    AllowOutsidePaths,
    BackboneOption,
    BatchSize,
    CacheDir,
    Compile,
    DatabaseValue,
    DatasetColumn,
    Decode,
    DetectionsOption,
    DetectionThreshold,
    Device,
    Engine,
    Fast,
    ForegroundOption,
    IdentityColumn,
    ImageIdColumn,
    PathColumn,
    Precision,
    PresetOption,
    QueryDir,
    QueryValue,
    RegionMargin,
    SplitColumn,
    detection_rows,
    load,
    local_changes,
    region_changes,
    speed_changes,
)
from wildreid.data.dataset import Dataset
from wildreid.describe.backbones import load_backbone
from wildreid.presets import DEFAULT_PRESET, get_preset


@app.command()
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
    speed = speed_changes(fast, precision, decode, compile, engine, batch_size)
    chosen = get_preset(preset).replace(**speed, **region_changes(region_margin, foreground))
    if local is not None:
        chosen = chosen.replace(**local_changes(chosen, local))
    local_method, local_options = chosen.local, chosen.local_options
    rows, _ = detection_rows(dataset.table, detections, detection_threshold, labelled=True)
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
        extract_on_ray(
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


def extract_on_ray(
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
