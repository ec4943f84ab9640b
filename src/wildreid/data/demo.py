"""Procedural demo dataset for animal re-identification.

``make_demo_dataset`` draws a small, fully synthetic re-identification data set
so that the tool can be tried end to end without downloading anything.  Every
individual is a cartoon quadruped (ellipse body, head, legs, tail) whose coat
carries a unique pattern: spots, rosettes, stripes, a giraffe-like network, or
stripes mixed with spots.  The pattern type, its parameters and the exact
placement of every mark come from a per-individual random generator, so the
coat is the main identity cue; body proportions and colours vary a little too,
as they do in real animals.

Each photo of an individual then changes what a camera trap would change:
pose (rotation, scale, position, mild perspective), lighting (brightness,
contrast, colour cast, an illumination gradient), blur, sensor noise, a fresh
random background (gradient, noise or foliage texture) and, often, partial
occlusion by "vegetation" or a tree trunk.  The mix is tuned so that a generic
ImageNet CNN embedding does clearly better than chance without being perfect.

The layout follows AnimalCLEF2025: ``root/metadata.csv`` with the columns
``image_id,identity,path,date,orientation,species,split,dataset`` and images at
``root/images/<image_id>.jpg``.  "Known" individuals have database and query
photos; "new" individuals appear only among the queries.  Query identities are
written too: they are the ground truth used to score the demo.

Everything is drawn from ``numpy.random.default_rng`` seeded from the
arguments (never the global RNG or the clock), so the same arguments give a
byte-identical ``metadata.csv`` and identical pixels.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "Individual",
    "make_demo_dataset",
    "make_individual",
    "render_animal",
    "render_photo",
]

# Bump when the drawing code changes, so that cached demo data sets made by an
# older generator are regenerated instead of silently reused.
GENERATOR_VERSION = 1

METADATA_COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
SPECIES = "spotted demo animal"
PARAMS_FILE = "demo_params.json"
_TMP_PREFIX = ".demo-tmp-"

# Streams of the seed sequence, so that e.g. adding a photo never changes the
# coat of an individual (each purpose draws from its own generator).
_STREAM_INDIVIDUAL = 1
_STREAM_PHOTO = 2
_STREAM_LAYOUT = 3

PATTERN_KINDS = ("spots", "rosettes", "stripes", "reticulated", "mixed")

# Coat colours (RGB).  Kept to a plausible, fairly narrow range on purpose:
# if every individual had its own vivid colour, colour alone would identify
# it and the demo would not exercise the pattern.
_BASE_COLOURS = np.array(
    [
        (200, 168, 118),  # tan
        (214, 190, 142),  # cream
        (184, 142, 88),  # ochre
        (168, 160, 146),  # grey-beige
        (196, 140, 92),  # rufous
    ],
    dtype=np.float32,
)
_MARK_COLOURS = np.array(
    [
        (32, 26, 22),  # near black
        (66, 44, 28),  # dark brown
        (96, 58, 32),  # chestnut
        (48, 48, 52),  # charcoal
    ],
    dtype=np.float32,
)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator for one purpose (individual, photo, layout)."""
    return np.random.default_rng([int(seed), *map(int, stream)])


# ---------------------------------------------------------------------------
# Individuals
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Individual:
    """Everything that stays the same across photos of one animal.

    Lengths are fractions of the canonical canvas side, so the same individual
    can be drawn at any resolution.
    """

    number: int
    seed: int  # drives the exact placement of the coat marks
    kind: str  # one of PATTERN_KINDS
    faces_left: bool  # head direction; reported as "orientation"
    body_a: float  # body half-length
    body_b: float  # body half-height
    head_r: float
    leg_len: float
    leg_w: float
    tail_len: float
    base_colour: tuple[float, float, float]
    mark_colour: tuple[float, float, float]
    mark_scale: float  # typical spot radius / stripe period
    mark_density: float  # how much of the coat the marks cover
    mark_angle: float  # stripe direction / spot elongation direction
    mark_elong: float  # spot elongation (1 = round)


