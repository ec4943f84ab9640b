"""Batched global-descriptor extraction with an on-disk cache.

The cache is keyed by the backbone's cache key (weights + preprocessing) and each image's
content hash (SHA-256 of the file bytes), so renamed or copied photos are not extracted twice
and a changed photo is. It is a folder of shard files, each written atomically (temporary file,
then rename) every few hundred images: a run killed at any moment leaves only complete shards,
and the next run extracts just what is missing.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from tqdm.auto import tqdm

from .backbones import Backbone, Preprocess
from .data import ImageReadError, decode_image, read_image_bytes
from .files import atomic_path

PIL_INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                     "nearest": Image.NEAREST, "lanczos": Image.LANCZOS, "box": Image.BOX}


@dataclass
class Extraction:
    """Embeddings in input order; rows of failed images are zero and listed in ``failures``."""

    embeddings: np.ndarray                         # (N, D) float32
    failures: dict[int, str] = field(default_factory=dict)   # row -> reason
    extracted: int = 0                              # how many were computed (not from cache)

    @property
    def ok(self) -> np.ndarray:
        mask = np.ones(len(self.embeddings), dtype=bool)
        mask[list(self.failures)] = False
        return mask


class EmbeddingCache:
    """Content-hash -> vector store for one backbone, as atomically written shard files."""

    MAX_SHARDS = 64  # merged into one when there are more, to keep start-up reads cheap

    def __init__(self, root: str | Path, key: str):
        self.folder = Path(root) / key

    def load(self) -> dict[str, np.ndarray]:
        shards = sorted(self.folder.glob("shard-*.npz"))
        vectors: dict[str, np.ndarray] = {}
        for shard in shards:
            try:
                with np.load(shard, allow_pickle=False) as content:
                    vectors.update(zip(content["hashes"].tolist(), content["vectors"]))
            except (OSError, ValueError, KeyError, EOFError):
                # Atomic writes make this unlikely (a disk error, a copy gone wrong): drop the shard,
                # its images are simply extracted again.
                shard.unlink(missing_ok=True)
        if len(shards) > self.MAX_SHARDS and vectors:
            self.save(list(vectors), np.stack(list(vectors.values())))
            for shard in shards:
                shard.unlink(missing_ok=True)
        return vectors

    def save(self, hashes: list[str], vectors: np.ndarray) -> None:
        if not hashes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{time.time_ns()}-{os.getpid()}.npz"
        with atomic_path(self.folder / name) as temporary:
            with open(temporary, "wb") as out:
                np.savez(out, hashes=np.array(hashes), vectors=vectors.astype(np.float32))


def image_to_tensor(image: Image.Image, preprocess: Preprocess) -> torch.Tensor:
    height, width = preprocess.size
    resized = image.resize((width, height), PIL_INTERPOLATION[preprocess.interpolation])
    tensor = TF.pil_to_tensor(resized).float().div_(255.0)
    return TF.normalize(tensor, list(preprocess.mean), list(preprocess.std))


class _ImageFiles(torch.utils.data.Dataset):
    """Reads, decodes and preprocesses; a bad image yields its error instead of a tensor."""

    def __init__(self, paths: list[str], rows: list[int], preprocess: Preprocess):
        self.paths, self.rows, self.preprocess = paths, rows, preprocess

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int):
        row = self.rows[item]
        try:
            image = decode_image(read_image_bytes(self.paths[row]), self.paths[row])
            return row, image_to_tensor(image, self.preprocess), None
        except ImageReadError as error:
            return row, None, str(error)


def _collate(samples):
    good = [(row, tensor) for row, tensor, _ in samples if tensor is not None]
    bad = [(row, error) for row, _, error in samples if error is not None]
    tensors = torch.stack([t for _, t in good]) if good else None
    return [row for row, _ in good], tensors, bad


def content_hashes(paths: list[str]) -> tuple[list[str | None], dict[int, str]]:
    hashes: list[str | None] = []
    failures: dict[int, str] = {}
    for row, path in enumerate(paths):
        try:
            hashes.append(hashlib.sha256(read_image_bytes(path)).hexdigest())
        except ImageReadError as error:
            hashes.append(None)
            failures[row] = str(error)
    return hashes, failures


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def extract_embeddings(
    paths: list[str],
    backbone: Backbone,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    flush_every: int = 512,
    progress: bool = True,
    description: str = "descriptors",
) -> Extraction:
    """Embed every image (pooled backbone features, not normalised); use and fill the cache."""
    hashes, failures = content_hashes(paths)
    cache = EmbeddingCache(cache_dir, backbone.cache_key) if cache_dir else None
    known = cache.load() if cache else {}
    embeddings = np.zeros((len(paths), backbone.dim), dtype=np.float32)
    todo = []
    for row, digest in enumerate(hashes):
        if digest is None:
            continue
        if digest in known:
            embeddings[row] = known[digest]
        else:
            todo.append(row)
    if not todo:
        return Extraction(embeddings, failures, 0)

    device = next(backbone.model.parameters()).device
    if num_workers is None:
        # Decoding overlaps the forward pass in worker processes; on a small CPU-only machine one
        # worker is enough (the model's own threads use the cores).
        num_workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 1
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, todo, backbone.preprocess), batch_size=batch_size,
        num_workers=num_workers, collate_fn=_collate, pin_memory=device.type == "cuda")
    pending_hashes: list[str] = []
    pending_vectors: list[np.ndarray] = []
    bar = tqdm(total=len(todo), desc=description, unit="img", disable=not progress)
    with torch.inference_mode():
        for rows, batch, bad in loader:
            failures.update(bad)
            if batch is not None:
                features = backbone.model(batch.to(device, non_blocking=True)).float().cpu().numpy()
                embeddings[rows] = features
                pending_hashes += [hashes[r] for r in rows]
                pending_vectors.append(features)
            if cache and len(pending_hashes) >= flush_every:
                cache.save(pending_hashes, np.concatenate(pending_vectors))
                pending_hashes, pending_vectors = [], []
            bar.update(len(rows) + len(bad))
    bar.close()
    if cache and pending_hashes:
        cache.save(pending_hashes, np.concatenate(pending_vectors))
    return Extraction(embeddings, failures, len(todo))
