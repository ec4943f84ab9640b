"""The margin around a region's box, and its check: apart from regions.py (numpy, pandas, Pillow)
so that a preset, and the command line's help, load none of them. regions.py re-exports both."""

from __future__ import annotations

import math

# Default margin: a tenth of the box's width (height) on each side. MegaDetector's boxes are
# tight and often clip a tail, an ear or a hoof, and a keypoint on the outline needs a few pixels
# of context for its descriptor; a tenth keeps both without bringing the site back. (A fixed
# choice, not tuned on any dataset.)
DEFAULT_MARGIN = 0.1


def check_margin(margin: object) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise ValueError(f"region margin {margin!r}: give a number (a fraction of the box, e.g. 0.1).")
    if not 0 <= margin <= 2:
        raise ValueError(
            f"region margin {margin}: give a fraction of the box's width and height between 0 and 2 "
            f"(0: the box exactly; {DEFAULT_MARGIN}: the default)."
        )
    return float(margin)
