"""Descriptor and keypoint extraction on a Ray cluster (``pip install 'wildreid[ray]'``).

It only fills the caches that single-machine runs read (extract.EmbeddingCache for descriptors,
local/cache.py for keypoints), so a later ``extract_embeddings`` / ``local_features`` call finds
everything cached. Ray is imported inside the functions only: the core never needs it.

How the work is split:

- The driver hashes every file (extract.content_hashes: the same content keys as single-machine
  runs), asks the caches which hashes are missing, and sends one row per missing content (byte-
  identical copies once) into a Ray Dataset.
- Descriptors: ``map_batches`` on an actor pool, one model per actor, fp32 and PIL decoding (the
  exact path, so vectors equal single-process ones). With GPUs in the cluster, one actor per GPU
  (``num_gpus=1``) and stateless CPU tasks decode and resize in front of them; without, each CPU
  actor decodes its own batches (shipping pixels between processes would only cost).
- Keypoints (RootSIFT or learned), then, the same way on CPU actors.
- Workers only compute and return (hash, result) rows. The driver, consuming the output stream,
  writes the caches: descriptor shards atomically every ``flush_every`` rows or ``flush_seconds``,
  keypoint files one by one (atomically). A task retried after a worker died therefore never
  writes twice; a killed driver loses at most its unflushed rows; a re-run resumes from the cache.
- Actors restart and their tasks are retried when a worker process dies: Ray Data gives actor
  pools ``max_restarts=-1`` and ``max_task_retries=-1`` (unlimited; passing them explicitly is
  deprecated in Ray 2.60, and tests/test_ray_extract.py kills an actor to hold Ray to it). A bad
  image is reported and skipped, as on one machine (decoding errors are caught, not crashes).

Images must be readable at the same path by the driver (it hashes them) and by every worker; the
cache only by the driver. See docs/scale.md.

``regions`` (regions.py): per path the region to describe; rows then carry the region (as JSON
text) and are filed under the region's key, exactly as on one machine. The automatic foreground's
boxes are computed before, by the caller (the CLI: on the driver).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wildreid.describe.backbones import Preprocess

if TYPE_CHECKING:
    from wildreid.describe.extract import EmbeddingCache

INSTALL_HINT = "pip install 'wildreid[ray]'"
FLUSH_EVERY = 512  # descriptor rows per shard written by the driver (as extract.py)
FLUSH_SECONDS = 5.0  # ... or after this long, so a killed driver loses only seconds of work
# Rows per input block, in batches: blocks of whole batches keep every batch but the last at
# batch_size rows, as on one machine (oneDNN picks its fp32 convolution by batch size: vectors of
# a batch of 8 and one of 16 differ by ~3e-6).
BATCHES_PER_BLOCK = 4


class RayUnavailable(RuntimeError):
    """Ray is not installed; the message says how to install it."""


@dataclass
class RaySummary:
    """What one distributed run did. ``failures``: path -> reason, as in Extraction.failures."""

    images: int = 0  # paths given
    computed: int = 0  # descriptors computed and cached by this run
    local_computed: int = 0  # keypoint files computed and cached by this run
    skipped: int = 0  # images with everything already cached (nothing to do)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the whole call, hashing and cluster start included
    cluster_start_s: float = 0.0  # ray.init (starting or joining the cluster)
    load_s: float = 0.0  # loading the model (and keypoint method) on the driver, for the cache keys
    hash_s: float = 0.0  # the driver's content hashing and cache look-up
    first_result_s: float | None = None  # from submitting the job to its first result: actor start-up, model load
    workers: int = 0  # descriptor actors

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_second(self) -> float:
        """Images computed (descriptors, else keypoints) per second of the whole call."""
        return max(self.computed, self.local_computed) / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        local = f", {self.local_computed} keypoint sets" if self.local_computed else ""
        return (
            f"{self.images} images: {self.computed} computed{local}, {self.skipped} skipped (already cached), "
            f"{self.failed} failed; {self.seconds:.1f} s, {self.images_per_second:.1f} images/s"
        )


def require_ray():
    """The ray module, or RayUnavailable saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the data extra (pyarrow, ...) is needed too
    except ImportError as error:
        raise RayUnavailable(
            f"distributed extraction needs Ray, which is not installed ({error}); install it with: {INSTALL_HINT}"
        ) from None
    return ray


