"""OpenCV SIFT / RootSIFT with Lowe's ratio test or mutual nearest neighbours. Needs no weights."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .base import LocalFeatures, LocalMethod, working_image


class SiftMethod(LocalMethod):
    descriptor_dim = 128

    def __init__(self, root: bool = True, max_keypoints: int = 1024, max_side: int = 640,
                 min_side: int = 320, ratio: float = 0.8, mutual: bool = False):
        self.root, self.max_keypoints = root, max_keypoints
        self.max_side, self.min_side = max_side, min_side
        self.ratio, self.mutual = ratio, mutual
        self.name = "rootsift" if root else "sift"
        self._sift = cv2.SIFT_create(nfeatures=max_keypoints)

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


def match_descriptors(a: np.ndarray, b: np.ndarray, ratio: float, mutual: bool) -> np.ndarray:
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    forward = matcher.knnMatch(a, b, k=2)
    pairs = [(m.queryIdx, m.trainIdx) for m, n in (p for p in forward if len(p) == 2)
             if m.distance < ratio * n.distance]
    if mutual and pairs:
        backward = {m.queryIdx: m.trainIdx for m in matcher.match(b, a)}
        pairs = [(i, j) for i, j in pairs if backward.get(j) == i]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)