def make_individual(seed: int, number: int) -> Individual:
    """Draw the body shape, colours and pattern parameters of one individual."""
    rng = _rng(seed, _STREAM_INDIVIDUAL, number)
    kind = PATTERN_KINDS[int(rng.integers(len(PATTERN_KINDS)))]
    base = _BASE_COLOURS[rng.integers(len(_BASE_COLOURS))] + rng.normal(0, 8, 3)
    mark = _MARK_COLOURS[rng.integers(len(_MARK_COLOURS))] + rng.normal(0, 6, 3)
    # Typical mark sizes differ by kind: stripes need a period, spots a radius.
    scale_range = {
        "spots": (0.008, 0.028),
        "rosettes": (0.022, 0.036),
        "stripes": (0.035, 0.075),
        "reticulated": (0.045, 0.075),
        "mixed": (0.04, 0.07),
    }[kind]
    return Individual(
        number=number,
        seed=int(rng.integers(2**31)),
        kind=kind,
        faces_left=bool(rng.integers(2)),
        body_a=float(rng.uniform(0.21, 0.26)),
        body_b=float(rng.uniform(0.11, 0.145)),
        head_r=float(rng.uniform(0.06, 0.08)),
        leg_len=float(rng.uniform(0.13, 0.19)),
        leg_w=float(rng.uniform(0.032, 0.045)),
        tail_len=float(rng.uniform(0.09, 0.16)),
        base_colour=tuple(float(c) for c in np.clip(base, 0, 255)),
        mark_colour=tuple(float(c) for c in np.clip(mark, 0, 255)),
        mark_scale=float(rng.uniform(*scale_range)),
        mark_density=float(rng.uniform(0.35, 0.75)),
        mark_angle=float(rng.uniform(-0.5, 0.5)),
        mark_elong=float(rng.uniform(1.0, 2.2)),
    )


# ---------------------------------------------------------------------------
# Canonical rendering of an individual (no photo effects)
# ---------------------------------------------------------------------------


def _anatomy(ind: Individual, w: int) -> tuple[float, float, float, float, float, float, float]:
    """Body centre and half-axes, head centre and radius, in pixels of a w canvas."""
    cx, cy = 0.45 * w, 0.50 * w
    a, b = ind.body_a * w, ind.body_b * w
    r = ind.head_r * w
    hx, hy = cx + a + 0.35 * r, cy - b - 0.35 * r
    return cx, cy, a, b, hx, hy, r


def _silhouette(ind: Individual, w: int) -> np.ndarray:
    """Body mask (uint8 0/255) of the animal facing right on a w x w canvas."""
    mask = np.zeros((w, w), np.uint8)
    cx, cy, a, b, hx, hy, r = _anatomy(ind, w)

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(round(x)), int(round(y))

    cv2.ellipse(mask, pt(cx, cy), pt(a, b), 0, 0, 360, 255, -1, cv2.LINE_AA)
    # Legs hang from the belly; a little splay so that the pose looks natural.
    leg_w = max(2, int(ind.leg_w * w))
    for fx, splay in ((-0.68, -0.06), (-0.42, 0.04), (0.45, -0.04), (0.7, 0.07)):
        x0, y0 = cx + fx * a, cy + 0.55 * b
        x1, y1 = x0 + splay * w * 0.3, y0 + ind.leg_len * w
        cv2.line(mask, pt(x0, y0), pt(x1, y1), 255, leg_w, cv2.LINE_AA)
    # Neck and head at the front, raised above the back line.
    cv2.line(mask, pt(cx + 0.7 * a, cy - 0.2 * b), pt(hx, hy), 255, int(1.3 * r), cv2.LINE_AA)
    cv2.ellipse(mask, pt(hx, hy), pt(r, 0.8 * r), 0, 0, 360, 255, -1, cv2.LINE_AA)
    cv2.ellipse(mask, pt(hx + 0.9 * r, hy + 0.2 * r), pt(0.7 * r, 0.45 * r), 10, 0, 360, 255, -1, cv2.LINE_AA)  # snout
    ears = np.array(
        [[hx - 0.6 * r, hy - 0.5 * r], [hx - 0.45 * r, hy - 1.5 * r], [hx - 0.05 * r, hy - 0.7 * r]], np.int32
    )
    cv2.fillPoly(mask, [ears], 255, cv2.LINE_AA)
    # Tail: a slightly curved polyline from the rump.
    t = np.linspace(0, 1, 8)
    tx = cx - a * 0.95 - t * ind.tail_len * w
    ty = cy - 0.3 * b + np.sin(t * 2.2) * ind.tail_len * w * 0.6
    cv2.polylines(mask, [np.stack([tx, ty], 1).astype(np.int32)], False, 255, max(2, int(0.018 * w)), cv2.LINE_AA)
    return mask


