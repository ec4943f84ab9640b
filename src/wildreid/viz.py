"""Pictures of evidence: a query beside a candidate with the keypoint correspondences that survived
geometric verification (kept apart from the maths, as LightGlue's viz2d)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from .data import read_image
from .local import LocalMethod, get_method
from .local.verify import count_inliers

PANEL_HEIGHT = 360


def _panel(image: Image.Image) -> tuple[np.ndarray, float]:
    scale = PANEL_HEIGHT / image.height
    resized = image.resize((max(1, round(image.width * scale)), PANEL_HEIGHT), Image.BICUBIC)
    return np.asarray(resized).copy(), scale


def draw_matches(
    query: Image.Image, candidate: Image.Image, method: LocalMethod, geometry: str = "homography", caption: str = ""
) -> tuple[np.ndarray, int]:
    """Side-by-side RGB picture with inlier lines (green) and the inlier count; returns (picture, inliers)."""
    a, b = method.extract(query), method.extract(candidate)
    matches = method.match(a, b)
    inliers = np.zeros(0, dtype=bool)
    if len(matches):
        _, inliers = count_inliers(a.keypoints[matches[:, 0]], b.keypoints[matches[:, 1]], geometry)
    left, left_scale = _panel(query)
    right, right_scale = _panel(candidate)
    picture = np.concatenate([left, np.full((PANEL_HEIGHT, 8, 3), 255, np.uint8), right], axis=1)
    offset = left.shape[1] + 8
    # Keypoints are in working-image pixels: back to original pixels, then to panel pixels.
    for i, j in matches[inliers] if len(matches) else []:
        x1, y1 = a.keypoints[i] / a.scale * left_scale
        x2, y2 = b.keypoints[j] / b.scale * right_scale
        cv2.line(picture, (int(x1), int(y1)), (int(x2 + offset), int(y2)), (40, 220, 40), 1, cv2.LINE_AA)
        cv2.circle(picture, (int(x1), int(y1)), 2, (255, 220, 0), -1)
        cv2.circle(picture, (int(x2 + offset), int(y2)), 2, (255, 220, 0), -1)
    text = f"{int(inliers.sum())} inliers" + (f"  {caption}" if caption else "")
    cv2.putText(picture, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
    return picture, int(inliers.sum())


def to_png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def match_picture(
    query_path: str, candidate_path: str, method: str | LocalMethod = "rootsift", caption: str = ""
) -> bytes:
    """PNG bytes of :func:`draw_matches` for two image files."""
    method = get_method(method) if isinstance(method, str) else method
    picture, _ = draw_matches(read_image(query_path), read_image(candidate_path), method, caption=caption)
    return to_png(picture)
