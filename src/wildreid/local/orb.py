"""OpenCV ORB (FAST corners, rotated binary BRIEF): a second, independent kind of keypoint evidence
beside RootSIFT. Corners rather than blobs, binary tests rather than gradient histograms, so
its mistakes are not SIFT's; fused as its own calibrated inlier count. Needs no weights."""

from __future__ import annotations

import numpy as np
from PIL import Image

from wildreid.local.base import LOCAL_METHODS, LocalFeatures, LocalMethod, working_image


@LOCAL_METHODS.register("orb")
class OrbMethod(LocalMethod):
    name = "orb"
    descriptor_dim = 32  # bytes of the 256-bit descriptor, kept one byte a value (exact in float16)

    def __init__(self, max_keypoints: int = 1000, max_side: int = 512, min_side: int = 256, ratio: float = 0.8):
        self.max_keypoints, self.max_side, self.min_side, self.ratio = max_keypoints, max_side, min_side, ratio
        # The 31-pixel patch needs a border; edgeThreshold matches it (OpenCV's default).
        import cv2  # here, not at the top: listing the method names (the CLI's help) must not load OpenCV

        self._orb = cv2.ORB.create(nfeatures=max_keypoints)

    def config_key(self) -> str:
        return f"orb-k{self.max_keypoints}-s{self.max_side}-{self.min_side}"

    def extract(self, image: Image.Image) -> LocalFeatures:
        grey, scale = working_image(image, self.max_side, self.min_side)
        keypoints, descriptors = self._orb.detectAndCompute(grey, None)
        if descriptors is None or len(keypoints) == 0:
            return LocalFeatures.empty(self.descriptor_dim, scale)
        # Strongest corners first, so that a cap on keypoints keeps the best.
        order = np.argsort([-k.response for k in keypoints], kind="stable")[: self.max_keypoints]
        points = np.array([keypoints[i].pt for i in order], dtype=np.float32)
        return LocalFeatures(points, descriptors[order].astype(np.float32), scale, (grey.shape[1], grey.shape[0]))

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        """Hamming nearest neighbours with Lowe's ratio test."""
        if len(a) < 2 or len(b) < 2:
            return np.zeros((0, 2), dtype=np.int64)
        left = np.rint(a.descriptors).astype(np.uint8)
        right = np.rint(b.descriptors).astype(np.uint8)
        import cv2

        pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(left, right, k=2)
        kept = [
            (m.queryIdx, m.trainIdx)
            for m, n in (p for p in pairs if len(p) == 2)
            if m.distance < self.ratio * n.distance
        ]
        return np.array(kept, dtype=np.int64).reshape(-1, 2)
