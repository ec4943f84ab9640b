"""MegaDetector results: each animal a photo holds becomes its own row, with its box as region.

The file is MegaDetector's batch output (https://lila.science/megadetector-output-format), as
written by the ``megadetector`` package, AddaxAI/EcoAssist and Timelapse's tools:

    {"info": {"format_version": "1.4", ...},
     "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
     "images": [{"file": "site1/IMG_0001.JPG",
                 "detections": [{"category": "1", "conf": 0.93, "bbox": [x, y, w, h]}, ...]},
                {"file": "site1/IMG_0002.JPG", "failure": "Failure image access", "detections": null}]}

``bbox`` is [x_min, y_min, width, height] as fractions of the photo (EXIF orientation applied,
as MegaDetector reads it). The categories named "animal" are used; persons and vehicles never.

Rows: a photo with animals above the confidence threshold becomes one row per animal, whose
image id is ``<image_id>#<k>``: k is the detection's place in the file's list for that photo (1 =
first listed), so a detection keeps its id whatever the threshold. Every other photo - no animal
above the threshold, MegaDetector failed on it, or it is not in the file - is listed in the
``no_animal`` table with the reason, never silently dropped.

Matching the file's paths to the dataset: both separators are accepted, and a row matches the
entry with which it shares the longest tail of path components (``site1/IMG_0001.JPG`` and
``D:\\cams\\site1\\IMG_0001.JPG`` both match ``/data/cams/site1/IMG_0001.JPG``), so relative
paths, absolute ones and photos moved to another machine all match. A row whose longest shared
tail several entries share, an entry that several rows match, and a file none of whose entries
match are errors that say so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from wildreid.data.dataset import DatasetError
from wildreid.data.regions import BBOX, REGION_SOURCE, SEGMENTATION, format_bbox, upright_size

# MegaDetector v5's own recommendation ("typical_detection_threshold" in its files' metadata,
# and AddaxAI's default): about all animals, few false boxes. A stricter value misses animals
# that are partly hidden or far away; a looser one adds boxes of rocks and branches, each of which
# would become a query of its own.
DEFAULT_THRESHOLD = 0.2
DETECTION = "detection"  # column: the detection's place in its photo's list (1 = first)
CONFIDENCE = "detection_conf"
SEPARATOR = "#"


@dataclass
class Detections:
    """The usable content of a results file: per file path (as written), its detections or the
    reason it has none."""

    source: str
    animal_categories: set[str]
    entries: dict[str, list[dict[str, Any]] | str]  # file -> detections, or the failure text


def read_detections(path: str | Path) -> Detections:
    """Read and check a MegaDetector results file; DatasetError naming the file and what is wrong."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: detections file not found.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the detections file ({error}).") from None
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path}: not JSON ({error.msg} at line {error.lineno}); give MegaDetector's batch output file "
            "(run_detector_batch.py, AddaxAI or EcoAssist)."
        ) from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DatasetError(
            f"{path}: not a MegaDetector results file: expected an object with an 'images' list "
            "(https://lila.science/megadetector-output-format)."
        )
    categories = content.get("detection_categories")
    if not isinstance(categories, dict) or not categories:
        raise DatasetError(
            f'{path}: no \'detection_categories\' (e.g. {{"1": "animal"}}); is this MegaDetector output?'
        )
    animal = {str(key) for key, name in categories.items() if str(name).strip().lower() == "animal"}
    if not animal:
        raise DatasetError(
            f"{path}: no detection category is named 'animal' (categories: {categories}); wildreid uses "
            "the animal detections only."
        )
    entries: dict[str, list[dict[str, Any]] | str] = {}
    problems = []
    for number, image in enumerate(content["images"]):
        where = f"images[{number}]"
        if not isinstance(image, dict) or not isinstance(image.get("file"), str) or not image["file"].strip():
            problems.append(f"{where}: no 'file' path")
            continue
        file, failure, found = image["file"], image.get("failure"), image.get("detections")
        if failure:
            entries[file] = f"MegaDetector could not process it ({failure})"
            continue
        if found is None:
            entries[file] = "MegaDetector listed no detections for it"
            continue
        if not isinstance(found, list):
            problems.append(f"{where} ({file}): 'detections' is not a list")
            continue
        detections = []
        for k, detection in enumerate(found, start=1):
            try:
                detections.append(_detection(detection, k))
            except ValueError as error:
                problems.append(f"{where} ({file}), detection {k}: {error}")
        entries[file] = detections
    if problems:
        shown = "\n- ".join(problems[:20]) + (f"\n- and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise DatasetError(
            f"{path}: {len(problems)} malformed entr{'y' if len(problems) == 1 else 'ies'}:\n- {shown}\n"
            "Each detection needs 'category', 'conf' (0-1) and 'bbox' [x, y, width, height] as fractions "
            "of the photo; regenerate the file or fix these entries."
        )
    return Detections(str(path), animal, entries)


