"""Mirrored photos for mirrored matching (views.py): the global descriptor and the keypoints of a
photo flipped left-right, each cached apart from the unflipped ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from wildreid.describe.backbones import Backbone
from wildreid.local.base import LocalFeatures, LocalMethod


class _Flipped(torch.nn.Module):
    """A model that sees its input mirrored: flipping the resized, normalised tensor is flipping
    the photo, as resizing and normalising act on both sides alike."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.num_features = getattr(model, "num_features", 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(torch.flip(images, dims=[-1]))


def mirrored_backbone(backbone: Backbone) -> Backbone:
    """The same descriptor of the mirrored photo (its own cache key)."""
    return replace(backbone, model=_Flipped(backbone.model), weights_id=f"{backbone.weights_id}|hflip")


class MirroredMethod(LocalMethod):
    """A local feature method run on the mirrored photo; matching is the method's own."""

    def __init__(self, method: LocalMethod):
        self.method = method
        self.name = f"{method.name}-mirrored"
        self.descriptor_dim = method.descriptor_dim

    def config_key(self) -> str:
        return f"{self.method.config_key()}-hflip"

    def extract(self, image: Image.Image) -> LocalFeatures:
        return self.method.extract(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        return self.method.match(a, b)

    def match_with_confidence(self, a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray, np.ndarray | None]:
        return self.method.match_with_confidence(a, b)  # LightGlue's confidences, for the "matches" count