def extract_with_ray(
    paths,
    backbone_name: str | None,
    *,
    preprocess: Preprocess | None = None,
    local: str | None = None,
    local_options: dict | None = None,
    cache_dir: str | Path,
    address: str | None = "auto",
    num_cpus: int | None = None,
    workers: int | None = None,
    batch_size: int = 32,
    flush_every: int = FLUSH_EVERY,
    flush_seconds: float = FLUSH_SECONDS,
    progress: bool = True,
    regions: list | None = None,
) -> RaySummary:
    """Fill the descriptor cache of ``backbone_name`` (None: keypoints only) and, with ``local``
    (e.g. "rootsift"), the keypoint cache, for every image in ``paths``, on a Ray cluster.

    ``address``: "auto" joins the cluster of this machine (``ray start``, RAY_ADDRESS) or starts a
    local one with ``num_cpus`` CPUs; an address ("HOST:6379", "ray://HOST:10001") joins that
    cluster. An already initialised Ray is used as it is. ``workers``: descriptor actors (default
    one per GPU, or one per CPU on a CPU-only cluster).
    """
    from wildreid.describe.backbones import load_backbone

    ray = require_ray()
    started = time.perf_counter()
    paths = [str(path) for path in paths]
    summary = RaySummary(images=len(paths))
    # Built here once: checks names and weights before any cluster starts, and gives the cache keys.
    backbone = load_backbone(backbone_name, preprocess=preprocess) if backbone_name else None
    method = _local_method(local, local_options)

    summary.load_s = time.perf_counter() - started
    hashing = time.perf_counter()
    work = _missing_work(paths, backbone, method, cache_dir, regions, summary)
    summary.hash_s = time.perf_counter() - hashing

    owned = False
    if work.need_global or work.need_local:
        connecting = time.perf_counter()
        owned = _connect(ray, address, num_cpus)
        _quiet(ray)
        summary.cluster_start_s = time.perf_counter() - connecting
        try:
            _run_passes(
                ray,
                backbone,
                method,
                work,
                summary,
                local_options=local_options,
                cache_dir=cache_dir,
                workers=workers,
                batch_size=batch_size,
                flush_every=flush_every,
                flush_seconds=flush_seconds,
                progress=progress,
            )
        finally:
            if owned:
                ray.shutdown()
    # Byte-identical copies were sent once: they share the first file's failure.
    first_path = work.first_path
    failed_digests = {digest: summary.failures[path] for digest, path in first_path.items() if path in summary.failures}
    for path, digest in zip(paths, work.hashes):
        if digest in failed_digests and path not in summary.failures:
            summary.failures[path] = f"{path}: same bytes as {failed_digests[digest]}"
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class _Work:
    """What a run has to compute: one row per content (byte-identical copies once), by cache key."""

    hashes: list[str | None]  # each path's cache key: its content hash, joined with its region if any
    first_path: dict[str, str]  # cache key -> the first path with it
    region_of: dict[str, str]  # cache key -> its region as JSON text ("" for the whole photo)
    cache: EmbeddingCache | None  # the descriptor cache; None: keypoints only
    need_global: list[str]  # cache keys without a descriptor
    need_local: list[str]  # cache keys without keypoints

    def rows(self, digests: list[str]) -> list[tuple[str, str, str]]:
        """(path, cache key, region) per cache key: the rows sent to the cluster."""
        return [(self.first_path[d], d, self.region_of[d]) for d in digests]


