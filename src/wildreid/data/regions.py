"""Regions: the part of a photo that shows the animal, so that descriptors and keypoints describe
the animal and not the site it stands in.

A region comes from one of three places, in this order of precedence:

1. the metadata, in the wildlife-datasets convention: a ``bbox`` column ``[x, y, w, h]`` in pixels
   (x, y the top-left corner) and/or a ``segmentation`` column, a COCO mask (RLE, compressed or
   not, or polygons);
2. a MegaDetector results file (detections.py turns each animal into a row with a ``bbox``);
3. the automatic foreground (foreground.py), for rows with neither, when the preset asks for it.

Coordinates are those of the photo as displayed, EXIF orientation applied (as MegaDetector and
wildlife-datasets read them). Inside wildreid a region is plain text in the table (a canonical
``bbox`` cell and ``segmentation`` cell), and a :class:`Region` (those two plus the margin) when
pixels are read. Its :func:`region_key` joins the photo's content hash, so a crop never reuses the
whole photo's cached descriptor or keypoints, and two detections in one photo never share one.

What a region does to the pixels (:func:`read_region`):

- the box, grown by ``margin`` times its width (height) on each side and clipped to the photo, is
  cut out;
- with a segmentation, the box is the mask's own bounding box unless a ``bbox`` is given; the
  global descriptor sees the pixels outside the mask in black (wildlife-datasets' ``bbox_mask``,
  the input MegaDescriptor was trained on), and keypoints outside the mask are dropped (they are
  detected on the real pixels: a black background would put keypoints on the outline).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from PIL import ExifTags, Image

from wildreid.data.region_margin import DEFAULT_MARGIN, check_margin

BBOX = "bbox"
SEGMENTATION = "segmentation"
REGION_SOURCE = "region_source"  # metadata, megadetector or foreground-<method>: shown in reports
# A box may run past the photo's edge by this fraction of the photo (plus 2 pixels) before it
# counts as wrong: detectors round, and annotation tools let a box touch the border.
EDGE_TOLERANCE = 0.02
# In every cache key of a region: changing how a region turns into pixels changes this.
KEY_VERSION = "region-v1"
_ORIENTATION_SWAPS = {5, 6, 7, 8}  # EXIF orientations stored sideways


@dataclass(frozen=True)
class Region:
    """What :func:`read_region` needs: a box and/or a mask, and the margin."""

    box: tuple[float, float, float, float] | None  # x, y, w, h in pixels of the upright photo
    segmentation: str | None = None  # canonical JSON text of a COCO mask
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        if self.box is None and self.segmentation is None:
            raise ValueError("a region needs a box or a segmentation")
        check_margin(self.margin)

    def to_json(self) -> str:
        """Canonical text: equal regions give equal text (cache keys, Ray rows)."""
        return json.dumps(
            {
                "box": None if self.box is None else [_round(v) for v in self.box],
                "segmentation": self.segmentation,
                "margin": _round(self.margin),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> "Region":
        content = json.loads(text)
        box = content["box"]
        return cls(None if box is None else tuple(box), content["segmentation"], content["margin"])


def region_key(digest: str, region: Region | None) -> str:
    """The cache key of a photo's region: the content hash itself for the whole photo, else a
    SHA-256 (hex, like a content hash) of the hash, the region and KEY_VERSION."""
    if region is None:
        return digest
    return hashlib.sha256(f"{KEY_VERSION}|{digest}|{region.to_json()}".encode()).hexdigest()


def region_keys(digests: list[str | None], regions: list[Region | None] | None) -> list[str | None]:
    if regions is None:
        return list(digests)
    return [None if digest is None else region_key(digest, region) for digest, region in zip(digests, regions)]


# --------------------------------------------------------------------------------------------
# Reading the metadata cells


def _literal(value: object) -> Any:
    """A cell's JSON, or Python literal (wildlife-datasets' CSVs hold str() of lists and dicts)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)  # literals only: never runs code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not a list or dict (JSON or Python literal)") from None


def parse_bbox(value: object) -> tuple[float, float, float, float]:
    """``"[x, y, w, h]"`` (or a sequence) -> four floats; ValueError saying what is wrong."""
    content = _literal(value)
    if not isinstance(content, (list, tuple)) or len(content) != 4:
        raise ValueError("expected four numbers [x, y, width, height]")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in content):
        raise ValueError("expected four finite numbers [x, y, width, height]")
    x, y, w, h = (float(v) for v in content)
    if w <= 0 or h <= 0:
        raise ValueError(f"width {_round(w)} and height {_round(h)} must both be positive")
    return x, y, w, h


def format_bbox(box: Iterable[float]) -> str:
    return "[" + ", ".join(str(_round(v)) for v in box) + "]"


