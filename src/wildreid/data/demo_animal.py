"""The demo's animals: every individual is a cartoon quadruped (ellipse body, head, legs, tail)
whose coat carries a unique pattern: spots, rosettes, stripes, a giraffe-like network, or stripes
mixed with spots. The pattern type, its parameters and the exact placement of every mark come from
a per-individual random generator, so the coat is the main identity cue; body proportions and
colours vary a little too, as they do in real animals.

demo_photo.py photographs them, demo.py makes the data set (see its docstring).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# Streams of the seed sequence, so that e.g. adding a photo never changes the
# coat of an individual (each purpose draws from its own generator).
STREAM_INDIVIDUAL = 1
STREAM_PHOTO = 2
STREAM_LAYOUT = 3

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


def seeded_rng(seed: int, *stream: int) -> np.random.Generator:
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
    rng = seeded_rng(seed, STREAM_INDIVIDUAL, number)
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


def smooth_noise(rng: np.random.Generator, w: int, cells: int) -> np.ndarray:
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
    warp = 2.2 * smooth_noise(rng, w, 5) + 0.8 * smooth_noise(rng, w, 11)
    phase = 2 * np.pi * u / period + warp * np.pi + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase) + 0.35 * smooth_noise(rng, w, 9)
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
    rng = seeded_rng(ind.seed, 0)
    mask = _silhouette(ind, w)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()) - 10, int(ys.min()) - 10, int(xs.max()) + 10, int(ys.max()) + 10)

    base = np.array(ind.base_colour, np.float32)
    mark = np.array(ind.mark_colour, np.float32)
    # Coat = base colour with a faint mottling, so unmarked fur is not flat.
    coat = np.empty((w, w, 3), np.float32)
    coat[:] = base
    coat += 10 * smooth_noise(rng, w, 24)[..., None]

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