def _missing_work(paths: list[str], backbone, method, cache_dir, regions, summary: RaySummary) -> _Work:
    """Hash every file, and ask the caches what is missing (unreadable files go to the failures)."""
    from wildreid.data.regions import region_keys
    from wildreid.describe.extract import EmbeddingCache, content_hashes

    hashes, unreadable = content_hashes(paths)
    summary.failures.update({paths[row]: reason for row, reason in unreadable.items()})
    # The cache keys: the content hash, joined with the region where there is one.
    hashes = region_keys(hashes, regions)
    region_text = ["" if regions is None or r is None else r.to_json() for r in regions or [None] * len(paths)]
    first_path: dict[str, str] = {}
    region_of: dict[str, str] = {}
    for path, digest, region in zip(paths, hashes, region_text):
        if digest is not None:
            first_path.setdefault(digest, path)
            region_of.setdefault(digest, region)
    cache = EmbeddingCache(cache_dir, backbone.cache_key) if backbone else None
    need_global = sorted(set(first_path) - cache.hashes()) if cache else []
    need_local = _missing_local(first_path, method, cache_dir)
    todo = set(need_global) | set(need_local)
    summary.skipped = sum(1 for digest in hashes if digest is not None and digest not in todo)
    return _Work(hashes, first_path, region_of, cache, need_global, need_local)


def _run_passes(
    ray,
    backbone,
    method,
    work: _Work,
    summary: RaySummary,
    *,
    local_options: dict | None,
    cache_dir,
    workers: int | None,
    batch_size: int,
    flush_every: int,
    flush_seconds: float,
    progress: bool,
) -> None:
    """The descriptor pass, then the keypoint pass, under one progress bar."""
    bar = _progress_bar(len(work.need_global) + len(work.need_local), progress)
    try:
        if work.need_global:
            _run_global(
                ray,
                backbone,
                work.cache,
                work.rows(work.need_global),
                summary,
                bar,
                workers=workers,
                batch_size=batch_size,
                flush_every=flush_every,
                flush_seconds=flush_seconds,
            )
        if work.need_local:
            _run_local(
                ray,
                method,
                local_options or {},
                cache_dir,
                work.rows(work.need_local),
                summary,
                bar,
                batch_size=batch_size,
            )
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------------
# Driver


def _local_method(local: str | None, options: dict | None):
    if not local:
        return None
    from wildreid.local.base import get_method

    # On the driver for its cache key (config_key) and to check the options and weights early.
    return get_method(local, **(options or {}))


def _missing_local(first_path: dict[str, str], method, cache_dir) -> list[str]:
    if method is None:
        return []
    from wildreid.local.cache import missing_digests

    return sorted(missing_digests(first_path, method, cache_dir))


def _connect(ray, address: str | None, num_cpus: int | None) -> bool:
    """Join or start a cluster; True when this call started Ray (and so shuts it down)."""
    if ray.is_initialized():
        return False
    options = dict(logging_level="WARNING", include_dashboard=False)
    if address in (None, "", "auto"):
        try:  # a cluster already running on this machine (`ray start --head`, RAY_ADDRESS)
            ray.init(address="auto", **options)
        except ConnectionError:
            ray.init(num_cpus=num_cpus, **options)
    else:
        ray.init(address=address, **options)
    return True


def _quiet(ray) -> None:
    """Ray Data's own progress output off: our bar covers the whole job (both passes)."""
    import logging

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # ... which would otherwise warn, once per dataset, that its own bars are off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _progress_bar(total: int, progress: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="ray extraction", unit="img", disable=not progress)


