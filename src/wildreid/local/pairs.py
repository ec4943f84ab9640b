"""Keypoint evidence per pair of photos: geometric inliers and confident matches, and the
settings of the fused pair score (which scores, shortlist sizes, geometry).

The candidate pairs come from gallery/shortlist.py; gallery/calibration.py turns each score into
P(same individual) and fuses them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from wildreid.local.base import LocalFeatures, LocalMethod
from wildreid.local.fusion_settings import BACKBONE_COSINE as BACKBONE_COSINE
from wildreid.local.fusion_settings import PAIR_COUNTS as PAIR_COUNTS
from wildreid.local.fusion_settings import SCORE_TYPES as SCORE_TYPES
from wildreid.local.fusion_settings import FusionSettings as FusionSettings
from wildreid.local.verify import count_inliers

# The settings live in fusion_settings.py so that presets and the command line's help load no
# OpenCV; callers still import them from here.


def inlier_counts(
    method: LocalMethod,
    left: list[LocalFeatures | None],
    right: list[LocalFeatures | None],
    rows: np.ndarray,
    columns: np.ndarray,
    geometry: str,
    workers: int = 0,
) -> np.ndarray:
    return pair_counts(method, left, right, rows, columns, ("inliers",), geometry, workers=workers)["inliers"]


def pair_counts(
    method: LocalMethod,
    left: list[LocalFeatures | None],
    right: list[LocalFeatures | None],
    rows: np.ndarray,
    columns: np.ndarray,
    wanted: tuple[str, ...],
    geometry: str = "homography",
    match_confidence: float = 0.5,
    workers: int = 0,
) -> dict[str, np.ndarray]:
    """Per pair (left[rows[i]], right[columns[i]]) the counts in ``wanted`` (PAIR_COUNTS), from
    one matching of the pair: geometric inliers, and confident matches."""

    def one(pair):
        a, b = left[pair[0]], right[pair[1]]
        if a is None or b is None:
            return 0, 0
        matches, confidence = method.match_with_confidence(a, b)
        if len(matches) == 0:
            return 0, 0
        confident = len(matches) if confidence is None else int(np.sum(confidence > match_confidence))
        inliers = 0
        if "inliers" in wanted:
            inliers = count_inliers(a.keypoints[matches[:, 0]], b.keypoints[matches[:, 1]], geometry)[0]
        return inliers, confident

    # NumPy's matrix product and OpenCV release the GIL: one thread per core, each with a
    # single-threaded BLAS (nested BLAS threads would fight over the same cores).
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool,
    ):
        counts = np.array(list(pool.map(one, zip(rows, columns))), dtype=np.float64).reshape(-1, 2)
    found = {"inliers": counts[:, 0], "matches": counts[:, 1]}
    return {name: found[name] for name in wanted}