def _smooth_noise(rng: np.random.Generator, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1]: upsampled coarse noise."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, w), interpolation=cv2.INTER_CUBIC)


def _draw_spots(
    canvas: np.ndarray, rng: np.random.Generator, ind: Individual, w: int, mask: np.ndarray, rings: bool
) -> None:
    """Scatter (possibly elongated) spots or broken rosette rings over ``mask``."""
    # Centres are drawn from the silhouette's own pixels, so that no mark is
    # wasted on empty canvas and sparse coats still show several marks.
    ys, xs = np.nonzero(mask)
    mark = np.array(ind.mark_colour)
    base = np.array(ind.base_colour)
    r_mean = ind.mark_scale * w
    area = len(xs)
    # Aim at covering about ``0.8 * mark_density`` of the coat, before overlaps.
    n = int(0.8 * ind.mark_density * area / (np.pi * r_mean**2 * ind.mark_elong))
    for _ in range(max(n, 12)):
        r = r_mean * float(rng.lognormal(0.0, 0.35))
        i = rng.integers(len(xs))
        cx, cy = xs[i] + rng.uniform(-0.5, 0.5), ys[i] + rng.uniform(-0.5, 0.5)
        elong = 1.0 + (ind.mark_elong - 1.0) * rng.uniform(0.5, 1.0)
        ang = np.degrees(ind.mark_angle + rng.normal(0, 0.6))
        axes = (max(1, int(r * elong)), max(1, int(r)))
        # Vary the lightness of each mark, not its hue: small hue shifts on a
        # dark colour read as green or purple spots.
        colour = tuple(float(c) for c in np.clip(mark * rng.uniform(0.7, 1.3), 0, 255))
        centre = (int(cx), int(cy))
        if rings:
            # Rosette: a darker, warmer centre inside 2-4 arcs of a broken ring.
            inner = np.clip(0.55 * base + 0.45 * mark + (12, 0, -8), 0, 255)
            cv2.ellipse(canvas, centre, axes, ang, 0, 360, tuple(map(float, inner)), -1, cv2.LINE_AA)
            start = rng.uniform(0, 360)
            n_arcs = int(rng.integers(2, 5))
            span = 360.0 / n_arcs
            for k in range(n_arcs):
                s = start + k * span
                cv2.ellipse(
                    canvas,
                    centre,
                    axes,
                    ang,
                    s,
                    s + span * rng.uniform(0.55, 0.85),
                    colour,
                    max(2, int(0.35 * r)),
                    cv2.LINE_AA,
                )
        else:
            cv2.ellipse(canvas, centre, axes, ang, 0, 360, colour, -1, cv2.LINE_AA)


def _stripe_field(rng: np.random.Generator, ind: Individual, w: int, coverage: float) -> np.ndarray:
    """Soft stripe mask in [0, 1]: wavy bands whose wobble is unique per seed."""
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    ang = np.pi / 2 + ind.mark_angle  # roughly vertical bands, like a zebra
    u = xx * np.cos(ang - np.pi / 2) + yy * np.sin(ang - np.pi / 2)
    period = ind.mark_scale * w
    # Low-frequency noise bends the stripes; it is what makes two zebras differ.
    warp = 2.2 * _smooth_noise(rng, w, 5) + 0.8 * _smooth_noise(rng, w, 11)
    phase = 2 * np.pi * u / period + warp * np.pi + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase) + 0.35 * _smooth_noise(rng, w, 9)
    thresh = 1.0 - 2.0 * coverage
    return np.clip((wave - thresh) * 4.0, 0, 1)


