"""Local features for many images, cached on disk per image content and method configuration.

One small .npz per image (written atomically), so a killed run keeps everything finished so far
and a re-run extracts only the rest.

With ``regions`` (regions.py) an image's keypoints are those of its region, filed under the
region's key (the content hash joined with the region), never under the whole photo's hash.
Keypoint coordinates are then in the region's picture (as cut by ``regions.read_region``), and
with a segmentation only the keypoints on the animal are kept.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wildreid.data.images import ImageReadError, content_hash, decode_image, read_image_bytes
from wildreid.data.regions import Region, read_region, region_key
from wildreid.local.base import LocalFeatures, LocalMethod
from wildreid.util.files import atomic_path


def _cache_file(cache_dir: Path, method: LocalMethod, digest: str) -> Path:
    return Path(cache_dir) / "local" / method.config_key() / digest[:2] / f"{digest}.npz"


def _load(path: Path) -> LocalFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as content:
            # (width, height), written as (0, 0) when unknown
            width, height = (int(v) for v in content["image_size"]) if "image_size" in content else (0, 0)
            size = (width, height) if (width, height) != (0, 0) else None
            return LocalFeatures(content["keypoints"], content["descriptors"], float(content["scale"]), size)
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


def extract_region(method: LocalMethod, data: bytes, name: str, region: Region | None) -> LocalFeatures:
    """One photo's (region's) features, uncached. ImageReadError when it cannot be read."""
    picture, mask = read_region(decode_image(data, name), data, region, name)
    features = method.extract(picture)
    return features if mask is None else inside_mask(features, mask)


def inside_mask(features: LocalFeatures, mask: np.ndarray) -> LocalFeatures:
    """Only the keypoints that lie on the mask (``mask``: bool, the region's picture's pixels)."""
    if len(features) == 0:
        return features
    points = np.floor(features.keypoints / features.scale).astype(np.int64)
    x = np.clip(points[:, 0], 0, mask.shape[1] - 1)
    y = np.clip(points[:, 1], 0, mask.shape[0] - 1)
    keep = mask[y, x]
    return LocalFeatures(features.keypoints[keep], features.descriptors[keep], features.scale, features.image_size)


def local_features(
    paths: list[str],
    method: LocalMethod,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    regions: list[Region | None] | None = None,
) -> list[LocalFeatures | None]:
    """Features of every image in ``paths`` (None for an unreadable image), of its region where
    ``regions`` gives one."""
    if regions is not None and len(regions) != len(paths):
        raise ValueError(f"{len(regions)} regions for {len(paths)} images")

    def one(item: tuple[str, Region | None]) -> LocalFeatures | None:
        path, region = item
        try:
            data = read_image_bytes(path)
        except ImageReadError:
            return None
        cached = None
        if cache_dir is not None:
            cached = _cache_file(Path(cache_dir), method, region_key(content_hash(data), region))
            found = _load(cached) if cached.is_file() else None
            if found is not None:
                found.descriptors = found.descriptors.astype(np.float32)
                return found
        try:
            features = extract_region(method, data, path, region)
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
                pool.map(one, zip(paths, regions if regions is not None else [None] * len(paths))),
                total=len(paths),
                desc=f"{method.name} keypoints",
                unit="img",
                disable=not progress,
            )
        )
