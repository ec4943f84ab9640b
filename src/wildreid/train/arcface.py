"""The fine-tuning loss: additive angular margin (ArcFace), optionally with sub-centers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class ArcFaceHead(torch.nn.Module):
    """Additive angular margin loss (ArcFace, Deng et al. 2019), optionally sub-center
    (Deng et al. 2020: ``sub_centers`` prototypes per identity, the closest one counts).

    Features and prototypes are L2-normalised, so the logits are cosines: training pulls an
    image's feature towards its identity by an angle ``margin`` beyond what is needed, which is
    what makes plain cosine nearest-neighbour search work afterwards.
    """

    def __init__(self, dim: int, classes: int, margin: float, scale: float, sub_centers: int = 1):
        super().__init__()
        self.classes, self.sub_centers, self.margin, self.scale = classes, sub_centers, margin, scale
        self.weight = torch.nn.Parameter(torch.empty(classes * sub_centers, dim))
        torch.nn.init.normal_(self.weight, std=0.01)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, classes) cosine to each identity's nearest prototype."""
        cosine = F.linear(F.normalize(features.float()), F.normalize(self.weight))
        return cosine.view(len(features), self.classes, self.sub_centers).amax(dim=2)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss over the batch, and the plain cosines (for accuracy)."""
        cosine = self.cosine(features)
        target = cosine.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - target * target)
        with_margin = target * math.cos(self.margin) - sine * math.sin(self.margin)  # cos(theta + m)
        # Beyond theta = pi - m, cos(theta + m) would rise again; continue it as a straight line
        # instead (InsightFace's rule), so the loss keeps pushing the wrong way-round images.
        with_margin = torch.where(
            target > math.cos(math.pi - self.margin),
            with_margin,
            target - math.sin(math.pi - self.margin) * self.margin,
        )
        logits = cosine.scatter(1, labels[:, None], with_margin) * self.scale
        return F.cross_entropy(logits, labels), cosine.detach()
