"""One photo of a demo animal, changed as a camera trap would change it: pose (rotation, scale,
position, mild perspective), lighting (brightness, contrast, colour cast, an illumination
gradient), blur, sensor noise, a fresh random background (gradient, noise or foliage texture)
and, often, partial occlusion by "vegetation" or a tree trunk. The mix is tuned so that a generic
ImageNet CNN embedding does clearly better than chance without being perfect.
"""

from __future__ import annotations

import cv2
import numpy as np

from wildreid.data.demo_animal import Individual, render_animal, smooth_noise

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
            smooth_noise(rng, s, int(c)) * wgt for c, wgt in ((rng.integers(3, 8), 0.6), (rng.integers(12, 40), 0.3))
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