def _blocks(rows: int, batch_size: int) -> int:
    return -(-rows // (batch_size * BATCHES_PER_BLOCK))


def _dataset(ray, rows: list[tuple[str, str, str]], batch_size: int):
    import pandas as pd

    table = pd.DataFrame(rows, columns=["path", "hash", "region"])
    step = batch_size * BATCHES_PER_BLOCK
    return ray.data.from_pandas([table[start : start + step] for start in range(0, len(table), step)])


def _run_global(
    ray, backbone, cache, rows, summary: RaySummary, bar, *, workers, batch_size, flush_every, flush_seconds
) -> None:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    # No more actors than blocks of work: a small job does not start models that would idle.
    summary.workers = min(workers or gpus or max(1, int(resources.get("CPU", 1))), _blocks(len(rows), batch_size))
    constructor = dict(backbone_name=backbone.name, preprocess=backbone.preprocess, cache_key=backbone.cache_key)
    pool = ray.data.ActorPoolStrategy(size=summary.workers)
    dataset = _dataset(ray, rows, batch_size)
    if gpus:
        # GPUs wait on nothing but the model: CPU tasks decode and resize in front of them.
        dataset = dataset.map_batches(
            decode_batch,
            fn_kwargs=dict(preprocess=backbone.preprocess),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=1,
        )
    dataset = dataset.map_batches(
        Embedder,
        fn_constructor_kwargs=constructor,
        batch_size=batch_size,
        batch_format="numpy",
        compute=pool,
        **({"num_gpus": 1} if gpus else {"num_cpus": 1}),
    )

    submitted = time.perf_counter()
    written: set[str] = set()
    pending_hashes: list[str] = []
    pending_vectors: list[np.ndarray] = []
    last_flush = time.monotonic()
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if summary.first_result_s is None:
                summary.first_result_s = time.perf_counter() - submitted
            for path, digest, error, vector in zip(batch["path"], batch["hash"], batch["error"], batch["vector"]):
                if error:
                    summary.failures[str(path)] = str(error)
                elif digest not in written:  # a retried task's rows may come twice: keep one
                    written.add(digest)
                    pending_hashes.append(str(digest))
                    pending_vectors.append(vector)
            if bar is not None:
                bar.update(len(batch["path"]))
            if len(pending_hashes) >= flush_every or time.monotonic() - last_flush >= flush_seconds:
                cache.save(pending_hashes, np.stack(pending_vectors))
                summary.computed += len(pending_hashes)
                pending_hashes, pending_vectors, last_flush = [], [], time.monotonic()
    finally:
        # Whatever arrived is kept, even when the job stops on an error.
        if pending_hashes:
            cache.save(pending_hashes, np.stack(pending_vectors))
            summary.computed += len(pending_hashes)


def _run_local(ray, method, options: dict, cache_dir, rows, summary: RaySummary, bar, *, batch_size) -> None:
    from wildreid.local.base import LEARNED
    from wildreid.local.cache import store_features

    if method.name in LEARNED:  # CPU actors: a learned method must not take the GPUs it would find
        options = {"device": "cpu", **options}
    cpus = min(max(1, int(ray.cluster_resources().get("CPU", 1))), _blocks(len(rows), batch_size))
    dataset = _dataset(ray, rows, batch_size).map_batches(
        LocalExtractor,
        fn_constructor_kwargs=dict(name=method.name, options=options, config_key=method.config_key()),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cpus),
        num_cpus=1,
    )
    written: set[str] = set()
    submitted = time.perf_counter()
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if summary.first_result_s is None:
            summary.first_result_s = time.perf_counter() - submitted
        for path, digest, error, encoded in zip(batch["path"], batch["hash"], batch["error"], batch["features"]):
            if error:
                summary.failures.setdefault(str(path), str(error))
            elif digest not in written:
                written.add(digest)
                store_features(cache_dir, method, str(digest), bytes(encoded))
                summary.local_computed += 1
        if bar is not None:
            bar.update(len(batch["path"]))


# --------------------------------------------------------------------------------------------
# Workers (run in Ray processes; they compute and return, never write)


def _read(path: str, region: str = ""):
    """The file's bytes, their cache key (the hash joined with ``region``, its JSON text, if any)
    taken from these very bytes - if the file changed since the driver hashed it, the result is
    filed under what was actually computed -, and the Region (None: the whole photo)."""
    from wildreid.data.images import content_hash, read_image_bytes
    from wildreid.data.regions import Region, region_key

    data = read_image_bytes(path)
    parsed = Region.from_json(region) if region else None
    return data, region_key(content_hash(data), parsed), parsed


