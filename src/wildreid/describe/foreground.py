"""Automatic foreground: a box around the animal for photos that come without a region.

Both methods start from the class-activation map (Zhou et al., CVPR 2016, "Learning Deep
Features for Discriminative Localization") of the ImageNet EfficientNet-Lite0 classifier that the
offline preset already carries (backbones.packaged_imagenet_classifier: no download). The network
ends in global average pooling and one linear layer, so the evidence for class c at each place of
the last feature map is the classifier's row c applied to the features there. wildreid weights
the maps of the photo's CAM_CLASSES most probable *animal* classes (ImageNet classes 0-397 are
animals: fish, birds, reptiles, amphibians, invertebrates, mammals) by their probabilities,
upsamples the map and keeps the places above CAM_THRESHOLD of its maximum. That keeps the animal
and drops the site around it:

- ``cam``: the kept places' bounding box becomes the photo's region (regions.py: margin, cache
  keys, crops) exactly as a metadata box would;
- ``cam-mask``: the box, and the kept places' outline as a polygon segmentation, so that the
  global descriptor sees the site inside the box black and keypoints on it are dropped, as with
  a metadata mask.

Every setting is fixed, none was tuned on the shared datasets: CAM_THRESHOLD = 0.2 is the value
of the CAM paper's localisation experiments; CAM_SIZE = 320 gives a 10 x 10 map (224 gives 7 x 7,
too coarse to cut a leg or a tail off cleanly) at about twice the cost of 224; CAM_CLASSES = 5
because a species that is no ImageNet class (a nyala) spreads its probability over its nearest
classes (impala, hartebeest, gazelle...).

The maps (10 x 10 numbers per photo) are cached per photo content (``<cache>/foreground-<settings>``,
the embedding cache's shard format), so a re-run, a second preset or the other method pays nothing.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wildreid.data.regions import (
    BBOX,
    REGION_SOURCE,
    SEGMENTATION,
    canonical_segmentation,
    format_bbox,
    regions_of,
    upright_size,
)
from wildreid.describe.foreground_methods import check_method

CAM_SIZE = 320
CAM_CLASSES = 5
CAM_THRESHOLD = 0.2
CAM_UPSAMPLE = 8  # the map is upsampled (bilinear) by this factor before thresholding
ANIMAL_CLASSES = 398  # ImageNet-1k classes 0-397 are animals
BATCH = 16


@dataclass
class Foreground:
    """What :func:`add_foreground` did: maps computed or read from the cache, and its time."""

    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


def add_foreground(
    table: pd.DataFrame, method: str, *, cache_dir=None, device: str | None = None, progress: bool = False
) -> tuple[pd.DataFrame, Foreground]:
    """The table with the foreground's region on every row that has neither a bbox nor a
    segmentation: a ``bbox`` ("cam"), or a ``bbox`` and the thresholded map's outline as a
    polygon ``segmentation`` ("cam-mask"); ``region_source`` 'foreground-METHOD'. Unreadable
    photos are left as they are (they are reported when their descriptors are extracted)."""
    check_method(method)
    started = time.perf_counter()
    table = table.copy()
    for column in (BBOX, SEGMENTATION, REGION_SOURCE):
        if column not in table:
            table[column] = None
    lacking = np.flatnonzero((table[BBOX].isna() & table[SEGMENTATION].isna()).to_numpy())
    if len(lacking) == 0:
        return table, Foreground()
    maps, sizes, record = cam_maps(
        [table["path"].iloc[i] for i in lacking], cache_dir=cache_dir, device=device, progress=progress
    )
    bbox, mask, source = (np.array(table[c], dtype=object) for c in (BBOX, SEGMENTATION, REGION_SOURCE))
    for row, cam, size in zip(lacking, maps, sizes):
        if cam is None:
            continue
        kept = map_mask(cam)
        box = mask_box(kept, *size)
        if box is None:
            continue
        bbox[row], source[row] = format_bbox(box), f"foreground-{method}"
        if method == "cam-mask":
            mask[row] = canonical_segmentation(mask_polygons(kept, *size))
    table[BBOX], table[SEGMENTATION], table[REGION_SOURCE] = bbox, mask, source
    record.seconds = time.perf_counter() - started
    return table, record


def settings_key() -> str:
    """The cache folder of the maps: everything that changes a map (the threshold does not)."""
    return f"foreground-cam-lite0-s{CAM_SIZE}-k{CAM_CLASSES}-v2"


def cam_boxes(paths, *, cache_dir=None, device: str | None = None, progress: bool = False):
    """Per photo its CAM box [x, y, w, h] in pixels of the photo as displayed (None: unreadable,
    or no animal evidence anywhere), and a Foreground record."""
    maps, sizes, record = cam_maps(paths, cache_dir=cache_dir, device=device, progress=progress)
    boxes = [None if cam is None else mask_box(map_mask(cam), *size) for cam, size in zip(maps, sizes)]
    return boxes, record


def cam_maps(paths, *, cache_dir=None, device: str | None = None, progress: bool = False):
    """(per photo its class-activation map, a small square array over the whole photo, or None
    when unreadable; per photo its (width, height) as displayed; a Foreground record). Maps are
    cached by content hash."""
    import torch

    from wildreid.data.images import ImageReadError, content_hash, decode_image, read_image_bytes
    from wildreid.describe.extract import EmbeddingCache, default_device, image_to_tensor

    cache = EmbeddingCache(cache_dir, settings_key()) if cache_dir is not None else None
    known = cache.load() if cache else {}
    record = Foreground()
    maps: list[np.ndarray | None] = [None] * len(paths)
    sizes: list[tuple[int, int] | None] = [None] * len(paths)
    todo: list[tuple[int, str]] = []  # (row, content hash) of the maps to compute
    for row, path in enumerate(paths):
        try:
            data = read_image_bytes(path)
            digest, sizes[row] = content_hash(data), upright_size(data)
        except (ImageReadError, ValueError):
            continue
        if digest in known:
            side = round(len(known[digest]) ** 0.5)
            maps[row] = known[digest].reshape(side, side)
            record.cached += 1
        else:
            todo.append((row, digest))

    if todo:
        model, preprocess = _model(device or default_device())
        bar = _bar(len(todo), progress)
        for start in range(0, len(todo), BATCH):
            rows: list[int] = []
            hashes: list[str] = []
            tensors = []
            for row, digest in todo[start : start + BATCH]:
                try:
                    # Decoded at a reduced JPEG scale that still covers twice the map's input: the
                    # map covers the whole photo whatever its scale.
                    data = read_image_bytes(paths[row])
                    picture = decode_image(data, paths[row], draft_size=(2 * CAM_SIZE, 2 * CAM_SIZE))
                except ImageReadError:
                    continue
                rows.append(row)
                hashes.append(digest)
                tensors.append(image_to_tensor(picture, preprocess))
            if rows:
                batch = torch.stack(tensors).to(next(model.parameters()).device)
                cams = class_activation_maps(model, batch)
                for row, cam in zip(rows, cams):
                    maps[row] = cam
                if cache:
                    cache.save(hashes, np.stack([cam.ravel() for cam in cams]))
                record.computed += len(rows)
            if bar is not None:
                bar.update(len(todo[start : start + BATCH]))
        if bar is not None:
            bar.close()
    return maps, sizes, record


def class_activation_maps(model, batch) -> np.ndarray:
    """(N, h, w) animal-class CAMs of ``batch`` (model input): the maps of each image's
    CAM_CLASSES most probable animal classes, weighted by their probabilities."""
    import torch

    with torch.no_grad():
        features = model.forward_features(batch)  # (N, C, h, w), after the last 1x1 conv
        probabilities = model.forward_head(features).softmax(1)[:, :ANIMAL_CLASSES]
        top = probabilities.topk(CAM_CLASSES, dim=1)
        weights = model.classifier.weight[top.indices]  # (N, K, C)
        maps = torch.einsum("nkc,nchw->nkhw", weights, features)
        cam = (maps * top.values[:, :, None, None]).sum(1) / top.values.sum(1)[:, None, None]
    return cam.cpu().numpy().astype(np.float32)


def map_mask(cam: np.ndarray) -> np.ndarray:
    """The map upsampled (bilinear, CAM_UPSAMPLE times) and kept where it reaches CAM_THRESHOLD
    of its peak: a bool array over the whole photo (all False: no positive evidence anywhere)."""
    import torch
    import torch.nn.functional as F

    h, w = cam.shape
    upsampled = F.interpolate(
        torch.from_numpy(cam)[None, None], size=(h * CAM_UPSAMPLE, w * CAM_UPSAMPLE), mode="bilinear"
    )
    up = upsampled[0, 0].numpy()
    peak = up.max()
    return up >= CAM_THRESHOLD * peak if peak > 0 else np.zeros_like(up, dtype=bool)


def mask_box(mask: np.ndarray, width: int, height: int):
    """The bounding box [x, y, w, h] of ``mask`` (over the whole photo) in pixels of a ``width``
    x ``height`` photo; None for an empty mask."""
    if not mask.any():
        return None
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    sx, sy = width / mask.shape[1], height / mask.shape[0]
    return (columns[0] * sx, rows[0] * sy, (columns[-1] + 1 - columns[0]) * sx, (rows[-1] + 1 - rows[0]) * sy)


def mask_polygons(mask: np.ndarray, width: int, height: int) -> list[list[float]]:
    """The outlines of ``mask``'s parts as COCO polygons in pixels of a ``width`` x ``height``
    photo (a few dozen points, where an RLE of a large photo would take kilobytes)."""
    import cv2

    # Traced on the mask doubled in size, so that a one-cell part still has an outline of area.
    doubled = mask.astype(np.uint8).repeat(2, axis=0).repeat(2, axis=1)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    sx, sy = width / doubled.shape[1], height / doubled.shape[0]
    polygons = []
    for contour in contours:
        # Simplified to within one cell of the doubled mask: the map is far coarser than that.
        points = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2).astype(np.float64)
        if len(points) < 3:
            continue
        # Pixel centres to the pixels' outer edges: the polygon covers the cells, not their centres.
        centre = points.mean(axis=0)
        points = points + 0.5 + 0.5 * np.sign(points - centre)
        polygons.append([round(float(v), 1) for xy in zip(points[:, 0] * sx, points[:, 1] * sy) for v in xy])
    return polygons


@functools.lru_cache(maxsize=2)
def _model(device: str):
    """The ImageNet classifier and its input (the model's own normalisation, at CAM_SIZE)."""
    from wildreid.describe.backbones import Preprocess, packaged_imagenet_classifier, preprocess_from_model

    model = packaged_imagenet_classifier().to(device)
    own = preprocess_from_model(model)
    return model, Preprocess((CAM_SIZE, CAM_SIZE), own.mean, own.std, own.interpolation)


def _bar(total: int, progress: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="foreground (CAM)", unit="img", disable=not progress)


def table_regions(
    table, margin: float, foreground: str | None = None, *, cache_dir=None, device=None, progress: bool = False
):
    """(the table with its region columns - ``region_source`` 'metadata' for the given ones, and
    the automatic ``foreground`` filled in where a row has none -, per row its Region or None for
    all-whole-photos, the foreground.Foreground record or None)."""
    table = table.copy()
    for column in (BBOX, SEGMENTATION, REGION_SOURCE):
        if column not in table:
            table[column] = None
    given = table[BBOX].notna() | table[SEGMENTATION].notna()
    table[REGION_SOURCE] = table[REGION_SOURCE].where(table[REGION_SOURCE].notna() | ~given, "metadata")
    record = None
    if foreground:
        from wildreid.describe.foreground import add_foreground

        table, record = add_foreground(table, foreground, cache_dir=cache_dir, device=device, progress=progress)
    return table, regions_of(table, margin), record
