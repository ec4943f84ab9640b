"""The keypoint-match picture of a query and a candidate photo: the two side by side with the
correspondences that survived geometric verification drawn between them.

Drawn by ``wildreid.viz.match_picture`` with the preset's own local method (RootSIFT for the
``fusion`` preset), so a reviewer sees the evidence the machine used. Presets without local
matching (``offline``) have no such picture: the review page then shows the query and the
candidate's best photo side by side only. Pictures are cached on disk by the two photos' content
hashes and the method, so a page seen twice is drawn once.

The evidence shown is the evidence on the animal (issue 21: on nyala the lines joined ground,
shadows and hooves). Each photo's animal is its own region when one is given, else the automatic
CAM foreground (describe/foreground.py, its map cached per photo content under the cache folder,
so a page never recomputes it; the catalogue stores no regions, so the app's photos take the
foreground). Only matches with both ends on the animals are drawn as evidence and counted; the
rest are drawn faint. Below ``WEAK_EVIDENCE`` such matches the picture and the page say "weak
evidence" (the count is kept beside the cached picture, so the page can say it too).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi.responses import Response

from wildreid.data.images import ImageReadError
from wildreid.data.regions import Region
from wildreid.presets import Preset
from wildreid.util.files import atomic_path

log = logging.getLogger("wildreid.web")
# One picture at a time: extraction is CPU-heavy, and a local method object is not guaranteed to
# be safe to share between threads.
_LOCK = threading.Lock()


def match_pictures_available(preset: Preset) -> bool:
    """Whether the preset does local matching (and the drawing code is installed)."""
    return bool(getattr(preset, "local", None)) and _viz() is not None


@dataclass(frozen=True)
class MatchPicture:
    """A drawn picture (PNG bytes) and what it says about the evidence, in words."""

    png: bytes
    evidence: str


# In the picture cache's keys: a change of what the picture shows draws it again.
PICTURE_VERSION = "animal-v1"


def match_picture(
    query_path: str | Path,
    candidate_path: str | Path,
    *,
    preset: Preset,
    cache_dir: str | Path | None = None,
    query_region: Region | None = None,
    candidate_region: Region | None = None,
) -> MatchPicture | None:
    """The keypoint matches on the animals of the two photos (each its region when given, else
    the automatic foreground), or None when the preset has no local matching or a photo cannot
    be read."""
    viz, method = _viz(), getattr(preset, "local", None)
    if viz is None or not method:
        return None
    options = getattr(preset, "local_options", {}) or {}
    key = _key(Path(query_path).stem, Path(candidate_path).stem, method, options, query_region, candidate_region)
    cached = Path(cache_dir) / "match-pictures" / f"{key}.png" if cache_dir else None
    said = _said(cached)
    if cached is not None and cached.is_file() and said is not None:
        return MatchPicture(cached.read_bytes(), said)
    with _LOCK:
        try:
            drawn = _draw(viz, query_path, candidate_path, method, options, cache_dir, query_region, candidate_region)
        except ImageReadError as error:
            log.warning("no match picture: %s", error)
            return None
    if cached is not None:
        with atomic_path(cached.with_suffix(".json")) as temporary:
            temporary.write_text(json.dumps({"evidence": drawn.evidence}))
        with atomic_path(cached) as temporary:
            temporary.write_bytes(drawn.png)
    return drawn


def evidence_png(picture: MatchPicture) -> Response:
    """The picture as a response, its evidence text in the ``X-Evidence`` header (percent-encoded:
    headers are ASCII) for the review page's script to show beside the toggle."""
    return Response(picture.png, media_type="image/png", headers={"X-Evidence": quote(picture.evidence)})


def known_evidence(
    query_path: str | Path, candidate_path: str | Path, *, preset: Preset, cache_dir: str | Path | None
) -> str | None:
    """The evidence text of a picture already drawn (and cached), e.g. "3 matches on the animal
    - weak evidence"; None when it has not been drawn: a page never draws to say it."""
    method = getattr(preset, "local", None)
    if not method or cache_dir is None:
        return None
    options = getattr(preset, "local_options", {}) or {}
    key = _key(Path(query_path).stem, Path(candidate_path).stem, method, options, None, None)
    return _said(Path(cache_dir) / "match-pictures" / f"{key}.png")


def _key(query: str, candidate: str, method: str, options: dict, *regions: Region | None) -> str:
    parts = [query, candidate, method, json.dumps(options, sort_keys=True), PICTURE_VERSION]
    parts += ["" if region is None else region.to_json() for region in regions]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _said(cached: Path | None) -> str | None:
    try:
        return str(json.loads(cached.with_suffix(".json").read_text())["evidence"]) if cached else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _draw(viz, query_path, candidate_path, method, options, cache_dir, query_region, candidate_region) -> MatchPicture:
    from wildreid.data.images import decode_image, read_image_bytes

    pictures, animals = [], []
    for path, region in ((query_path, query_region), (candidate_path, candidate_region)):
        data = read_image_bytes(str(path))
        image = decode_image(data, str(path))
        pictures.append(image)
        animals.append(viz.region_animal(data, image, region) if region is not None else _foreground(path, cache_dir))
    picture, evidence = viz.draw_animal_matches(
        pictures[0], pictures[1], _method(method, json.dumps(options, sort_keys=True)), animals[0], animals[1]
    )
    return MatchPicture(viz.to_png(picture), evidence.text("—"))


def _foreground(path: str | Path, cache_dir: str | Path | None):
    """The photo's automatic foreground (CAM mask) as an Animal, or None when the map finds no
    animal evidence. The map is cached per photo content (foreground.py's cache)."""
    from wildreid.describe.foreground import cam_maps, map_mask
    from wildreid.evaluate.pictures import Animal

    maps, _, _ = cam_maps([str(path)], cache_dir=cache_dir)
    if maps[0] is None:
        return None
    mask = map_mask(maps[0])
    return Animal(mask, "foreground") if mask.any() else None


@functools.lru_cache(maxsize=4)
def _method(name: str, options_json: str):
    # Built once per method: learned methods load their weights on construction.
    from wildreid.local.base import get_method

    return get_method(name, **json.loads(options_json))


@functools.lru_cache(maxsize=1)
def _viz():
    try:
        from wildreid.evaluate import pictures as viz
    except ImportError:  # the local-feature extras (OpenCV) are not installed
        return None
    return viz if hasattr(viz, "draw_animal_matches") else None