def _detection(detection: object, k: int) -> dict[str, Any]:
    if not isinstance(detection, dict):
        raise ValueError("not an object")
    box, conf = detection.get("bbox"), detection.get("conf")
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
        raise ValueError(f"'conf' {conf!r} is not a confidence between 0 and 1")
    if (
        not isinstance(box, list)
        or len(box) != 4
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in box)
    ):
        raise ValueError(f"'bbox' {box!r} is not four numbers [x, y, width, height]")
    if box[2] <= 0 or box[3] <= 0 or box[0] > 1 or box[1] > 1 or box[2] > 1.001 or box[3] > 1.001:
        raise ValueError(f"'bbox' {box} is not [x, y, width, height] as fractions (0-1) of the photo")
    return {"k": k, "category": str(detection.get("category")), "conf": float(conf), "bbox": [float(v) for v in box]}


def _parts(path: str) -> tuple[str, ...]:
    """Path components, whichever separator was used; '.' and empty parts dropped."""
    return tuple(part for part in PurePosixPath(path.replace("\\", "/")).parts if part not in ("", ".", "/"))


def match_rows(detections: Detections, paths: list[str]) -> list[str | None]:
    """For each dataset path, the results file's entry (its 'file') that names it, or None.

    A row and an entry match by the longest tail of path components they share, and that tail must
    belong to this one entry: ``/data/cams/site1/IMG_1.JPG`` matches ``site1\\IMG_1.JPG`` and
    ``D:\\cams\\site1\\IMG_1.JPG`` (the same photo on another machine), and is refused when its
    longest shared tail is shared with several entries too (``IMG_1.JPG`` of site1 and site2)."""
    several = object()
    tails: dict[tuple[str, ...], object] = {}
    for file in detections.entries:
        parts = _parts(file)
        for length in range(1, len(parts) + 1):
            tail = parts[-length:]
            tails[tail] = file if tails.get(tail, file) == file else several
    longest = max((len(t) for t in tails), default=0)
    matched: list[str | None] = []
    unclear: list[tuple[str, tuple[str, ...]]] = []
    for path in paths:
        parts = _parts(str(path))
        found = None
        for length in range(min(len(parts), longest), 0, -1):
            entry = tails.get(parts[-length:])
            if entry is None:
                continue
            if isinstance(entry, str):
                found = entry
            else:  # several entries end in this tail
                unclear.append((str(path), parts[-length:]))
            break
        matched.append(found)
    if unclear:
        path, tail = unclear[0]
        raise DatasetError(
            f"{detections.source}: the photo {path} could be any of several entries ending in "
            f"'{'/'.join(tail)}' ({len(unclear)} such photo(s)). Run MegaDetector on the dataset's folder so "
            "that its paths include the sub-folders that tell the photos apart."
        )
    claimed: dict[str, list[str]] = {}
    for path, matched_file in zip(paths, matched):
        if matched_file is not None:
            claimed.setdefault(matched_file, []).append(str(path))
    ambiguous = {file: rows for file, rows in claimed.items() if len(rows) > 1}
    if ambiguous:
        file, rows = next(iter(ambiguous.items()))
        raise DatasetError(
            f"{detections.source}: the entry '{file}' names {len(rows)} photos of the dataset "
            f"({', '.join(rows[:3])}{'...' if len(rows) > 3 else ''}), and {len(ambiguous) - 1} other "
            "entries do too. Run MegaDetector on the dataset's folder so that its paths include the "
            "sub-folders that tell these photos apart."
        )
    if paths and not claimed:
        examples = ", ".join(repr(f) for f in list(detections.entries)[:3])
        raise DatasetError(
            f"{detections.source}: none of its {len(detections.entries)} entries (e.g. {examples}) names a "
            f"photo of the dataset (e.g. {paths[0]}). An entry names a photo when their paths end alike "
            "(at least the file name): give the results of MegaDetector run on these photos."
        )
    return matched


