"""Training augmentations for re-identification.

What identifies an individual animal is its pattern: spots, stripes, scars, whisker rows. So the
augmentations change what a camera changes (framing, exposure, focus) and keep the pattern:

- a random resized crop with a *mild* scale (default: at least 70% of the picture), because a
  strong crop can cut away the very marks that tell two animals apart;
- brightness / contrast / saturation jitter, but no hue shift by default: coat colour can
  itself identify an animal;
- an occasional light Gaussian blur (out-of-focus and moving animals);
- horizontal flip OFF by default: an animal's left and right flanks carry different patterns,
  so a mirrored left flank is not a picture of that animal at all.

Inputs are uint8 tensors (C, H, W) already squashed to the model's square input at a slightly
larger size (see ``train.source_size``), exactly as evaluation squashes the whole picture; the
output is the normalised float tensor the model takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, v2


@dataclass(frozen=True)
class AugmentConfig:
    min_crop_scale: float = 0.7  # smallest crop, as a fraction of the picture's area
    color_jitter: float = 0.3  # brightness and contrast in [1-x, 1+x]; saturation in [1-x/2, 1+x/2]
    hue: float = 0.0  # hue shift (fraction of the colour circle); 0: coat colour kept
    blur_probability: float = 0.2
    flip: bool = False  # mirror images; only for animals whose two sides look alike

    def __post_init__(self):
        if not 0.05 <= self.min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale must be within [0.05, 1], got {self.min_crop_scale}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be within [0, 0.5], got {self.hue}")
        if self.color_jitter < 0 or not 0.0 <= self.blur_probability <= 1.0:
            raise ValueError("color_jitter must be >= 0 and blur_probability within [0, 1]")


def train_transform(
    size: tuple[int, int], mean, std, interpolation: str, config: AugmentConfig = AugmentConfig()
) -> v2.Compose:
    """Random view of a uint8 picture -> normalised float tensor of ``size`` (height, width)."""
    steps = [
        v2.RandomResizedCrop(
            size,
            scale=(config.min_crop_scale, 1.0),
            ratio=(3 / 4, 4 / 3),
            interpolation=_tensor_interpolation(interpolation),
            antialias=True,
        ),
        # Colour and blur work on floats: several times faster than on uint8 in torchvision.
        v2.ToDtype(torch.float32, scale=True),
    ]
    if config.flip:
        steps.append(v2.RandomHorizontalFlip())
    if config.color_jitter > 0 or config.hue > 0:
        steps.append(
            v2.ColorJitter(
                brightness=config.color_jitter,
                contrast=config.color_jitter,
                saturation=config.color_jitter / 2,
                hue=config.hue,
            )
        )
    if config.blur_probability > 0:
        # A kernel about 1/30 of the picture (odd, at least 3): mild defocus, not a smear.
        kernel = max(3, (min(size) // 30) | 1)
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 1.5))], p=config.blur_probability))
    steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


def _tensor_interpolation(name: str) -> InterpolationMode:
    # Torch resizes tensors with bilinear, bicubic or nearest only; for PIL's box and lanczos the
    # random crop (an augmentation, not the model's exact input) uses bicubic.
    return InterpolationMode(name) if name in ("bilinear", "bicubic", "nearest") else InterpolationMode.BICUBIC
