"""A multi-scale descriptor from one ImageNet CNN: GeM-pooled features of several of its stages,
not only of its last layer.

An ImageNet network's last layer is trained to name the species (or the object class); what tells
one nyala or one lion from another, the pattern of stripes, spots, scars and whisker rows, is
texture, which the middle stages encode and the last one has largely pooled away. So the
descriptor pools each of the last four stages of blocks and the head separately (generalised mean,
p = 3, the pooling of image retrieval's GeM and of MegaDescriptor's training code; GeM is defined
on non-negative maps, so the stages' linear outputs are clipped at a small positive value first),
scales every part to unit length so that each stage weighs alike whatever its width, and
concatenates them. Still unit length after the gallery normalises it; the adaptation stage
(adapt_linear.py) then learns, per catalogue, how much each direction of each stage is worth.

Which stages: EfficientNet-Lite0's blocks 3 to 6 (80, 112, 192 and 320 channels, at 1/16 and
1/32 of the picture) and its 1,280-channel head, 1,984 numbers. Fixed before any measurement (the
last four stages and the head), not tuned. Measured in BENCHMARKS.md (issue 20).
"""

from __future__ import annotations

from typing import Any

import torch

STAGES = (3, 4, 5, 6)  # blocks whose outputs are pooled, besides the head
GEM_POWER = 3.0
FLOOR = 1e-6


def gem(feature_map: torch.Tensor) -> torch.Tensor:
    """Generalised mean pooling over the spatial positions, (N, C, H, W) -> (N, C)."""
    return feature_map.clamp(min=FLOOR).pow(GEM_POWER).mean(dim=(2, 3)).pow(1.0 / GEM_POWER)


class MultiScaleEfficientNet(torch.nn.Module):
    """Wraps a timm EfficientNet (``conv_stem``, ``bn1``, ``blocks``, ``conv_head``, ``bn2``)."""

    def __init__(self, network: Any) -> None:  # timm's EfficientNet, whose submodules torch types loosely
        super().__init__()
        self.network: Any = network
        widths = [network.blocks[stage][-1].conv_pwl.out_channels for stage in STAGES]
        self.num_features = sum(widths) + int(network.num_features)
        self.pretrained_cfg = network.pretrained_cfg  # the same preprocessing as the network's own

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        network: Any = self.network
        hidden = network.bn1(network.conv_stem(images))
        parts = []
        for stage, block in enumerate(network.blocks):
            hidden = block(hidden)
            if stage in STAGES:
                parts.append(gem(hidden))
        parts.append(gem(network.bn2(network.conv_head(hidden))))
        return torch.cat([torch.nn.functional.normalize(part, dim=1) for part in parts], dim=1)
