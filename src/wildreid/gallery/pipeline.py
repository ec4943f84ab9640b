"""The identification job on one dataset: a gallery built from its database rows, then its queries.

``identify`` returns plain data (:class:`result.IdentifyResult`); ``outputs.write_run`` turns it
into files. It is exactly ``Gallery.build`` followed by ``Gallery.identify``, the same two calls
that ``wildreid gallery build`` and ``wildreid identify --gallery`` make separately.
"""

from __future__ import annotations

import time

from wildreid.data.dataset import Dataset
from wildreid.data.regions import BBOX, REGION_SOURCE, SEGMENTATION
from wildreid.describe.backbones import Backbone
from wildreid.describe.extract import Extraction, extract_embeddings
from wildreid.gallery.gallery import Gallery, preset_backbone
from wildreid.gallery.result import IdentifyResult
from wildreid.presets import Preset


def embed_dataset(
    dataset: Dataset,
    backbone: Backbone,
    *,
    cache_dir=None,
    batch_size: int | str = 32,
    progress: bool = True,
    regions=None,
    **speed,
) -> Extraction:
    """``speed``: extract_embeddings' speed options (precision, decode, compile, engine);
    ``regions``: per row its regions.Region (None: the whole photo)."""
    return extract_embeddings(
        dataset.table["path"].tolist(),
        backbone,
        cache_dir=cache_dir,
        batch_size=batch_size,
        progress=progress,
        regions=regions,
        **speed,
    )


def identify(
    dataset: Dataset,
    preset: Preset,
    *,
    cache_dir=None,
    device: str | None = None,
    backbone: Backbone | None = None,
    progress: bool = True,
) -> IdentifyResult:
    """Every query of ``dataset`` against its database rows, as ``preset`` says."""
    started = time.perf_counter()
    if backbone is None:
        backbone = preset_backbone(preset, dataset.database, device)
    loaded = time.perf_counter() - started
    gallery = Gallery.build(dataset, preset, backbone=backbone, cache_dir=cache_dir, progress=progress)
    result = gallery.identify(dataset, cache_dir=cache_dir, progress=progress)
    result.dataset = _with_regions(dataset, result.dataset)
    result.failures = _in_table_order(dataset, gallery.failures, result.failures)
    built = gallery.timings
    result.timings = {
        "load_backbone_s": loaded,
        "build_s": built["build_s"] - built["load_backbone_s"],
        **{f"build_{name}": value for name, value in built.items() if name != "load_backbone_s"},
        **{f"queries_{name}": value for name, value in result.timings.items()},
        "images_extracted": built.get("images_extracted", 0) + result.timings["images_extracted"],
    }
    return result


def _with_regions(dataset: Dataset, described: Dataset) -> Dataset:
    """``dataset`` with the regions its photos were described by (the automatic foreground's
    included), so that reports show what was compared."""
    columns = [c for c in (BBOX, SEGMENTATION, REGION_SOURCE) if c in described.table]
    if not columns:
        return dataset
    regions = described.table.drop_duplicates("image_id").set_index("image_id")[columns]
    table = dataset.table.copy()
    for column in columns:
        table[column] = table["image_id"].map(regions[column]).astype(object)
    return Dataset(table, dataset.source)


def _in_table_order(dataset: Dataset, *failures):
    """Database and query failures as one table, in the dataset's row order."""
    import pandas as pd

    table = pd.concat([f for f in failures if len(f)] or [failures[0]], ignore_index=True)
    position = {image_id: row for row, image_id in enumerate(dataset.table["image_id"])}
    return table.sort_values("image_id", key=lambda ids: ids.map(position), kind="stable").reset_index(drop=True)
