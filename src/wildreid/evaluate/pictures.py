"""Pictures of evidence: a query beside a candidate with the keypoint correspondences that survived
geometric verification (kept apart from the maths, as LightGlue's viz2d).

A photo with a region (regions.py) is shown as the region's picture - the box with its margin,
the part the descriptors and keypoints were taken from - with the box itself outlined."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from wildreid.data.images import decode_image, read_image_bytes
from wildreid.data.regions import Region, crop_box, read_region, upright_size
from wildreid.local.base import LocalMethod, get_method
from wildreid.local.cache import inside_mask
from wildreid.local.verify import count_inliers

PANEL_HEIGHT = 360
BOX_COLOUR = (255, 140, 0)


def _panel(image: Image.Image) -> tuple[np.ndarray, float]:
    scale = PANEL_HEIGHT / image.height
    resized = image.resize((max(1, round(image.width * scale)), PANEL_HEIGHT), Image.Resampling.BICUBIC)
    return np.asarray(resized).copy(), scale


class RegionPicture:
    """A photo's region as drawn: its picture, its mask (keypoints off the animal are dropped, as
    when matching) and the box inside the picture (None: the whole photo)."""

    def __init__(self, picture: Image.Image, mask: np.ndarray | None = None, box=None):
        self.picture, self.mask, self.box = picture, mask, box


def shown_region(path: str, region: Region | None = None) -> RegionPicture:
    """The photo at ``path`` cut to its region; ImageReadError when it cannot be read."""
    data = read_image_bytes(path)
    image = decode_image(data, path)
    if region is None:
        return RegionPicture(image)
    picture, mask = read_region(image, data, region, path)
    width, height = upright_size(data)
    scale = (image.width / width, image.height / height)
    outer = crop_box(region, image.width, image.height, scale, mask)
    inner = crop_box(Region(region.box, region.segmentation, 0.0), image.width, image.height, scale, mask)
    box = None
    if outer is not None and inner is not None:
        box = (inner[0] - outer[0], inner[1] - outer[1], inner[2] - outer[0], inner[3] - outer[1])
    return RegionPicture(picture, mask, box)


def draw_matches(
    query: Image.Image | RegionPicture,
    candidate: Image.Image | RegionPicture,
    method: LocalMethod,
    geometry: str = "homography",
    caption: str = "",
) -> tuple[np.ndarray, int]:
    """Side-by-side RGB picture with inlier lines (green) and the inlier count; returns (picture, inliers).
    A RegionPicture has its box outlined (orange) and only its keypoints on the mask matched."""
    query, candidate = (p if isinstance(p, RegionPicture) else RegionPicture(p) for p in (query, candidate))
    a, b = (
        inside_mask(method.extract(p.picture), p.mask) if p.mask is not None else method.extract(p.picture)
        for p in (query, candidate)
    )
    matches = method.match(a, b)
    inliers = np.zeros(0, dtype=bool)
    if len(matches):
        _, inliers = count_inliers(a.keypoints[matches[:, 0]], b.keypoints[matches[:, 1]], geometry)
    left, left_scale = _panel(query.picture)
    right, right_scale = _panel(candidate.picture)
    for panel, scale, box in ((left, left_scale, query.box), (right, right_scale, candidate.box)):
        if box is not None:
            corners = [int(round(v * scale)) for v in box]
            cv2.rectangle(panel, tuple(corners[:2]), (corners[2] - 1, corners[3] - 1), BOX_COLOUR, 2)
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
    label(picture, text)
    return picture, int(inliers.sum())


def label(picture: np.ndarray, text: str) -> None:
    """White text on a dark band at the top left, scaled down to fit the picture's width. (An
    outline drawn as thicker black text does not line up: OpenCV 5's fonts advance by weight, so
    the two overprinted each other: "5 inlierss".)"""
    font, room = cv2.FONT_HERSHEY_SIMPLEX, picture.shape[1] - 20  # the band: 4 px from each side
    (width, height), baseline = cv2.getTextSize(text, font, 0.7, 1)
    scale = max(0.45, min(0.7, 0.7 * room / width))  # smaller than 0.45 cannot be read
    while cv2.getTextSize(text, font, scale, 1)[0][0] > room and len(text) > 4:
        text = text[:-4] + "..."
    (width, height), baseline = cv2.getTextSize(text, font, scale, 1)
    cv2.rectangle(picture, (4, 4), (12 + width, 12 + height + baseline), (0, 0, 0), -1)
    cv2.putText(picture, text, (8, 8 + height), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def to_png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def match_picture(
    query_path: str,
    candidate_path: str,
    method: str | LocalMethod = "rootsift",
    caption: str = "",
    query_region: Region | None = None,
    candidate_region: Region | None = None,
) -> bytes:
    """PNG bytes of :func:`draw_matches` for two image files (cut to their regions, if given)."""
    method = get_method(method) if isinstance(method, str) else method
    picture, _ = draw_matches(
        shown_region(query_path, query_region),
        shown_region(candidate_path, candidate_region),
        method,
        caption=caption,
    )
    return to_png(picture)
