"""OpenCV SIFT / RootSIFT with Lowe's ratio test or mutual nearest neighbours. Needs no weights."""

from __future__ import annotations

import numpy as np
from PIL import Image

from wildreid.local.base import LOCAL_METHODS, LocalFeatures, LocalMethod, working_image


class SiftMethod(LocalMethod):
    descriptor_dim = 128

    def __init__(
        self,
        root: bool = True,
        max_keypoints: int = 512,
        max_side: int = 512,
        min_side: int = 256,
        ratio: float = 0.8,
        mutual: bool = False,
    ):
        self.root, self.max_keypoints = root, max_keypoints
        self.max_side, self.min_side = max_side, min_side
        self.ratio, self.mutual = ratio, mutual
        self.name = "rootsift" if root else "sift"
        import cv2  # here, not at the top: listing the method names (the CLI's help) must not load OpenCV

        self._sift = cv2.SIFT.create(nfeatures=max_keypoints)

    def config_key(self) -> str:
        return f"{self.name}-k{self.max_keypoints}-s{self.max_side}-{self.min_side}"

    def extract(self, image: Image.Image) -> LocalFeatures:
        grey, scale = working_image(image, self.max_side, self.min_side)
        keypoints, descriptors = self._sift.detectAndCompute(grey, None)
        if descriptors is None or len(keypoints) == 0:
            return LocalFeatures.empty(self.descriptor_dim, scale)  # a blank or tiny image
        keypoints, descriptors = keypoints[: self.max_keypoints], descriptors[: self.max_keypoints]
        descriptors = descriptors.astype(np.float32)
        if self.root:
            # RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root; Euclidean
            # distance then compares descriptors by the Hellinger kernel, which matches better.
            descriptors /= np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-7)
            descriptors = np.sqrt(descriptors)
        points = np.array([k.pt for k in keypoints], dtype=np.float32)
        return LocalFeatures(points, descriptors, scale, (grey.shape[1], grey.shape[0]))

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        if len(a) < 2 or len(b) < 2:
            return np.zeros((0, 2), dtype=np.int64)
        return match_descriptors(a.descriptors, b.descriptors, self.ratio, self.mutual)


@LOCAL_METHODS.register("sift")
def sift(**options) -> SiftMethod:
    return SiftMethod(root=False, **options)


@LOCAL_METHODS.register("rootsift")
def rootsift(**options) -> SiftMethod:
    return SiftMethod(root=True, **options)


def match_descriptors(a: np.ndarray, b: np.ndarray, ratio: float, mutual: bool) -> np.ndarray:
    """Nearest neighbours by one matrix product (several times faster than OpenCV's brute-force
    matcher at these sizes), then Lowe's ratio test and optionally mutual consistency."""
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    np.maximum(squared, 0, out=squared)
    two = np.argpartition(squared, 1, axis=1)[:, :2]
    two_distances = np.take_along_axis(squared, two, axis=1)
    order = np.argsort(two_distances, axis=1)
    nearest = np.take_along_axis(two, order, axis=1)[:, 0]
    first, second = np.sort(two_distances, axis=1).T
    keep = np.sqrt(first) < ratio * np.sqrt(second)
    if mutual:
        keep &= np.argmin(squared, axis=0)[nearest] == np.arange(len(a))
    rows = np.flatnonzero(keep)
    return np.stack([rows, nearest[rows]], axis=1).astype(np.int64)
