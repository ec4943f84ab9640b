"""The settings of the fused pair score: which scores, shortlist sizes, geometry. Apart from
pairs.py (numpy, OpenCV) so that a preset, and the command line's help, load neither."""

from __future__ import annotations

from dataclasses import dataclass

# cosine: global descriptors; lnbnn: one-vs-many keypoint votes; inliers: tentative matches that
# one homography (or fundamental matrix) explains; matches: matches whose matcher confidence
# exceeds FusionSettings.match_confidence (every tentative match for a matcher without
# confidences), WildFusion's LightGlue score; backbone_cosine: where a group compares through an
# adapter (gallery/adaptation.py), the backbone's own cosine beside the adapted one (absent where
# the group is not adapted: it would repeat "cosine").
BACKBONE_COSINE = "backbone_cosine"
SCORE_TYPES = ("cosine", "lnbnn", "inliers", "matches", BACKBONE_COSINE)
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
        if BACKBONE_COSINE in self.scores and "cosine" not in self.scores:
            raise ValueError(
                f"fusion scores {list(self.scores)}: {BACKBONE_COSINE} is a second opinion beside the "
                "adapted cosine; add cosine."
            )
