"""Keypoint evidence per pair of photos: geometric inliers and confident matches, and the
settings of the fused pair score (which scores, shortlist sizes, geometry).

The candidate pairs come from gallery/shortlist.py; gallery/calibration.py turns each score into
P(same individual) and fuses them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from wildreid.local.base import LocalFeatures, LocalMethod
from wildreid.local.verify import count_inliers

# cosine: global descriptors; lnbnn: one-vs-many keypoint votes; inliers: tentative matches that
# one homography (or fundamental matrix) explains; matches: matches whose matcher confidence
# exceeds FusionSettings.match_confidence (every tentative match for a matcher without
# confidences), WildFusion's LightGlue score.
SCORE_TYPES = ("cosine", "lnbnn", "inliers", "matches")
PAIR_COUNTS = ("inliers", "matches")


@dataclass
class FusionSettings:
    shortlist: int = 20  # B: images per shortlist (cosine, and LNBNN)
    use_lnbnn: bool = True  # LNBNN shortlist and score
    scores: tuple[str, ...] = ("cosine", "lnbnn", "inliers")  # fused, each calibrated; see SCORE_TYPES
    geometry: str = "homography"
    calibration_anchors: int = 600  # database images used as pseudo-queries for calibration
    lnbnn_k: int = 5
    workers: int = 0  # 0: one thread per core
    # "matches" counts the matches whose confidence exceeds this: wildlife-tools' CollectCounts
    # default (0.5), the score WildFusion calibrates for LightGlue.
    match_confidence: float = 0.5

    def __post_init__(self):
        unknown = [name for name in self.scores if name not in SCORE_TYPES]
        if unknown or not self.scores:
            raise ValueError(
                f"fusion scores {list(self.scores)}: give one or more of {', '.join(SCORE_TYPES)} "
                f"(unknown: {', '.join(unknown) or 'none given'})."
            )


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
