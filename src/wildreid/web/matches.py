"""The keypoint-match picture of a query and a candidate photo: the two side by side with the
correspondences that survived geometric verification drawn between them.

Drawn by ``wildreid.viz.match_picture`` with the preset's own local method (RootSIFT for the
``fusion`` preset), so a reviewer sees the evidence the machine used. Presets without local
matching (``offline``) have no such picture: the review page then shows the query and the
candidate's best photo side by side only. Pictures are cached on disk by the two photos' content
hashes and the method, so a page seen twice is drawn once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from pathlib import Path

from wildreid.data.images import ImageReadError
from wildreid.presets import Preset
from wildreid.util.files import atomic_path

log = logging.getLogger("wildreid.web")
# One picture at a time: extraction is CPU-heavy, and a local method object is not guaranteed to
# be safe to share between threads.
_LOCK = threading.Lock()


def match_pictures_available(preset: Preset) -> bool:
    """Whether the preset does local matching (and the drawing code is installed)."""
    return bool(getattr(preset, "local", None)) and _viz() is not None


def match_picture(
    query_path: str | Path, candidate_path: str | Path, *, preset: Preset, cache_dir: str | Path | None = None
) -> bytes | None:
    """PNG bytes of the keypoint matches between the two photos, or None when the preset has no
    local matching or a photo cannot be read."""
    viz, method = _viz(), getattr(preset, "local", None)
    if viz is None or not method:
        return None
    options = getattr(preset, "local_options", {}) or {}
    key = hashlib.sha256(
        "|".join(
            [Path(query_path).stem, Path(candidate_path).stem, method, json.dumps(options, sort_keys=True)]
        ).encode()
    ).hexdigest()
    cached = Path(cache_dir) / "match-pictures" / f"{key}.png" if cache_dir else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    with _LOCK:
        try:
            picture = viz.match_picture(
                str(query_path), str(candidate_path), _method(method, json.dumps(options, sort_keys=True))
            )
        except ImageReadError as error:
            log.warning("no match picture: %s", error)
            return None
    if cached is not None:
        with atomic_path(cached) as temporary:
            temporary.write_bytes(picture)
    return picture


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
    return viz if hasattr(viz, "match_picture") else None
