"""`wildreid extract`: describe every photo of a dataset into the caches (here or on a Ray cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from wildreid.cli.app import app, console, user_cache_dir
from wildreid.cli.options import (
    AllowOutsidePaths,
    BackboneOption,
    BatchSize,
    CacheDir,
    DatasetColumns,
    DatasetRoot,
    Device,
    PresetOption,
    RegionOptions,
    SpeedOptions,
)
from wildreid.local.base import method_names
from wildreid.presets import DEFAULT_PRESET, get_preset, local_changes

EmbeddingsOut = Annotated[
    Optional[Path], typer.Option(help="Also save the embeddings to this .npz (image_id, embeddings).")
]
RayOption = Annotated[
    Optional[str],
    typer.Option(
        "--ray",
        help="Extract on a Ray cluster: 'auto' (this machine's cluster, else a new local one) or "
        "a cluster ADDRESS (exact path only; needs pip install 'wildreid[ray]'; docs/scale.md).",
    ),
]
KeypointsOption = Annotated[
    Optional[str],
    typer.Option(
        help=f"Also cache local keypoints with this method ({', '.join(method_names())}); default: the "
        f"preset's ({DEFAULT_PRESET}: {get_preset(DEFAULT_PRESET).local}); 'none': descriptors only."
    ),
]


@app.command()
def extract(
    root: DatasetRoot,
    preset: PresetOption = DEFAULT_PRESET,
    backbone: BackboneOption = None,
    out: EmbeddingsOut = None,
    batch_size: BatchSize = None,
    columns: DatasetColumns = DatasetColumns(),
    cache_dir: CacheDir = None,
    device: Device = None,
    speed: SpeedOptions = SpeedOptions(),
    allow_outside_paths: AllowOutsidePaths = False,
    ray: RayOption = None,
    local: KeypointsOption = None,
    regions: RegionOptions = RegionOptions(),
):
    """Compute global descriptors (and the preset's keypoints) of every image into the cache (and optionally
    an .npz file)."""
    from wildreid.data.dataset import Dataset
    from wildreid.describe.foreground import table_regions

    cache = cache_dir or user_cache_dir()
    dataset = columns.load(root, allow_outside_paths=allow_outside_paths)
    speed_changes = speed.changes(batch_size)
    chosen = get_preset(preset).replace(**speed_changes, **regions.changes())
    if local is not None:
        chosen = chosen.replace(**local_changes(chosen, local))
    rows, _ = regions.animals(dataset.table, labelled=True)
    # The regions the photos will be described by (the foreground's boxes are computed here, on
    # this machine), so the caches hold exactly what `identify` with the same options reads.
    table, boxes, _ = table_regions(rows, chosen.region_margin, chosen.foreground, cache_dir=cache)
    dataset = Dataset(table, dataset.source)
    if ray:
        if set(speed_changes) - {"batch_size"}:
            raise ValueError(
                "--ray extracts on the exact path (fp32, PIL decoding): leave out --fast, --precision, "
                "--decode, --compile and --engine."
            )
        extract_on_ray(table, chosen, cache, ray, boxes, backbone=backbone)
        if not out:
            return
        # --out: the single-machine path below finds every vector in the cache and writes the file.
    elif chosen.local:
        from wildreid.local.base import get_method
        from wildreid.local.cache import local_features

        local_features(
            table["path"].tolist(), get_method(chosen.local, **chosen.local_options), cache_dir=cache, regions=boxes
        )
    extraction = _embed(dataset, chosen, backbone, device, cache, boxes)
    if out:
        _save_embeddings(out, dataset, extraction)


def _embed(dataset, chosen, backbone: str | None, device: str | None, cache: Path, boxes):
    """Every photo's global descriptor, from the cache or extracted now; says how it went."""
    from wildreid.describe.backbones import load_backbone
    from wildreid.describe.extract import default_device
    from wildreid.describe.input_size import read_at_input_size
    from wildreid.gallery.pipeline import embed_dataset

    model = load_backbone(
        backbone or chosen.backbone,
        preprocess=None if backbone else chosen.preprocess,
        device=device or default_device(),
    )
    # the size a gallery of this dataset reads its pictures at, so that it finds them in the cache
    read_at_input_size(model, chosen.input_size, dataset.table, chosen.region_margin)
    extraction = embed_dataset(dataset, model, cache_dir=cache, regions=boxes, **chosen.extraction_options())
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
    return extraction


def _save_embeddings(out: Path, dataset, extraction) -> None:
    import numpy as np

    from wildreid.util.files import atomic_path

    with atomic_path(out) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                image_id=dataset.table["image_id"].to_numpy(dtype=str),
                embeddings=extraction.embeddings,
                ok=extraction.ok,
            )
    console.print(f"embeddings: {out}")


def extract_on_ray(photos, chosen, cache_dir: Path, address: str, regions, *, backbone: str | None = None) -> None:
    """Fill the caches on a Ray cluster (wildreid.distributed) with the descriptors (``backbone``,
    else the preset's) and keypoints of ``chosen`` of ``photos`` (a table with path, and split
    and regions when it has them); the single-machine code then finds every vector and keypoint
    there."""
    from wildreid.describe.distributed import RayUnavailable, extract_with_ray

    preprocess = None if backbone else chosen.preprocess
    if chosen.input_size is not None:  # the size the gallery will read these photos at
        from wildreid.describe.backbones import load_backbone
        from wildreid.describe.input_size import read_at_input_size

        model = load_backbone(backbone or chosen.backbone, preprocess=preprocess)
        preprocess = read_at_input_size(model, chosen.input_size, photos, chosen.region_margin).preprocess
    try:
        summary = extract_with_ray(
            [str(path) for path in photos["path"]],
            backbone or chosen.backbone,
            preprocess=preprocess,
            local=chosen.local,
            local_options=chosen.local_options,
            cache_dir=cache_dir,
            address=address,
            batch_size=chosen.batch_size if isinstance(chosen.batch_size, int) else 32,
            regions=regions,
        )
    except RayUnavailable as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from None
    console.print(summary.line(), highlight=False)
    for reason in summary.failures.values():
        console.print(f"[yellow]skipped[/] {escape(reason)}", highlight=False)