def parse_segmentation(value: object) -> dict[str, Any] | list[list[float]]:
    """A COCO mask -> its JSON-able content: an RLE dict ``{"size": [h, w], "counts": ...}``
    (counts a compressed string or a list of run lengths), a polygon ``[x1, y1, x2, y2, ...]``, or a
    list of polygons. ValueError saying what is wrong."""
    try:
        content = _literal(value)
    except ValueError:
        raise ValueError(
            "not a COCO mask (an RLE dict or polygon list); mask image files are not read, "
            "convert them to RLE with pycocotools.mask.encode"
        ) from None
    if isinstance(content, dict):
        size, counts = content.get("size"), content.get("counts")
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise ValueError("an RLE mask needs 'size': [height, width], two positive whole numbers")
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        if not (isinstance(counts, str) and counts) and not (
            isinstance(counts, (list, tuple))
            and counts
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts)
        ):
            raise ValueError("an RLE mask needs 'counts': a compressed RLE string or a list of run lengths")
        if isinstance(counts, (list, tuple)) and sum(counts) != size[0] * size[1]:
            raise ValueError(f"the run lengths add up to {sum(counts)}, not height x width = {size[0] * size[1]}")
        return {"size": list(size), "counts": counts if isinstance(counts, str) else list(counts)}
    if isinstance(content, (list, tuple)) and content:
        polygons = content if all(isinstance(p, (list, tuple)) for p in content) else [content]
        for polygon in polygons:
            if (
                len(polygon) < 6
                or len(polygon) % 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in polygon)
            ):
                raise ValueError("a polygon is a list of at least three x, y pixel pairs [x1, y1, x2, y2, x3, y3, ...]")
        return [[float(v) for v in polygon] for polygon in polygons]
    raise ValueError("expected an RLE dict {'size': [h, w], 'counts': ...} or a polygon list")


def canonical_segmentation(content: object) -> str:
    return json.dumps(content, separators=(",", ":"))


def normalise_region_columns(table: pd.DataFrame, where: Callable[[Hashable], str]) -> list[str]:
    """Check the ``bbox`` and ``segmentation`` cells of a dataset table and rewrite them in
    canonical form (in place); return one problem per bad cell, naming its row (``where(index)``)
    and field and saying what to do."""
    problems: list[str] = []
    advice = {
        BBOX: "write it as [x, y, width, height] in pixels of the photo (wildlife-datasets' convention; "
        "x, y the top-left corner), or leave the cell empty to use the whole photo",
        SEGMENTATION: "give a COCO mask (RLE {'size': [height, width], 'counts': ...} or polygons "
        "[[x1, y1, x2, y2, ...]]), or leave the cell empty",
    }
    canonical_text: dict[str, Callable[[object], str]] = {
        BBOX: lambda value: format_bbox(parse_bbox(value)),
        SEGMENTATION: lambda value: canonical_segmentation(parse_segmentation(value)),
    }
    for column, canonical in canonical_text.items():
        if column not in table:
            continue
        values = list(table[column])
        for position, (index, value) in enumerate(zip(table.index, values)):
            if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
                values[position] = None
                continue
            try:
                values[position] = canonical(value)
            except ValueError as error:
                shown = str(value) if len(str(value)) <= 60 else str(value)[:57] + "..."
                problems.append(f"{where(index)}, field '{column}': '{shown}': {error}; {advice[column]}.")
        table[column] = values
    return problems


def check_boxes_inside(table: pd.DataFrame, where: Callable[[Hashable], str]) -> list[str]:
    """Rows whose ``bbox`` lies (beyond EDGE_TOLERANCE) outside the photo, or whose segmentation
    has another size than the photo: one problem each. Reads each such photo's header only."""
    problems: list[str] = []
    for column in (BBOX, SEGMENTATION):
        if column not in table:
            continue
        for index, path, value in zip(table.index, table["path"], table[column]):
            if value is None:
                continue
            try:
                with open(path, "rb") as handle:
                    width, height = upright_size(handle.read(1 << 20))
            except (OSError, ValueError):
                continue  # unreadable: reported as such when the photo is read
            if column == BBOX:
                reason = box_outside(parse_bbox(value), width, height)
                if reason:
                    problems.append(
                        f"{where(index)}, field 'bbox': {value} {reason} ({width}x{height} pixels). "
                        "wildreid reads [x, y, width, height] in pixels: is the box written as "
                        "[x1, y1, x2, y2], or in fractions of the photo? Fix the cell or leave it empty."
                    )
            else:
                size = mask_size(json.loads(value))
                if size is not None and size != (height, width):
                    problems.append(
                        f"{where(index)}, field 'segmentation': the mask is {size[1]}x{size[0]} pixels, the photo "
                        f"{width}x{height}; give the mask of this photo as displayed (EXIF orientation applied)."
                    )
    return problems


def box_outside(box: tuple[float, float, float, float], width: int, height: int) -> str | None:
    """Why ``box`` does not fit a ``width`` x ``height`` photo, or None."""
    x, y, w, h = box
    slack_x, slack_y = EDGE_TOLERANCE * width + 2, EDGE_TOLERANCE * height + 2
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "lies outside the photo"
    if x < -slack_x or y < -slack_y or x + w > width + slack_x or y + h > height + slack_y:
        return "runs past the photo's edge"
    return None


def mask_size(content: object) -> tuple[int, int] | None:
    """(height, width) of an RLE mask; None for polygons (they have no size)."""
    if not isinstance(content, dict):
        return None
    height, width = content["size"]  # two numbers: parse_segmentation checked
    return height, width


