"""The global vectors of a gallery in a FAISS index: exact below a size, inverted lists above.

Vectors are L2-normalised, so inner product is cosine. Up to ``EXACT_LIMIT`` vectors a flat index
answers exactly: at 50,000 x 1280-d a query costs about 64 MFLOP (a few ms on two cores), and
exact answers keep small galleries identical to the batch computation. Above it an IVF index
(``nlist`` = sqrt(N) lists, ``IVF_NPROBE`` of them searched) keeps a query's cost nearly flat as the
gallery grows; ``benchmarks/gallery_scale.py`` measures its recall against exact search. The
index holds the only copy of the vectors: ``vectors(rows)`` reads them back (FAISS keeps IVF
vectors uncompressed, so the read-back is exact).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from wildreid.util.faiss_filter import search_parameters

EXACT_LIMIT = 50_000
# Searched lists of an IVF index: measured on 1M clustered 1280-d vectors (benchmarks/gallery_scale.py)
# to reach recall@100 >= 0.95 against exact search.
IVF_NPROBE = 16
IVF_TRAINING_PER_LIST = 40  # k-means training sample per list (FAISS warns below 39)


def normalize(vectors: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Rows scaled to unit length, as float32, computed in float64 (the batch pipeline's
    arithmetic); in chunks, so that a million vectors need no float64 copy of them all."""
    vectors = np.asarray(vectors)
    out = np.empty(vectors.shape, dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk].astype(np.float64)
        out[start : start + chunk] = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return out


class VectorIndex:
    """Normalised vectors; row i of the index is the i-th vector added."""

    def __init__(self, index: faiss.Index):
        self.index = index

    @classmethod
    def build(
        cls, vectors: np.ndarray, *, exact_limit: int = EXACT_LIMIT, seed: int = 0, chunk: int = 65536
    ) -> "VectorIndex":
        """An index of ``vectors`` (normalised chunk by chunk as they are added, so building
        holds the input and the index, never a third copy)."""
        dim = vectors.shape[1]
        index: faiss.Index
        if len(vectors) <= exact_limit:
            index = faiss.IndexFlatIP(dim)
        else:
            lists = int(np.sqrt(len(vectors)))
            index = ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = rng.choice(len(vectors), size=min(len(vectors), IVF_TRAINING_PER_LIST * lists), replace=False)
            ivf.train(normalize(vectors[np.sort(sample)]))
            ivf.nprobe = IVF_NPROBE
            ivf.make_direct_map()  # so vectors(rows) can read any row back
        for start in range(0, len(vectors), chunk):
            index.add(normalize(vectors[start : start + chunk]))
        return cls(index)

    @property
    def size(self) -> int:
        return self.index.ntotal

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def exact(self) -> bool:
        return isinstance(self.index, faiss.IndexFlat)

    def add(self, vectors: np.ndarray, *, exact_limit: int = EXACT_LIMIT) -> None:
        """Append vectors (their rows follow the existing ones). A flat index that outgrows
        ``exact_limit`` is rebuilt once as IVF."""
        vectors = normalize(vectors)
        if self.exact and self.size + len(vectors) > exact_limit:
            everything = np.concatenate([self.vectors(np.arange(self.size)), vectors])
            self.index = VectorIndex.build(everything, exact_limit=exact_limit).index
            return
        self.index.add(vectors)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.index.reconstruct_batch(rows)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (Q, k), best first; ties keep the lower row first (as a stable
        sort of the exact scores would); -inf / -1 where fewer than k rows exist. ``allowed``: a
        boolean mask over the rows; only those are searched (e.g. compatible viewpoints)."""
        queries = normalize(queries)
        k = min(int(k), self.size if allowed is None else int(np.count_nonzero(allowed)))
        if k <= 0 or len(queries) == 0:
            return np.zeros((len(queries), 0)), np.zeros((len(queries), 0), np.int64)
        scores, rows = self.index.search(queries, k, params=search_parameters(self.index, allowed))
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float64)
        order = np.lexsort((np.where(rows >= 0, rows, np.iinfo(np.int64).max), -scores), axis=-1)
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def pair_cosine(self, query_vectors: np.ndarray, query_rows: np.ndarray, database_rows: np.ndarray) -> np.ndarray:
        """Cosine of (query, database row) pairs: query_vectors[query_rows[i]] . vector(database_rows[i])."""
        queries = normalize(query_vectors)[query_rows]
        return np.einsum("ij,ij->i", queries, self.vectors(database_rows)).astype(np.float64)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path) -> "VectorIndex":
        index = faiss.read_index(str(path))
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = IVF_NPROBE
        return cls(index)
