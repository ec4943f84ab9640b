"""One-vs-many keypoint search scored by LNBNN (local naive Bayes nearest neighbour), as HotSpotter.

Every query keypoint looks up its k nearest database keypoints (all images of the dataset at
once, FAISS); each neighbour's image gains (d_norm - d_i), where d_norm is the distance to the
(k+1)-th neighbour. A keypoint on background texture shared by many photos has many close
neighbours, so d_norm is small and it adds almost nothing: distinctive marks dominate the score.
This finds candidates that a weak global descriptor ranks low.
"""

from __future__ import annotations

import faiss
import numpy as np

from wildreid.local.base import LocalFeatures
from wildreid.util.faiss_filter import search_parameters

# Above this many database descriptors an inverted-file index replaces exhaustive search
# (approximate, but LNBNN only needs the neighbourhood, not exact distances).
EXACT_SEARCH_LIMIT = 50_000


class KeypointIndex:
    """All descriptors of a set of images, each remembering its image."""

    def __init__(self, features: list[LocalFeatures | None], max_per_image: int = 256):
        self.images = 0
        self.max_per_image = max_per_image
        self.owner = np.zeros(0, np.int64)
        self.index: faiss.Index | None = None
        blocks, owners = self._blocks(features)
        if blocks:
            vectors = np.concatenate(blocks)
            dim = vectors.shape[1]
            index: faiss.Index
            if len(vectors) <= EXACT_SEARCH_LIMIT:
                index = faiss.IndexFlatL2(dim)
            else:
                lists = int(np.sqrt(len(vectors)))
                index = ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists)
                rng = np.random.default_rng(0)
                ivf.train(vectors[rng.choice(len(vectors), size=min(len(vectors), 60 * lists), replace=False)])
                ivf.nprobe = 8
            index.add(vectors)
            self.index = index
            self.owner = np.concatenate(owners)
        self.images = len(features)

    def _blocks(self, features: list[LocalFeatures | None]):
        """Each image's descriptors (at most max_per_image) and their owner, numbered after the
        images already indexed."""
        blocks, owners = [], []
        for image, found in enumerate(features, start=self.images):
            if found is None or len(found) == 0:
                continue
            descriptors = np.ascontiguousarray(found.descriptors[: self.max_per_image], dtype=np.float32)
            blocks.append(descriptors)
            owners.append(np.full(len(descriptors), image, dtype=np.int64))
        return blocks, owners

    def add(self, features: list[LocalFeatures | None]) -> None:
        """Append images (numbered after the existing ones) without retraining; an IVF index
        keeps its lists, a flat one stays exact."""
        blocks, owners = self._blocks(features)
        if blocks:
            vectors = np.concatenate(blocks)
            if self.index is None:
                self.index = faiss.IndexFlatL2(vectors.shape[1])
            self.index.add(vectors)
            self.owner = np.concatenate([self.owner, *owners])
        self.images += len(features)

    def lnbnn(
        self,
        queries: list[LocalFeatures | None],
        k: int = 5,
        excluded: list[set[int]] | None = None,
        spare: int = 10,
        allowed: np.ndarray | None = None,
    ) -> np.ndarray:
        """(len(queries), images) LNBNN scores. ``excluded[q]``: images query q may not vote for
        (itself, its near-duplicates), skipped before counting the k neighbours. ``allowed``: a
        boolean mask over the images; only their keypoints are searched (compatible viewpoints),
        so the normalising neighbour is also one of theirs."""
        scores = np.zeros((len(queries), self.images), dtype=np.float64)
        if self.index is None:
            return scores
        blocks = [
            np.ascontiguousarray(f.descriptors[: self.max_per_image], dtype=np.float32)
            if f is not None and len(f)
            else np.zeros((0, self.index.d), np.float32)
            for f in queries
        ]
        if not any(len(b) for b in blocks):
            return scores
        depth = k + 1 + (spare if excluded is not None else 0)
        # One batched search for every query keypoint: FAISS parallelises large batches well.
        params = search_parameters(self.index, None if allowed is None else np.asarray(allowed, bool)[self.owner])
        squared, neighbours = self.index.search(np.concatenate(blocks), depth, params=params)
        distances = np.sqrt(np.maximum(squared, 0))
        owners = np.where(neighbours >= 0, self.owner[np.maximum(neighbours, 0)], -1)
        start = 0
        for row, block in enumerate(blocks):
            stop = start + len(block)
            self._vote(
                scores[row],
                distances[start:stop],
                owners[start:stop],
                k,
                excluded[row] if excluded is not None else None,
            )
            start = stop
        return scores

    @staticmethod
    def _vote(scores: np.ndarray, distances: np.ndarray, owners: np.ndarray, k: int, excluded: set[int] | None):
        valid = owners >= 0
        if excluded:
            valid &= ~np.isin(owners, list(excluded))
        # Rank of each valid neighbour among the valid ones of its keypoint: the first k vote,
        # the (k+1)-th is the normaliser.
        rank = np.cumsum(valid, axis=1) - 1
        has_normaliser = valid.sum(axis=1) >= k + 1
        normaliser_column = np.argmax(valid & (rank == k), axis=1)
        normaliser = distances[np.arange(len(distances)), normaliser_column]
        voting = valid & (rank < k) & has_normaliser[:, None]
        weights = np.maximum(normaliser[:, None] - distances, 0)[voting]
        np.add.at(scores, owners[voting], weights)