def regions_of(table: pd.DataFrame, margin: float = DEFAULT_MARGIN) -> list[Region | None] | None:
    """Per row of a dataset table, its Region (None: the whole photo); None when no row has one."""
    boxes = table[BBOX].tolist() if BBOX in table else [None] * len(table)
    masks = table[SEGMENTATION].tolist() if SEGMENTATION in table else [None] * len(table)
    regions = [
        None
        if _empty(box) and _empty(mask)
        else Region(None if _empty(box) else parse_bbox(box), None if _empty(mask) else mask, margin)
        for box, mask in zip(boxes, masks)
    ]
    return regions if any(r is not None for r in regions) else None


def _empty(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------------------------
# Pixels


def upright_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the photo as displayed, from its header (no pixel is decoded; ``data``
    may be only the file's beginning). ValueError when PIL cannot read the header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as error:  # noqa: BLE001 - any header PIL cannot parse
        raise ValueError(f"cannot read the photo's size ({error})") from None
    return (height, width) if orientation in _ORIENTATION_SWAPS else (width, height)


def mask_pixels(segmentation: str, height: int, width: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The mask of a ``width`` x ``height`` photo (as displayed) as a bool array, resized to
    ``shape`` (rows, columns) when the photo was decoded smaller."""
    from pycocotools import mask as coco

    content = json.loads(segmentation)
    with warnings.catch_warnings():
        # pycocotools 2.0.11 under NumPy 2 warns about the copy keyword of its own arrays.
        warnings.simplefilter("ignore", DeprecationWarning)
        if isinstance(content, dict):
            counts = content["counts"]
            if isinstance(counts, list):
                rle = coco.frPyObjects(content, *content["size"])
            else:
                rle = {"size": content["size"], "counts": counts.encode("ascii")}
            decoded = coco.decode(rle)
        else:
            decoded = coco.decode(coco.merge(coco.frPyObjects(content, height, width)))
    mask: np.ndarray = decoded.astype(bool)
    if shape is not None and mask.shape != tuple(shape):
        mask = np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST))
    return mask


def crop_box(
    region: Region,
    width: int,
    height: int,
    scale: tuple[float, float] = (1.0, 1.0),
    mask: np.ndarray | None = None,
) -> tuple[int, int, int, int] | None:
    """The pixel box (left, top, right, bottom) ``read_region`` cuts out of a picture of
    ``width`` x ``height`` that is ``scale`` (x, y) times the upright photo; None when empty."""
    if region.box is not None:
        x, y, w, h = region.box
        x, y, w, h = x * scale[0], y * scale[1], w * scale[0], h * scale[1]
    elif mask is not None and mask.any():
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        x, y = float(columns[0]), float(rows[0])
        w, h = float(columns[-1] + 1 - columns[0]), float(rows[-1] + 1 - rows[0])
    else:
        return None
    left = max(0, math.floor(x - region.margin * w))
    top = max(0, math.floor(y - region.margin * h))
    right = min(width, math.ceil(x + w + region.margin * w))
    bottom = min(height, math.ceil(y + h + region.margin * h))
    if right - left < 1 or bottom - top < 1:
        return None
    return left, top, right, bottom


def read_region(
    image: Image.Image, data: bytes, region: Region | None, name: str = "<image>"
) -> tuple[Image.Image, np.ndarray | None]:
    """(the region's picture, its mask or None) of ``image``, the photo decoded from ``data``
    (possibly reduced: the region is scaled to it). ImageReadError when the region is empty."""
    from wildreid.data.images import ImageReadError

    if region is None:
        return image, None
    width, height = upright_size(data)
    scale = (image.width / width, image.height / height)  # below 1 when decoding reduced the photo
    mask = None
    if region.segmentation:
        mask = mask_pixels(region.segmentation, height, width, (image.height, image.width))
    box = crop_box(region, image.width, image.height, scale, mask)
    if box is None:
        what = f"bbox {format_bbox(region.box)}" if region.box is not None else "segmentation (empty mask)"
        raise ImageReadError(
            f"{name}: its {what} leaves nothing of the {width}x{height} photo; fix the region or leave it empty."
        )
    left, top, right, bottom = box
    cropped = image.crop(box)
    return cropped, None if mask is None else mask[top:bottom, left:right]


def blacken_outside(image: Image.Image, mask: np.ndarray | None) -> Image.Image:
    """The picture with the pixels outside ``mask`` black (wildlife-datasets' ``bbox_mask``)."""
    if mask is None:
        return image
    return Image.fromarray(np.asarray(image) * mask[..., None].astype(np.uint8))


def region_picture(data: bytes, name: str, region: Region | None) -> Image.Image:
    """The global descriptor's input picture of a photo's region (mask applied)."""
    from wildreid.data.images import decode_image

    return blacken_outside(*read_region(decode_image(data, name), data, region, name))


def _round(value: float) -> int | float:
    """Two decimals, and whole numbers without '.0' (so '[10, 20, 100, 80]' stays as written)."""
    value = round(float(value), 2)
    return int(value) if value.is_integer() else value