def split_by_detections(
    table: pd.DataFrame, detections: Detections, threshold: float = DEFAULT_THRESHOLD
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per animal detection above ``threshold``, the photos with none and why).

    Detection rows keep the photo's columns, with image id ``<image_id>#<k>``, a ``bbox`` in
    pixels, ``region_source`` 'megadetector', ``detection`` (k) and ``detection_conf``. A photo's
    own ``bbox`` / ``segmentation`` cells give way to its detections. The second table has
    image_id, split (when known), path, reason."""
    if not 0 <= threshold <= 1:
        raise ValueError(
            f"detection threshold {threshold}: give a confidence between 0 and 1 (default {DEFAULT_THRESHOLD})."
        )
    table = table.reset_index(drop=True)
    matched = match_rows(detections, table["path"].tolist())
    rows, empty = [], []
    for index, file in enumerate(matched):
        photo = table.iloc[index]
        if file is None:
            empty.append((index, f"not in {Path(detections.source).name}"))
            continue
        entry = detections.entries[file]
        if isinstance(entry, str):
            empty.append((index, entry))
            continue
        animals = [d for d in entry if d["category"] in detections.animal_categories]
        kept = [d for d in animals if d["conf"] >= threshold]
        if not kept:
            best = max((d["conf"] for d in animals), default=None)
            reason = f"no animal detection at or above {threshold:g}" + (
                f" (best {best:.3f})" if best is not None else " (none at all)"
            )
            empty.append((index, reason))
            continue
        try:
            with open(photo["path"], "rb") as handle:
                width, height = upright_size(handle.read(1 << 20))
        except (OSError, ValueError) as error:
            empty.append((index, f"cannot read the photo's size ({error})"))
            continue
        for detection in kept:
            x, y, w, h = detection["bbox"]
            row = photo.to_dict()
            row.update(
                {
                    "image_id": f"{photo['image_id']}{SEPARATOR}{detection['k']}",
                    BBOX: format_bbox((x * width, y * height, w * width, h * height)),
                    SEGMENTATION: None,
                    REGION_SOURCE: "megadetector",
                    DETECTION: detection["k"],
                    CONFIDENCE: detection["conf"],
                }
            )
            rows.append(row)
    columns = list(table.columns) + [
        c for c in (BBOX, SEGMENTATION, REGION_SOURCE, DETECTION, CONFIDENCE) if c not in table.columns
    ]
    expanded = pd.DataFrame(rows, columns=columns)
    no_animal = pd.DataFrame(
        {
            "image_id": [table["image_id"].iloc[i] for i, _ in empty],
            "split": [table["split"].iloc[i] if "split" in table else "query" for i, _ in empty],
            "path": [table["path"].iloc[i] for i, _ in empty],
            "reason": [reason for _, reason in empty],
        }
    )
    return expanded, no_animal


def animals_in(
    table: pd.DataFrame, results_file: str | Path, threshold: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """:func:`split_by_detections` of ``table`` with the results file read: (one row per animal,
    the photos without one, the threshold used: ``threshold``, else DEFAULT_THRESHOLD)."""
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    rows, no_animal = split_by_detections(table, read_detections(results_file), threshold)
    return rows, no_animal, threshold


def labelled_photos_with_several_animals(rows: pd.DataFrame) -> int:
    """How many labelled photos hold several animals (rows of :func:`split_by_detections`): each
    animal got the photo's identity."""
    return rows.loc[rows.duplicated("path", keep=False) & rows["identity"].notna(), "path"].nunique()
