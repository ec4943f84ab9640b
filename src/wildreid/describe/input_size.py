"""How large the backbone reads each picture: its own input size, or one that follows the photos.

A network trained on 224-pixel ImageNet pictures reads a 1,400-pixel photo of a nyala at 224
pixels, where a flank's stripes are a few pixels wide; read at 384 they are three times wider.
A 130-pixel crop of a lion's face gains nothing from being enlarged: it has no more detail to
give. So the preset field ``input_size`` ("auto") reads a gallery's pictures at the largest size
of INPUT_SIZES that the database photos' median short side fills, never below the backbone's
own. Measured on the databases alone, identities held out (BENCHMARKS.md, issue 20, seventh
slice; `benchmarks/adaptation_levels.py --input-sizes`): whitened top-1 on NyalaData's full
photos 0.510 (224) -> 0.557 (320) -> 0.594 (384); on LionData's ~130-pixel crops 0.319 (224) ->
0.298 (384), on Holstein2025's ~100-pixel crops 0.697 (224) -> 0.665 (320). 384 is the
largest step: 448 and 512 were no better on NyalaData's database (0.557, 0.601) at 1.4-1.8 times
384's cost. Only a network that reads any size is resized (timm's ``fixed_input_size``: a Swin
MegaDescriptor keeps its own). The field is "auto" in the `fusion` preset; `offline`, the fast
one, keeps 224 (it would describe large photos 2.5 times slower). A catalogue's gallery chooses its
size when it is built and reads its pictures through the server's one model (at_size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from wildreid.data.dataset import DATABASE
from wildreid.data.regions import Region, regions_of
from wildreid.describe.backbones import Backbone

INPUT_SIZES = (224, 320, 384)  # the sizes "auto" chooses among (square, multiples of the stride 32)
SAMPLE = 200  # photos whose size is read: the median of 200 is steady, and reading is cheap


def short_side(path: str, region: Region | None) -> float | None:
    """The short side of the picture the backbone reads: the region's box, or the photo (its
    header only); None for a photo that cannot be read (extraction reports it)."""
    if region is not None and region.box is not None:
        return float(min(region.box[2], region.box[3]))
    try:
        with Image.open(path) as image:
            return float(min(image.size))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def size_for_photos(
    paths: Sequence[str], own: int, regions: Sequence[Region | None] | None = None, *, seed: int = 0
) -> int:
    """The largest of INPUT_SIZES that the photos' median short side fills, and at least ``own``
    (the backbone's input size); ``own`` when no photo can be read."""
    rows = np.arange(len(paths))
    if len(rows) > SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(rows, SAMPLE, replace=False))
    sides = [short_side(paths[row], regions[row] if regions is not None else None) for row in rows.tolist()]
    found = [side for side in sides if side is not None]
    if not found:
        return own
    median = float(np.median(found))
    return max([own, *(size for size in INPUT_SIZES if size <= median)])


def read_at_input_size(backbone: Backbone, setting: int | str | None, photos: pd.DataFrame, margin: float) -> Backbone:
    """``backbone`` reading square pictures of the size ``setting`` asks for: None keeps its own,
    a number is that size, "auto" follows ``photos`` (a table of path[, split, bbox,
    segmentation]: its database rows, all rows without a split; their regions grown by
    ``margin``). Changes the backbone in place, and so its fingerprint: descriptors cached at
    another size are not reused."""
    if setting is None or (setting == "auto" and not reads_any_size(backbone)):
        return backbone
    height, width = backbone.preprocess.size
    if setting == "auto":
        database = photos[photos["split"] == DATABASE] if "split" in photos else photos
        size = size_for_photos(database["path"].tolist(), min(height, width), regions_of(database, margin))
    else:
        size = int(setting)
    if (size, size) != (height, width):
        backbone.preprocess = dataclasses.replace(backbone.preprocess, size=(size, size))
    return backbone


def at_size(backbone: Backbone, size: tuple[int, int]) -> Backbone:
    """``backbone``, a model loaded once and shared (a server's), reading pictures at ``size`` (the
    size a saved gallery chose for its photos): a copy that shares the model. ``backbone`` itself
    where it reads at that size already, or reads one size only; any other difference is left
    for the gallery's fingerprint check to refuse."""
    height, width = size  # a saved record may hold a list
    if (height, width) == tuple(backbone.preprocess.size) or not reads_any_size(backbone):
        return backbone
    return dataclasses.replace(backbone, preprocess=dataclasses.replace(backbone.preprocess, size=(height, width)))


def reads_any_size(backbone: Backbone) -> bool:
    """Whether the model takes pictures of any size (a convolutional network, as timm's
    pretrained_cfg says: a Swin transformer's windows fix its size). Unknown: no."""
    config = getattr(backbone.model, "pretrained_cfg", None) or {}
    return config.get("fixed_input_size") is False
