"""Pictures of evidence: a query beside a candidate with the keypoint correspondences that survived
geometric verification (kept apart from the maths, as LightGlue's viz2d).

A photo with a region (regions.py) is shown as the region's picture - the box with its margin,
the part the descriptors and keypoints were taken from - with the box itself outlined."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from wildreid.data.images import decode_image, read_image_bytes
from wildreid.data.regions import Region, crop_box, mask_pixels, read_region, upright_size
from wildreid.local.base import LocalMethod, get_method
from wildreid.local.cache import inside_mask
from wildreid.local.verify import count_inliers

PANEL_HEIGHT = 360
BOX_COLOUR = (255, 140, 0)
FAINT_COLOUR = (150, 150, 150)
# Below this many verified matches on the animal the picture and the review page say "weak
# evidence". The fused score gives no fixed number to borrow: its inlier map is an isotonic
# calibration fitted per catalogue. So this is the rule of thumb of two-view geometry: COLMAP
# accepts an image pair as verified from 15 inliers (TwoViewGeometryOptions.min_num_inliers),
# because a homography fits 4 points exactly and USAC-MAGSAC at 8 px finds a handful of chance
# inliers among a few dozen wrong matches. Fixed, not tuned on the shared datasets.
WEAK_EVIDENCE = 15


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


# --------------------------------------------------------------------------------------------
# Evidence on the animal: the review page's picture


@dataclass(frozen=True)
class Animal:
    """Where the animal is in a photo: a bool ``mask`` spanning the whole photo as displayed (at
    any resolution: a CAM map is 80 x 80) and where it came from ("region": the photo's own box
    or mask; "foreground": the automatic CAM foreground)."""

    mask: np.ndarray
    source: str

    def contains(self, points: np.ndarray, width: int, height: int) -> np.ndarray:
        """Which of ``points`` (x, y in pixels of a ``width`` x ``height`` picture of the whole
        photo) fall on the animal."""
        if len(points) == 0:
            return np.zeros(0, dtype=bool)
        rows, columns = self.mask.shape
        x = np.clip((points[:, 0] * columns / width).astype(int), 0, columns - 1)
        y = np.clip((points[:, 1] * rows / height).astype(int), 0, rows - 1)
        return self.mask[y, x]


def region_animal(data: bytes, image: Image.Image, region: Region) -> Animal:
    """The animal of a photo with a region, over ``image`` (the photo decoded from ``data``): its
    segmentation when it has one, else its box (without the margin: the margin is context for
    descriptors, not the animal)."""
    width, height = upright_size(data)
    if region.segmentation:
        return Animal(mask_pixels(region.segmentation, height, width, (image.height, image.width)), "region")
    mask = np.zeros((image.height, image.width), dtype=bool)
    if region.box is not None:
        x, y, w, h = region.box
        sx, sy = image.width / width, image.height / height
        left, top = max(0, math.floor(x * sx)), max(0, math.floor(y * sy))
        mask[top : math.ceil((y + h) * sy), left : math.ceil((x + w) * sx)] = True
    return Animal(mask, "region")


@dataclass(frozen=True)
class Evidence:
    """What the review page's picture counted: verified matches with both ends on the animal,
    those the whole-photo verification keeps off it (drawn faint), and whether both photos had an
    animal (without one, every match counts as on it and the text says so)."""

    on_animal: int
    off_animal: int
    animal_found: bool = True

    @property
    def weak(self) -> bool:
        return self.on_animal < WEAK_EVIDENCE

    def text(self, dash: str = "-") -> str:
        """The words, e.g. "3 matches on the animal - weak evidence" (``dash``: the picture's fonts are ASCII)."""
        where = "on the animal" if self.animal_found else "(no animal found: whole photos)"
        text = f"{self.on_animal} match{'es' if self.on_animal != 1 else ''} {where}"
        return text + (f" {dash} weak evidence" if self.weak else "")


def draw_animal_matches(
    query: Image.Image,
    candidate: Image.Image,
    method: LocalMethod,
    query_animal: Animal | None,
    candidate_animal: Animal | None,
    geometry: str = "homography",
    caption: str = "",
) -> tuple[np.ndarray, Evidence]:
    """The two whole photos side by side with each animal outlined (orange); green lines: the
    matches with both ends on the animals, verified among themselves (ground, shadows and a
    shared site would otherwise carry the geometry); faint grey: the matches the whole-photo
    verification keeps whose ends fall off an animal - shown, never counted as evidence. Without
    an animal for either photo, the whole photos count (and the label says so)."""
    pa, pb, verified_on, faint = animal_matches(query, candidate, method, query_animal, candidate_animal, geometry)
    found = query_animal is not None and candidate_animal is not None
    left, left_scale = _panel(query)
    right, right_scale = _panel(candidate)
    for panel, animal in ((left, query_animal), (right, candidate_animal)):
        if animal is not None:
            _outline(panel, animal.mask)
    picture = np.concatenate([left, np.full((PANEL_HEIGHT, 8, 3), 255, np.uint8), right], axis=1)
    offset = left.shape[1] + 8
    for chosen, colour, dots in ((faint, FAINT_COLOUR, False), (verified_on, (40, 220, 40), True)):
        for (x1, y1), (x2, y2) in zip(pa[chosen] * left_scale, pb[chosen] * right_scale):
            start, end = (int(x1), int(y1)), (int(x2 + offset), int(y2))
            cv2.line(picture, start, end, colour, 1, cv2.LINE_AA)
            if dots:
                cv2.circle(picture, start, 2, (255, 220, 0), -1)
                cv2.circle(picture, end, 2, (255, 220, 0), -1)
    evidence = Evidence(int(verified_on.sum()), int(faint.sum()), found)
    text = evidence.text()
    if evidence.off_animal:
        text += f"; {evidence.off_animal} off it (faint)"
    label(picture, text + (f"  {caption}" if caption else ""))
    return picture, evidence


def animal_matches(
    query: Image.Image,
    candidate: Image.Image,
    method: LocalMethod,
    query_animal: Animal | None,
    candidate_animal: Animal | None,
    geometry: str = "homography",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(the tentative matches' ends in the query's and the candidate's pixels, which of them are
    evidence - both ends on the animals, verified among themselves -, which are drawn faint -
    kept by the whole-photo verification with an end off an animal)."""
    a, b = method.extract(query), method.extract(candidate)
    matches = method.match(a, b)
    if len(matches):
        # Keypoints are in working-image pixels: back to the pictures' pixels.
        pa, pb = a.keypoints[matches[:, 0]] / a.scale, b.keypoints[matches[:, 1]] / b.scale
    else:
        pa = pb = np.zeros((0, 2), dtype=np.float32)
    if query_animal is not None and candidate_animal is not None:
        on = query_animal.contains(pa, query.width, query.height) & candidate_animal.contains(
            pb, candidate.width, candidate.height
        )
    else:
        on = np.ones(len(pa), dtype=bool)
    verified_on = np.zeros(len(pa), dtype=bool)
    verified_on[on] = count_inliers(pa[on], pb[on], geometry)[1]
    faint = count_inliers(pa, pb, geometry)[1] & ~on
    return pa, pb, verified_on, faint


def _outline(panel: np.ndarray, mask: np.ndarray) -> None:
    shape = (panel.shape[1], panel.shape[0])
    scaled = cv2.resize(mask.astype(np.uint8), shape, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(scaled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(panel, contours, -1, BOX_COLOUR, 2)
