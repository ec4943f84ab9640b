"""Decoding on the CPU for extraction: PIL decodes and resizes each picture in loader worker
processes, so that decoding overlaps the model. The exact path (the reference's arithmetic) and
the "fast" one (a reduced JPEG decode, torch's uint8 resize); device_decode.py is the other way.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from wildreid.data.images import ImageReadError, decode_image, read_image_bytes
from wildreid.data.regions import Region, region_picture
from wildreid.describe.backbones import Preprocess
from wildreid.describe.device_decode import TENSOR_INTERPOLATIONS, Batch, normalise, resize

PIL_INTERPOLATION = {
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "nearest": Image.NEAREST,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
}
DRAFT_OVERSAMPLING = 2  # "fast" decoding keeps at least this many times the input size


def image_to_tensor(image: Image.Image, preprocess: Preprocess) -> torch.Tensor:
    return pixels_to_input(resized_pixels(image, preprocess), preprocess)


def resized_pixels(image: Image.Image, preprocess: Preprocess) -> torch.Tensor:
    """uint8 (C, H, W): the picture resized by PIL to the model's input, the exact path's first half
    (distributed.py decodes with it on one machine and normalises on another)."""
    height, width = preprocess.size
    return TF.pil_to_tensor(image.resize((width, height), PIL_INTERPOLATION[preprocess.interpolation]))


def pixels_to_input(pixels: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """uint8 (C, H, W) or (N, C, H, W) -> the model's input, the reference's arithmetic:
    x / 255, then (x - mean) / std."""
    return TF.normalize(pixels.float().div_(255.0), list(preprocess.mean), list(preprocess.std))


def decode_image_draft(data: bytes, name: str, size: tuple[int, int]) -> Image.Image:
    """``data.decode_image`` at a reduced JPEG scale that still covers DRAFT_OVERSAMPLING times
    ``size`` (height, width).

    libjpeg then skips most of the inverse DCT and colour conversion: a 2000x1800 photo for a
    224x224 input decodes several times faster. Keeping twice the input size leaves the resize
    real pixels to average (at 1x, EfficientNet-Lite0 features of NyalaData photos drop to
    cosine 0.988 with the exact path; at 2x the lowest of all 458 is 0.994). The pixels still
    differ slightly, so the exact path stays the default.
    """
    return decode_image(data, name, draft_size=(DRAFT_OVERSAMPLING * size[0], DRAFT_OVERSAMPLING * size[1]))


def fast_image_to_tensor(image: Image.Image, preprocess: Preprocess) -> torch.Tensor:
    """``image_to_tensor`` with torch's uint8 antialiased resize instead of PIL's: the same
    algorithm (pixels within one level), several times faster on a large image."""
    if preprocess.interpolation not in TENSOR_INTERPOLATIONS:
        return image_to_tensor(image, preprocess)
    # (H, W, C) memory seen as (C, H, W): the layout torch's fast uint8 kernel works in.
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    resized = resize(pixels, preprocess.size, preprocess.interpolation)
    return normalise(resized[None], preprocess)[0]


class _ImageFiles(torch.utils.data.Dataset):
    """Reads, decodes and preprocesses; a bad image yields its error instead of a tensor."""

    def __init__(
        self,
        paths: list[str],
        rows: list[int],
        preprocess: Preprocess,
        draft: bool = False,
        regions: list[Region | None] | None = None,
    ):
        self.paths, self.rows, self.preprocess, self.draft = paths, rows, preprocess, draft
        self.regions = regions

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int):
        row = self.rows[item]
        try:
            data = read_image_bytes(self.paths[row])
            region = self.regions[row] if self.regions is not None else None
            if region is not None:
                picture = region_picture(data, self.paths[row], region)
                convert = fast_image_to_tensor if self.draft else image_to_tensor
                return row, convert(picture, self.preprocess), None
            if self.draft:
                image = decode_image_draft(data, self.paths[row], self.preprocess.size)
                return row, fast_image_to_tensor(image, self.preprocess), None
            return row, image_to_tensor(decode_image(data, self.paths[row]), self.preprocess), None
        except ImageReadError as error:
            return row, None, str(error)


def _collate(samples):
    good = [(row, tensor) for row, tensor, _ in samples if tensor is not None]
    bad = [(row, error) for row, _, error in samples if error is not None]
    tensors = torch.stack([t for _, t in good]) if good else None
    return [row for row, _ in good], tensors, bad


def cpu_batches(paths, rows, preprocess, device, batch_size, num_workers, draft, regions=None) -> Iterator[Batch]:
    """Batches decoded by PIL in loader worker processes (so decoding overlaps the model)."""
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, rows, preprocess, draft, regions),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    for batch_rows, tensors, bad in loader:
        images = None if tensors is None else tensors.to(device, non_blocking=True)
        yield Batch(batch_rows, images, bad, cpu_decoded=len(batch_rows))
