"""The small interface every local feature method implements, and the registry of methods.

A method is a factory registered by name in ``LOCAL_METHODS``: ``factory(**options)`` returns a
:class:`LocalMethod`. Each method file registers its own (``@LOCAL_METHODS.register("orb")`` above
its class, or a registration call per variant, as sift.py and learned.py do). To add a method,
write it in a new file of this wing, register it there, and add the file's module to
``LOCAL_METHODS``' modules below. A method with weights files (learned.py) also registers, in
``LEARNED``, the function that says which of its files are missing.

A method file must not import torch or OpenCV at its top: listing the names (a command's help)
imports every method file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from wildreid.util.registry import Registry


@dataclass
class LocalFeatures:
    """Keypoints of one image at its working resolution."""

    keypoints: np.ndarray  # (N, 2) float32, x, y in working-image pixels
    descriptors: np.ndarray  # (N, D) float32
    scale: float  # working-image pixels per original pixel
    image_size: tuple[int, int] | None = None  # (width, height) of the working image

    @classmethod
    def empty(cls, dim: int, scale: float = 1.0) -> "LocalFeatures":
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.float32), scale, None)

    def __len__(self) -> int:
        return len(self.keypoints)


class LocalMethod:
    """Base class: subclasses set ``name``/``descriptor_dim`` and implement extract and match."""

    name = "base"
    descriptor_dim = 0

    def config_key(self) -> str:
        """Identifies everything that changes extracted features (for the cache)."""
        raise NotImplementedError

    def extract(self, image: Image.Image) -> LocalFeatures:
        raise NotImplementedError

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        """Tentative correspondences as an (M, 2) int array of (index in a, index in b)."""
        raise NotImplementedError

    def match_with_confidence(self, a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray, np.ndarray | None]:
        """``match``'s correspondences and, for a matcher that scores them (LightGlue), the (M,)
        confidence of each; None for one that does not (a ratio test has no confidence)."""
        return self.match(a, b), None


def working_image(image: Image.Image, max_side: int, min_side: int) -> tuple[np.ndarray, float]:
    """Grey working image: shrink so the long side is at most ``max_side``; enlarge tiny crops so
    the short side is at least ``min_side`` (SIFT finds almost nothing on a 100-pixel crop)."""
    width, height = image.size
    scale = min(1.0, max_side / max(width, height))
    if min(width, height) * scale < min_side:
        scale = min(min_side / min(width, height), max_side / max(width, height) * 2)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = image.convert("L")
    if size != image.size:
        grey = grey.resize(size, Image.BICUBIC if scale > 1 else Image.LANCZOS)
    return np.asarray(grey), scale


LOCAL_METHODS: Registry[Callable[..., LocalMethod]] = Registry(
    "local feature method", modules=("wildreid.local.sift", "wildreid.local.orb", "wildreid.local.learned")
)
# name -> missing_weights_advice(weights_dir): None when the method's weights files are on disk.
LEARNED: Registry[Callable[..., str | None]] = Registry(
    "learned local feature method", modules=("wildreid.local.learned",)
)


def get_method(name: str, **options) -> LocalMethod:
    """The method registered as ``name`` (any case), built with ``options``."""
    return LOCAL_METHODS.get(name.lower())(**options)


def method_names() -> list[str]:
    return LOCAL_METHODS.names()