def decode_batch(batch: dict, preprocess: Preprocess) -> dict:
    """Rows (path, hash, region) -> + error ("" if none) and pixels: uint8 (N, C, H, W) resized by PIL
    exactly as extract.image_to_tensor does (zeros for a failed row)."""
    from wildreid.data.images import ImageReadError
    from wildreid.data.regions import region_picture
    from wildreid.describe.cpu_decode import resized_pixels

    count = len(batch["path"])
    pixels = np.zeros((count, 3, *preprocess.size), dtype=np.uint8)
    hashes, errors = list(batch["hash"]), [""] * count
    for i, (path, region) in enumerate(zip(batch["path"], batch["region"])):
        try:
            data, hashes[i], parsed = _read(str(path), str(region))
            pixels[i] = resized_pixels(region_picture(data, str(path), parsed), preprocess).numpy()
        except ImageReadError as error:
            errors[i] = str(error)
    return {
        "path": batch["path"],
        "hash": np.array(hashes),
        "region": batch["region"],
        "error": np.array(errors),
        "pixels": pixels,
    }


class Embedder:
    """One model per actor: (path, hash[, pixels]) rows -> (path, hash, error, vector) rows, fp32."""

    def __init__(self, backbone_name: str, preprocess: Preprocess, cache_key: str):
        import torch

        from wildreid.describe.backbones import load_backbone

        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # Ray gives a GPU actor its GPU
        self.backbone = load_backbone(backbone_name, preprocess=preprocess, device=self.device)
        if self.backbone.cache_key != cache_key:
            # Other weights on this node would file wrong vectors under the driver's key.
            raise RuntimeError(
                f"{backbone_name} on this worker has cache key {self.backbone.cache_key}, the driver's "
                f"is {cache_key}: install the same weights and wildreid version on every node."
            )

    def __call__(self, batch: dict) -> dict:
        import torch

        from wildreid.describe.cpu_decode import pixels_to_input

        if "pixels" not in batch:  # no decoding tasks in front (CPU-only cluster): decode here
            batch = decode_batch(batch, self.backbone.preprocess)
        ok = batch["error"] == ""
        vectors = np.zeros((len(ok), self.backbone.dim), dtype=np.float32)
        if ok.any():
            images = pixels_to_input(torch.from_numpy(batch["pixels"][ok]), self.backbone.preprocess)
            with torch.inference_mode():
                vectors[ok] = self.backbone.model(images.to(self.device)).float().cpu().numpy()
        return {"path": batch["path"], "hash": batch["hash"], "error": batch["error"], "vector": vectors}


class LocalExtractor:
    """One local feature method per actor: (path, hash) rows -> (path, hash, error, features) rows,
    features as the bytes of their cache file (local.cache.encode_features)."""

    def __init__(self, name: str, options: dict, config_key: str):
        from wildreid.local.base import get_method

        self.method = get_method(name, **options)
        if self.method.config_key() != config_key:
            raise RuntimeError(
                f"{name} on this worker has configuration {self.method.config_key()}, the driver's "
                f"is {config_key}: install the same wildreid version (and weights) on every node."
            )

    def __call__(self, batch: dict) -> dict:
        from wildreid.data.images import ImageReadError
        from wildreid.local.cache import encode_features, extract_region

        count = len(batch["path"])
        hashes, errors, encoded = list(batch["hash"]), [""] * count, [b""] * count
        for i, (path, region) in enumerate(zip(batch["path"], batch["region"])):
            try:
                data, hashes[i], parsed = _read(str(path), str(region))
                encoded[i] = encode_features(extract_region(self.method, data, str(path), parsed))
            except ImageReadError as error:
                errors[i] = str(error)
        features = np.empty(count, dtype=object)
        features[:] = encoded
        return {"path": batch["path"], "hash": np.array(hashes), "error": np.array(errors), "features": features}
