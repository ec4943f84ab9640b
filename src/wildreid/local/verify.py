"""Geometric verification: how many tentative correspondences one transformation explains."""

from __future__ import annotations

import cv2
import numpy as np

MIN_CORRESPONDENCES = {"homography": 4, "fundamental": 8}


def count_inliers(
    points_a: np.ndarray,
    points_b: np.ndarray,
    model: str = "homography",
    reprojection_px: float = 8.0,
    confidence: float = 0.999,
    max_iterations: int = 2000,
) -> tuple[int, np.ndarray]:
    """USAC-MAGSAC inliers of a homography (planar flank, moderate pose change) or a fundamental
    matrix (any rigid 3-D motion); returns (count, boolean mask)."""
    mask_none = np.zeros(len(points_a), dtype=bool)
    if len(points_a) < MIN_CORRESPONDENCES[model]:
        return 0, mask_none
    points_a, points_b = points_a.astype(np.float32), points_b.astype(np.float32)
    try:
        if model == "homography":
            _, mask = cv2.findHomography(
                points_a, points_b, cv2.USAC_MAGSAC, reprojection_px, maxIters=max_iterations, confidence=confidence
            )
        else:
            _, mask = cv2.findFundamentalMat(
                points_a, points_b, cv2.USAC_MAGSAC, reprojection_px, confidence, max_iterations
            )
    except cv2.error:
        return 0, mask_none  # degenerate configurations (all points on a line, ...)
    if mask is None:
        return 0, mask_none
    mask = mask.ravel().astype(bool)
    return int(mask.sum()), mask