def _reticulated_field(rng: np.random.Generator, ind: Individual, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Giraffe-like patches: Voronoi cells (1) separated by light lines (0)."""
    x0, y0, x1, y1 = box
    cell = ind.mark_scale * w
    n = max(6, int((x1 - x0) * (y1 - y0) / cell**2))
    pts = np.stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)], 1)
    # Distances to all seeds are the costly part, so work on a quarter-resolution
    # grid: the gap between the two nearest distances is smooth, and upsampling
    # it before thresholding keeps the lines crisp.
    step = 4
    h = w // step
    yy, xx = (np.mgrid[0:h, 0:h].astype(np.float32) + 0.5) * step
    d = np.hypot(xx[..., None] - pts[:, 0].astype(np.float32), yy[..., None] - pts[:, 1].astype(np.float32))
    d = np.partition(d, 1, axis=2)
    edge = cv2.resize(d[..., 1] - d[..., 0], (w, w), interpolation=cv2.INTER_LINEAR)
    line_w = (0.06 + 0.14 * (1 - ind.mark_density)) * cell
    return np.clip((edge - line_w) / 2.0, 0, 1).astype(np.float32)


def render_animal(ind: Individual, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Draw one individual in its canonical pose.

    Returns ``(rgb, alpha)``: float32 arrays of shape (size, size, 3) in
    0..255 and (size, size) in 0..1.  Drawn at twice the size and shrunk with
    area averaging, which anti-aliases the marks.
    """
    w = 2 * size
    rng = _rng(ind.seed, 0)
    mask = _silhouette(ind, w)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()) - 10, int(ys.min()) - 10, int(xs.max()) + 10, int(ys.max()) + 10)

    base = np.array(ind.base_colour, np.float32)
    mark = np.array(ind.mark_colour, np.float32)
    # Coat = base colour with a faint mottling, so unmarked fur is not flat.
    coat = np.empty((w, w, 3), np.float32)
    coat[:] = base
    coat += 10 * _smooth_noise(rng, w, 24)[..., None]

    if ind.kind in ("spots", "rosettes"):
        _draw_spots(coat, rng, ind, w, mask, rings=ind.kind == "rosettes")
    elif ind.kind == "stripes":
        s = _stripe_field(rng, ind, w, 0.25 + 0.25 * ind.mark_density)
        coat = coat * (1 - s[..., None]) + mark * s[..., None]
    elif ind.kind == "reticulated":
        patch = np.clip(0.25 * base + 0.75 * mark + (45, 20, 0), 0, 255)
        s = _reticulated_field(rng, ind, w, box)
        coat = coat * (1 - s[..., None]) + patch * s[..., None]
    else:  # "mixed": thin stripes plus small spots
        s = _stripe_field(rng, ind, w, 0.15 + 0.15 * ind.mark_density)
        coat = coat * (1 - s[..., None]) + mark * s[..., None]
        small = dataclasses.replace(ind, mark_scale=ind.mark_scale * 0.25, mark_density=ind.mark_density * 0.35)
        _draw_spots(coat, rng, small, w, mask, rings=False)

    # Pale belly (countershading) and soft shading towards the outline give the
    # flat drawing some volume; both are the same for every individual.
    cx, cy, a, b, hx, hy, r = _anatomy(ind, w)
    body = np.zeros((w, w), np.float32)
    cv2.ellipse(body, (int(cx), int(cy)), (int(a), int(b)), 0, 0, 360, 1.0, -1)
    body = cv2.GaussianBlur(body, (0, 0), 0.01 * w)  # belly only, not the legs
    yy = np.arange(w, dtype=np.float32)[:, None]
    belly = (0.4 * np.clip((yy - cy - 0.3 * b) / (0.5 * b), 0, 1) * body)[..., None]
    coat = coat * (1 - belly) + (0.4 * base + 150) * belly
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    shade = 0.72 + 0.28 * np.clip(dist / (0.05 * w), 0, 1)
    coat *= shade[..., None]

    # Eye and nose: small dark dots, so the head reads as a head.
    cv2.circle(coat, (int(hx + 0.25 * r), int(hy - 0.2 * r)), max(2, int(0.14 * r)), (15, 12, 10), -1, cv2.LINE_AA)
    cv2.circle(coat, (int(hx + 1.55 * r), int(hy + 0.1 * r)), max(2, int(0.16 * r)), (25, 18, 15), -1, cv2.LINE_AA)

    alpha = mask.astype(np.float32) / 255.0
    rgb = cv2.resize(np.clip(coat, 0, 255) * alpha[..., None], (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
    # Un-premultiply so that edges keep the coat colour, not a dark fringe.
    rgb = rgb / np.maximum(alpha, 1e-3)[..., None]
    if ind.faces_left:
        rgb, alpha = rgb[:, ::-1].copy(), alpha[:, ::-1].copy()
    return np.clip(rgb, 0, 255).astype(np.float32), alpha.astype(np.float32)


# ---------------------------------------------------------------------------
# Photo conditions
# ---------------------------------------------------------------------------

_BG_PALETTE = np.array(
    [
        (92, 120, 60),
        (120, 140, 80),
        (70, 90, 50),  # greens
        (140, 120, 90),
        (110, 90, 65),
        (165, 150, 120),  # soil, dry grass
        (130, 130, 125),
        (95, 100, 105),  # rock, shade
    ],
    dtype=np.float32,
)


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A fresh random background: gradient, noise or foliage texture."""
    c1, c2 = _BG_PALETTE[rng.choice(len(_BG_PALETTE), 2, replace=False)]
    c1 = c1 + rng.normal(0, 12, 3)
    c2 = c2 + rng.normal(0, 12, 3)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient in a random direction
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        t = np.clip(0.5 + (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang), 0, 1)
        t = t[..., None]
    else:  # smooth noise at a random scale, multi-octave
        t = sum(
            _smooth_noise(rng, s, int(c)) * wgt for c, wgt in ((rng.integers(3, 8), 0.6), (rng.integers(12, 40), 0.3))
        )
        t = (0.5 + 0.5 * np.clip(t, -1, 1))[..., None]
    bg = c1 * (1 - t) + c2 * t
    bg = bg + rng.uniform(3, 12) * rng.standard_normal((s, s, 1), dtype=np.float32)  # grain
    if kind == 2:  # foliage: grass blades / twigs in both palette colours
        for _ in range(int(rng.integers(40, 160))):
            x, y = rng.uniform(0, s, 2)
            ln = rng.uniform(0.03, 0.15) * s
            a = rng.uniform(-2.4, -0.7)  # mostly upward blades
            colour = tuple(map(float, (c1 if rng.random() < 0.5 else c2) * rng.uniform(0.6, 1.3)))
            cv2.line(
                bg,
                (int(x), int(y)),
                (int(x + ln * np.cos(a)), int(y + ln * np.sin(a))),
                colour,
                int(rng.integers(1, 4)),
                cv2.LINE_AA,
            )
    return bg.astype(np.float32)


def _pose_matrix(rng: np.random.Generator, s: int) -> np.ndarray:
    """Homography: rotation, scale, shift and a mild perspective tilt."""
    angle = rng.uniform(-30, 30)
    scale = rng.uniform(0.62, 1.02)
    shift = rng.uniform(-0.1, 0.1, 2) * s
    aff = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    aff[:, 2] += shift
    # Perspective: move the image corners a little and fit the homography.
    src = np.float32([[0, 0], [s, 0], [s, s], [0, s]])
    dst = (src + rng.uniform(-0.07, 0.07, (4, 2)) * s).astype(np.float32)
    persp = cv2.getPerspectiveTransform(src, dst)
    return persp @ np.vstack([aff, [0, 0, 1]])


def _occlude(rng: np.random.Generator, img: np.ndarray, alpha: np.ndarray) -> None:
    """Cover part of the animal with vegetation or a tree trunk (in place)."""
    s = img.shape[0]
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) == 0:
        return
    i = rng.integers(len(xs))
    cx, cy = float(xs[i]), float(ys[i])
    green = _BG_PALETTE[rng.integers(3)] * rng.uniform(0.7, 1.2)
    if rng.random() < 0.25:
        # A vertical trunk or post in front of the animal.
        half = rng.uniform(0.04, 0.09) * s
        bark = np.array([90, 72, 55]) * rng.uniform(0.7, 1.2)
        x0, x1 = int(cx - half), int(cx + half)
        img[:, max(x0, 0) : max(x1, 0)] = bark
        img[:, max(x0, 0) : max(x1, 0)] += rng.normal(0, 10, (s, 1, 1)) * np.ones((1, 1, 3))
        return
    # A bush: a cluster of leaf ellipses around a point on the animal.
    radius = rng.uniform(0.1, 0.22) * s
    for _ in range(int(rng.integers(25, 60))):
        r = rng.uniform(0, radius)
        t = rng.uniform(0, 2 * np.pi)
        x, y = cx + r * np.cos(t), cy + r * np.sin(t) * 0.8
        leaf = (max(1, int(rng.uniform(0.02, 0.05) * s)), max(1, int(rng.uniform(0.008, 0.02) * s)))
        colour = tuple(map(float, green * rng.uniform(0.6, 1.3)))
        cv2.ellipse(img, (int(x), int(y)), leaf, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Brightness, contrast, colour cast, gamma and an illumination gradient."""
    s = img.shape[0]
    gain = rng.uniform(0.65, 1.25) * rng.uniform(0.88, 1.12, 3)  # exposure x cast
    out = img * gain.astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.75, 1.2) + mean
    # Sun from one side: a linear gradient of brightness across the frame.
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
    out *= (1 + rng.uniform(0, 0.35) * (xx * np.cos(ang) + yy * np.sin(ang)))[..., None]
    out = 255 * (np.clip(out, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    return out


def _blur_and_noise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Defocus or motion blur (sometimes) and sensor noise (always a little)."""
    r = rng.random()
    if r < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 2.0))
    elif r < 0.5:
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    return img + rng.uniform(1, 6) * rng.standard_normal(img.shape, dtype=np.float32)


def render_photo(
    ind: Individual, photo_seed: int | list[int], size: int, canonical: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """One photo of ``ind`` under random conditions: uint8 RGB (size, size, 3).

    ``photo_seed`` (anything ``numpy.random.default_rng`` accepts) fixes every
    condition of the photo; ``canonical`` is ``render_animal(ind, size)``,
    passed in to avoid redrawing the animal for each photo.
    """
    rng = np.random.default_rng(photo_seed)
    rgb, alpha = canonical if canonical is not None else render_animal(ind, size)
    h = _pose_matrix(rng, size)
    fg = cv2.warpPerspective(
        rgb, h, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    a = cv2.warpPerspective(
        alpha, h, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    bg = _background(rng, size)
    # A soft ground shadow anchors the animal in the scene.
    shadow = cv2.GaussianBlur(np.roll(a, int(0.04 * size), axis=0), (0, 0), 0.03 * size)
    bg *= (1 - 0.35 * shadow)[..., None]
    img = bg * (1 - a[..., None]) + fg * a[..., None]
    if rng.random() < 0.6:
        _occlude(rng, img, a)
    img = _lighting(rng, img)
    img = _blur_and_noise(rng, img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# Data set assembly
# ---------------------------------------------------------------------------


def _plan(params: dict) -> list[dict]:
    """Decide every photo (who, split, date, photo seed) in the final row order."""
    seed = params["seed"]
    n_known, n_new = params["n_known"], params["n_new"]
    rng = _rng(seed, _STREAM_LAYOUT)
    # Identity numbers are shuffled so that "new" animals are not simply the
    # highest numbers (nothing in a name should hint at known vs new).
    numbers = rng.permutation(n_known + n_new)
    rows = []
    for k, number in enumerate(numbers):
        known = k < n_known
        splits = (
            (["database"] * params["database_per_individual"] + ["query"] * params["queries_per_known"])
            if known
            else ["query"] * params["queries_per_new"]
        )
        for j, split in enumerate(splits):
            # Database photos come from earlier in the season than queries.
            month = int(rng.integers(1, 5)) if split == "database" else int(rng.integers(5, 8))
            date = _dt.date(2026, month, int(rng.integers(1, 29)))
            rows.append(
                {
                    "number": int(number),
                    "split": split,
                    "date": date.isoformat(),
                    "photo_seed": [seed, _STREAM_PHOTO, int(number), j],
                }
            )
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _params(**kwargs) -> dict:
    return {"generator_version": GENERATOR_VERSION, **kwargs}


def _is_complete(root: Path, params: dict) -> bool:
    """True when root holds a finished data set made with exactly ``params``."""
    try:
        if json.loads((root / PARAMS_FILE).read_text()) != params:
            return False
        with open(root / "metadata.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError):
        return False
    return bool(rows) and all((root / r["path"]).is_file() for r in rows)


def _metadata_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for r in rows:
        writer.writerow([r[c] for c in METADATA_COLUMNS])
    return buf.getvalue().encode("utf-8")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_demo_dataset(
    root: Path | str,
    *,
    n_known: int = 16,
    n_new: int = 6,
    database_per_individual: int = 6,
    queries_per_known: int = 2,
    queries_per_new: int = 2,
    image_size: int = 256,
    seed: int = 0,
    dataset_name: str = "DemoSpots",
) -> Path:
    """Write the demo dataset under root and return root/"metadata.csv".

    Idempotent: if ``root`` already holds a complete data set made with the
    same parameters (``root/demo_params.json``), nothing is redrawn.
    Otherwise the images are drawn into a temporary folder inside ``root`` and
    moved into place, and ``metadata.csv`` is written last, so an interrupted
    run never leaves a ``metadata.csv`` that points at missing images.  When
    regenerating, ``root/images`` is replaced as a whole (stale images from a
    larger earlier data set do not linger); other files in ``root`` are kept.
    """
    root = Path(root)
    if n_known < 0 or n_new < 0 or n_known + n_new == 0:
        raise ValueError("need at least one individual")
    if min(database_per_individual, queries_per_known, queries_per_new) < 0:
        raise ValueError("photo counts must not be negative")
    if n_known and database_per_individual < 1:
        raise ValueError("known individuals need at least one database image")
    if image_size < 32:
        raise ValueError("image_size must be at least 32")
    params = _params(
        n_known=n_known,
        n_new=n_new,
        database_per_individual=database_per_individual,
        queries_per_known=queries_per_known,
        queries_per_new=queries_per_new,
        image_size=image_size,
        seed=seed,
        dataset_name=dataset_name,
    )
    meta_path = root / "metadata.csv"
    if _is_complete(root, params):
        return meta_path

    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_TMP_PREFIX + "*"):  # left behind by a killed run
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)

    plan = _plan(params)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=_TMP_PREFIX))
    try:
        (tmp / "images").mkdir()
        canonical: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        individuals: dict[int, Individual] = {}
        rows = []
        for image_id, p in enumerate(plan):
            number = p["number"]
            if number not in individuals:
                individuals[number] = make_individual(seed, number)
                canonical[number] = render_animal(individuals[number], image_size)
            ind = individuals[number]
            pixels = render_photo(ind, p["photo_seed"], image_size, canonical[number])
            rel = f"images/{image_id}.jpg"
            Image.fromarray(pixels, "RGB").save(tmp / rel, "JPEG", quality=90)
            rows.append(
                {
                    "image_id": image_id,
                    "identity": f"{dataset_name}_{number:03d}",
                    "path": rel,
                    "date": p["date"],
                    "orientation": "left" if ind.faces_left else "right",
                    "species": SPECIES,
                    "split": p["split"],
                    "dataset": dataset_name,
                }
            )

        # Swap in the new images.  The old metadata goes first, so that at no
        # moment does a metadata.csv name images that are not there.
        meta_path.unlink(missing_ok=True)
        old = root / "images"
        if old.exists():
            trash = tmp / "old-images"
            os.replace(old, trash)
        os.replace(tmp / "images", old)
        _write_atomic(root / PARAMS_FILE, (json.dumps(params, indent=2, sort_keys=True) + "\n").encode())
        _write_atomic(meta_path, _metadata_bytes(rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta_path
