"""Local features for many images, cached on disk per image content and method configuration.

One small .npz per image (written atomically), so a killed run keeps everything finished so far
and a re-run extracts only the rest.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data import ImageReadError, content_hash, decode_image, read_image_bytes
from ..files import atomic_path
from .base import LocalFeatures, LocalMethod


def _cache_file(cache_dir: Path, method: LocalMethod, digest: str) -> Path:
    return Path(cache_dir) / "local" / method.config_key() / digest[:2] / f"{digest}.npz"


def _load(path: Path) -> LocalFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as content:
            size = tuple(int(v) for v in content["image_size"]) if "image_size" in content else (0, 0)
            return LocalFeatures(
                content["keypoints"], content["descriptors"], float(content["scale"]), size if size != (0, 0) else None
            )
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _save(path: Path, features: LocalFeatures | bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(features if isinstance(features, bytes) else encode_features(features))


def encode_features(features: LocalFeatures) -> bytes:
    """The bytes of one cache file (so a worker can encode and only the writer touches the disk)."""
    out = io.BytesIO()
    np.savez(
        out,
        keypoints=features.keypoints,
        descriptors=features.descriptors.astype(np.float16),
        scale=np.float64(features.scale),
        image_size=np.asarray(features.image_size or (0, 0), np.int32),
    )
    return out.getvalue()


def missing_digests(digests, method: LocalMethod, cache_dir: str | Path) -> list[str]:
    """The content hashes (SHA-256 of the file bytes) among ``digests`` with no cached features."""
    return [digest for digest in digests if not _cache_file(Path(cache_dir), method, digest).is_file()]


def store_features(cache_dir: str | Path, method: LocalMethod, digest: str, features: LocalFeatures | bytes) -> None:
    """Cache one image's features (or their ``encode_features`` bytes), atomically."""
    _save(_cache_file(Path(cache_dir), method, digest), features)


def local_features(
    paths: list[str],
    method: LocalMethod,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> list[LocalFeatures | None]:
    """Features of every image in ``paths`` (None for an unreadable image)."""

    def one(path: str) -> LocalFeatures | None:
        try:
            data = read_image_bytes(path)
        except ImageReadError:
            return None
        cached = None
        if cache_dir is not None:
            cached = _cache_file(Path(cache_dir), method, content_hash(data))
            found = _load(cached) if cached.is_file() else None
            if found is not None:
                found.descriptors = found.descriptors.astype(np.float32)
                return found
        try:
            features = method.extract(decode_image(data, path))
        except ImageReadError:
            return None
        # The cache keeps descriptors as float16: round fresh ones the same way, so that a run
        # scores the same whether its features were just extracted or read back.
        features.descriptors = features.descriptors.astype(np.float16).astype(np.float32)
        if cached is not None:
            _save(cached, features)
        return features

    # OpenCV releases the GIL while it computes, so threads use every core.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(
            tqdm(
                pool.map(one, paths),
                total=len(paths),
                desc=f"{method.name} keypoints",
                unit="img",
                disable=not progress,
            )
        )
