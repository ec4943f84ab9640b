"""The head level of adaptation: a small network trained with a metric loss (ArcFace) on the
catalogue's frozen global vectors, in seconds to minutes on a CPU.

``arcface``: x -> unit(z + (z @ down) @ up), where z is the within-class whitened vector of the
linear level (adapt_linear.WhitenAdapter) and ``down`` (d x RANK), ``up`` (RANK x d) a low-rank
correction trained with an additive angular margin loss (ArcFace, Deng et al. 2019) against one
learned centre per individual. ``up`` starts at zero, so the untrained head is exactly the
whitening that wins the linear level's validation on every shared dataset; the loss moves it only
where the catalogue's labels say, and the weight decay pulls it back towards the whitening. A
low-rank, residual correction because a catalogue has hundreds to a few thousand photos: a full
d x d matrix (1.6 million weights for Lite0) would memorise them.

Settings, fixed before any measurement and not tuned on the shared datasets: margin 0.5 and scale
64 (wildlife-tools' ArcFace defaults, with which MegaDescriptor was trained), rank 64, Adam at
1e-3 with weight decay 1e-4, 100 full-batch steps. Whether the head is used at all is the
validation's choice (gallery/adaptation.py), on identities it never saw.
"""

from __future__ import annotations

import numpy as np

from wildreid.describe.adapt_linear import WhitenAdapter
from wildreid.describe.adapters import ADAPTERS, Adapter, unit_rows

RANK = 64
MARGIN = 0.5
SCALE = 64.0
STEPS = 100
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4


class ArcFaceHead(Adapter):
    name = "arcface"
    # Not compared by --adapt auto: on the shared databases, identities held out
    # (benchmarks/adaptation_levels.py, BENCHMARKS.md issue 20), it never beat the whitening it
    # starts from (LionData and NyalaData within 0.02, Holstein2025 0.697 -> 0.446) and its 5
    # fold fits took 45-130 s against 9-18 s. Use it by name (--adapt arcface).
    in_auto = False

    def __init__(
        self,
        mean: np.ndarray | None = None,
        projection: np.ndarray | None = None,
        down: np.ndarray | None = None,
        up: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.mean, self.projection, self.down, self.up = mean, projection, down, up

    def _whitened(self, vectors: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.projection is not None
        return unit_rows((unit_rows(vectors).astype(np.float64) - self.mean) @ self.projection).astype(np.float64)

    def fit(self, vectors: np.ndarray, identities: np.ndarray, *, seed: int = 0) -> "ArcFaceHead":
        import torch

        whiten = WhitenAdapter().fit(vectors, identities, seed=seed)
        self.mean, self.projection = whiten.mean, whiten.projection
        inputs = torch.from_numpy(self._whitened(vectors).astype(np.float32))
        _, members = np.unique(np.asarray(identities).astype(str), return_inverse=True)
        labels = torch.from_numpy(members.astype(np.int64))
        generator = torch.Generator().manual_seed(seed)
        dimension = inputs.shape[1]
        rank = min(RANK, dimension)
        down = torch.nn.Parameter(torch.randn(dimension, rank, generator=generator) / np.sqrt(dimension))
        up = torch.nn.Parameter(torch.zeros(rank, dimension))
        # Each individual's centre starts at its photos' mean direction.
        centres_start = torch.zeros(int(members.max()) + 1, dimension).index_add_(0, labels, inputs)
        centres = torch.nn.Parameter(torch.nn.functional.normalize(centres_start, dim=1))
        optimiser = torch.optim.Adam([down, up, centres], lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        for _ in range(STEPS):
            optimiser.zero_grad()
            embedded = torch.nn.functional.normalize(inputs + (inputs @ down) @ up, dim=1)
            loss = arcface_loss(embedded, torch.nn.functional.normalize(centres, dim=1), labels)
            loss.backward()
            optimiser.step()
        self.down, self.up = down.detach().numpy().astype(np.float64), up.detach().numpy().astype(np.float64)
        return self

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        if self.down is None or self.up is None:
            raise ValueError("the 'arcface' adapter is not fitted")
        whitened = self._whitened(vectors)
        return unit_rows(whitened + (whitened @ self.down) @ self.up)

    def state(self) -> dict[str, np.ndarray]:
        assert self.mean is not None and self.projection is not None and self.down is not None and self.up is not None
        return {"mean": self.mean, "projection": self.projection, "down": self.down, "up": self.up}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "ArcFaceHead":
        return cls(*(np.asarray(state[key], np.float64) for key in ("mean", "projection", "down", "up")))


def arcface_loss(embedded, centres, labels):
    """Cross-entropy over scale * cos(angle + margin) for the true individual, scale * cos(angle)
    for the others (ArcFace's additive angular margin)."""
    import torch

    cosine = (embedded @ centres.T).clamp(-1 + 1e-7, 1 - 1e-7)
    true = cosine.gather(1, labels[:, None])
    with_margin = torch.cos(torch.acos(true) + MARGIN)
    logits = cosine.scatter(1, labels[:, None], with_margin) * SCALE
    return torch.nn.functional.cross_entropy(logits, labels)


ADAPTERS.register("arcface", ArcFaceHead)
