"""Batched global-descriptor extraction with an on-disk cache.

The cache is keyed by the backbone's cache key (weights + preprocessing) and each image's
content hash (SHA-256 of the file bytes), so renamed or copied photos are not extracted twice
and a changed photo is. It is a folder of shard files, each written atomically (temporary file,
then rename) every few hundred images or FLUSH_SECONDS, whichever comes first: a run killed at
any moment leaves only complete shards and loses at most a few seconds of work, and the next run
extracts just what is missing.

By default an image goes the way of the reference notebook: PIL decoding, PIL resize, fp32
model. Speed options (all keyword arguments of :func:`extract_embeddings`, ``FAST`` turns them
all on) trade exactness for throughput. Reduced precision and ONNX Runtime are checked on the
first batch against the exact fp32 model (cosine >= ``min_agreement``, else the run falls back to
exact fp32); the decoding options change pixels only slightly and are checked by the tests and
benchmarks against PIL decoding, not at run time:

- ``precision``: "fp32" (default), "bf16", "fp16" (autocast), or "auto" (bf16/fp16 on a GPU,
  fp32 on a CPU);
- ``decode``: "exact" (default: PIL, as the reference), "fast" (PIL decodes JPEGs at a reduced
  DCT scale that still covers twice the input size, torch's uint8 kernel resizes: 3-6 times
  faster per large photo, pixels change slightly; both in cpu_decode.py), "device" (torchvision
  decodes JPEGs in batches where the model is: nvJPEG on a GPU, libjpeg-turbo on a CPU; see
  device_decode.py), or "auto" ("device": measured fastest on both, see docs/extraction.md);
- ``compile``: torch.compile the model (False by default; "auto": on a GPU only, where the
  minute of compilation pays off);
- ``engine``: "torch" (default), "onnxruntime" (CPU only, see onnx_engine.py), or "auto"
  (ONNX Runtime on a CPU when installed);
- ``batch_size``: a number, or "auto" (as large as the GPU's free memory allows, capped).

Vectors computed with any speed option are cached in their own folder (the backbone's key plus
"-fast"): a fast run uses exact vectors already cached, an exact run never uses approximate ones.

``regions`` (regions.py): per image, the part of the photo to describe (None: the whole photo).
A region's vector is cached under ``regions.region_key`` (the content hash joined with the
region), never under the photo's own hash. Region pictures are always decoded by PIL in full
(never at a reduced JPEG scale, never by the device decoder): a crop of a reduced decode could be
smaller than the model's input.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from wildreid.data.images import ImageReadError, content_hash, decode_image, read_image_bytes
from wildreid.data.regions import Region, region_keys, region_picture
from wildreid.describe.backbones import Backbone, Preprocess
from wildreid.describe.cpu_decode import cpu_batches, image_to_tensor
from wildreid.describe.device_decode import DECODED_BYTES_PER_IMAGE, TENSOR_INTERPOLATIONS, Batch, device_batches
from wildreid.describe.inference import TorchRunner, agreement, auto_batch_size, resolve_precision
from wildreid.util.files import atomic_path

if TYPE_CHECKING:  # imported when used: ONNX Runtime is optional
    from wildreid.describe.onnx_engine import OnnxRunner

try:
    from tqdm.auto import tqdm
except ImportError:  # a bare benchmark machine may lack tqdm: no progress bar then
    tqdm = None

DECODES = ("exact", "fast", "device", "auto")
ENGINES = ("torch", "onnxruntime", "auto")
# Every speed option on, each resolved for the device at run time.
FAST = dict(precision="auto", decode="auto", compile="auto", engine="auto", batch_size="auto")
MIN_AGREEMENT = 0.999
APPROXIMATE_SUFFIX = "-fast"  # cache folder of vectors computed with speed options
# The cache is written at least this often during a run, so that a kill (which runs no clean-up)
# loses at most this much work; a shard every 10 s is nothing beside the extraction itself, and
# EmbeddingCache.load merges shards when they pile up.
FLUSH_SECONDS = 10.0


@dataclass
class Extraction:
    """Embeddings in input order; rows of failed images are zero and listed in ``failures``."""

    embeddings: np.ndarray  # (N, D) float32
    failures: dict[int, str] = field(default_factory=dict)  # row -> reason
    extracted: int = 0  # rows computed by this run (not from the cache)
    # What actually ran: precision, decode, engine, compile, batch_size, agreement (lowest
    # cosine with the exact fp32 model on the first batch, None when running exact), ...
    settings: dict = field(default_factory=dict)
    hashes: list = field(default_factory=list)  # SHA-256 of each file (None if unreadable)
    keys: list = field(default_factory=list)  # cache key of each row: its hash, or its region's key

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

    def hashes(self) -> set[str]:
        """The content hashes cached, without reading any vector (what is missing is the rest)."""
        cached: set[str] = set()
        for shard in self.folder.glob("shard-*.npz"):
            try:
                with np.load(shard, allow_pickle=False) as content:
                    cached.update(content["hashes"].tolist())
            except (OSError, ValueError, KeyError, EOFError):
                pass  # load() drops it; its images count as missing
        return cached

    def save(self, hashes: list[str], vectors: np.ndarray) -> None:
        if not hashes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{time.time_ns()}-{os.getpid()}.npz"
        with atomic_path(self.folder / name) as temporary:
            with open(temporary, "wb") as out:
                np.savez(out, hashes=np.array(hashes), vectors=vectors.astype(np.float32))


# --------------------------------------------------------------------------------------------
# Extraction


def content_hashes(paths: list[str], threads: int | None = None) -> tuple[list[str | None], dict[int, str]]:
    """SHA-256 of each file (None and a failure for unreadable or empty ones).

    Threads, because hashing and reading release the GIL: on a GPU machine a serial pass over
    1 MB photos would cost as much as the extraction itself.
    """

    def one(path):
        try:
            return content_hash(read_image_bytes(path)), None
        except ImageReadError as error:
            return None, str(error)

    threads = threads or min(16, os.cpu_count() or 1)
    if threads > 1 and len(paths) > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="wildreid-hash") as pool:
            results = list(pool.map(one, paths, chunksize=16))
    else:
        results = [one(path) for path in paths]
    failures = {row: error for row, (_, error) in enumerate(results) if error is not None}
    return [digest for digest, _ in results], failures


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def extract_embeddings(
    paths: list[str],
    backbone: Backbone,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int | str = 32,
    num_workers: int | None = None,
    flush_every: int = 512,
    progress: bool = True,
    description: str = "descriptors",
    precision: str = "fp32",
    decode: str = "exact",
    compile: bool | str = False,
    engine: str = "torch",
    min_agreement: float = MIN_AGREEMENT,
    regions: list[Region | None] | None = None,
) -> Extraction:
    """Embed every image (pooled backbone features, not normalised); use and fill the cache.

    The defaults reproduce the reference exactly; see the module docstring for the speed options
    and ``regions``.
    """
    paths = [str(path) for path in paths]
    if regions is not None and len(regions) != len(paths):
        raise ValueError(f"{len(regions)} regions for {len(paths)} images")
    device = next(backbone.model.parameters()).device
    settings = _resolve_settings(backbone, device, precision=precision, decode=decode, compile=compile, engine=engine)
    hashes, failures = content_hashes(paths)
    keys = region_keys(hashes, regions)
    cache = EmbeddingCache(cache_dir, cache_key(backbone, settings)) if cache_dir else None
    known = cache.load() if cache else {}
    if cache and cache.folder.name != backbone.cache_key:
        # An approximate run may use exact vectors too (never the other way round).
        known = {**EmbeddingCache(cache_dir, backbone.cache_key).load(), **known}
    embeddings, todo, copies = _from_cache(keys, known, backbone.dim)
    if not todo:
        return Extraction(embeddings, failures, 0, settings, hashes, keys)

    # Runners to try, in order, until one agrees with the exact model on the first batch.
    plan = _runner_plan(settings, precision, device)
    runner = _make_runner(backbone, device, plan.pop(0), cache_dir)
    run = _Run(backbone, runner, plan, embeddings, keys, copies, cache, flush_every)
    batches: Iterator[Batch] | None = None
    bar = tqdm(total=len(todo), desc=description, unit="img", disable=not progress) if tqdm else None
    try:
        if batch_size == "auto" or batch_size is None:
            extra = DECODED_BYTES_PER_IMAGE if settings["decode"] == "device" else 0
            batch_size = auto_batch_size(run.runner, backbone.preprocess.size, device, extra_bytes_per_image=extra)
        settings["batch_size"] = batch_size = int(batch_size)
        run.runner.fixed_batch = batch_size
        batches = _batches(
            paths, todo, backbone.preprocess, device, settings["decode"], batch_size, num_workers, regions
        )
        _embed_batches(run, batches, bar, failures, settings, min_agreement=min_agreement, cache_dir=cache_dir)
        settings["compile"] = run.runner.compiled  # False if compilation failed and the run went on eagerly
    finally:
        if batches is not None:
            batches.close()
        run.runner.close()
        if bar:
            bar.close()
        # Whatever was computed is kept, even when the run stops on an error.
        if run.cache and run.pending_hashes:
            run.cache.save(run.pending_hashes, np.concatenate(run.pending_vectors))
    # Byte-identical copies were never decoded themselves: they share their first file's failure.
    for row, duplicates in copies.items():
        if row in failures:
            failures.update({copy: f"{paths[copy]}: same bytes as {failures[row]}" for copy in duplicates})
    return Extraction(embeddings, failures, run.extracted, settings, hashes, keys)


def _from_cache(
    keys: list[str | None], known: dict[str, np.ndarray], dim: int
) -> tuple[np.ndarray, list[int], dict[int, list[int]]]:
    """The embeddings with every cached row filled in; the rows to compute (the first of each
    content); for each of those, the later rows with the same bytes (or region)."""
    embeddings = np.zeros((len(keys), dim), dtype=np.float32)
    todo: list[int] = []
    copies: dict[int, list[int]] = {}  # row computed -> later rows with the same bytes
    first_of: dict[str, int] = {}
    for row, digest in enumerate(keys):
        if digest is None:
            continue
        if digest in known:
            embeddings[row] = known[digest]
        elif digest in first_of:
            copies.setdefault(first_of[digest], []).append(row)
        else:
            first_of[digest] = row
            todo.append(row)
    return embeddings, todo, copies


@dataclass
class _Run:
    """One extraction's moving parts: the runner in use (the first batch may make it fall back to
    another, see _settle), the cache being filled, and the vectors not yet written to it."""

    backbone: Backbone
    runner: TorchRunner | OnnxRunner
    plan: list[dict]  # the runners still to fall back to
    embeddings: np.ndarray  # the result, filled in place
    keys: list[str | None]  # cache key of each row
    copies: dict[int, list[int]]  # row computed -> later rows with the same bytes
    cache: EmbeddingCache | None
    flush_every: int  # rows written to the cache at once, at least every FLUSH_SECONDS
    extracted: int = 0
    pending_hashes: list[str] = field(default_factory=list)
    pending_vectors: list[np.ndarray] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)


def _embed_batches(
    run: _Run,
    batches: Iterator[Batch],
    bar,
    failures: dict,
    settings: dict,
    *,
    min_agreement,
    cache_dir,
) -> None:
    """Run the model on every batch; the first one checks an approximate runner (see _settle)."""
    checked = False
    in_flight = None  # (batch, its features on their way to host memory, event)
    for batch in batches:
        failures.update(batch.failures)
        settings["device_decoded"] += batch.device_decoded
        settings["cpu_decoded"] += batch.cpu_decoded
        if batch.images is not None:
            features = run.runner(batch.images)
            if not checked:
                run.runner, features = _settle(
                    run.runner,
                    run.plan,
                    features,
                    batch.images,
                    run.backbone,
                    settings,
                    min_agreement=min_agreement,
                    cache_dir=cache_dir,
                )
                checked = True
                if run.cache:  # a run that fell back to the exact path stores exact vectors as such
                    run.cache = EmbeddingCache(cache_dir, cache_key(run.backbone, settings))
            # Queue this batch's copy to host memory, then store the previous batch: the GPU
            # goes on with the next batch while Python writes results.
            if in_flight:
                _store(run, *in_flight)
            in_flight = (batch, *_to_host(features))
        if bar:
            bar.update(len(batch.rows) + len(batch.failures))
    if in_flight:
        _store(run, *in_flight)


def _store(run: _Run, batch: Batch, host: torch.Tensor, ready: torch.cuda.Event | None) -> None:
    """Put a batch's vectors in place (and in the rows of its byte-identical copies), and into the
    cache every ``run.flush_every`` rows or FLUSH_SECONDS."""
    if ready is not None:
        ready.synchronize()
    vectors = host.numpy()
    broken = ~np.isfinite(vectors).all(axis=1)
    if broken.any():
        # Reduced precision overflowed on these images (fp16 can): exact fp32 for them.
        redo = torch.from_numpy(np.flatnonzero(broken)).to(batch.images.device)
        with torch.inference_mode():
            vectors[broken] = run.backbone.model(batch.images[redo]).float().cpu().numpy()
    run.embeddings[batch.rows] = vectors
    for row in batch.rows:
        run.embeddings[run.copies.get(row, [])] = run.embeddings[row]
        run.extracted += 1 + len(run.copies.get(row, []))
    run.pending_hashes += [run.keys[row] for row in batch.rows]
    run.pending_vectors.append(vectors)
    if run.cache and (len(run.pending_hashes) >= run.flush_every or time.monotonic() - run.last_flush >= FLUSH_SECONDS):
        run.cache.save(run.pending_hashes, np.concatenate(run.pending_vectors))
        run.pending_hashes, run.pending_vectors, run.last_flush = [], [], time.monotonic()


def cache_key(backbone: Backbone, settings: dict) -> str:
    """The cache folder for a run: the backbone's key for exact runs, a separate one for runs
    with any speed option, so that an exact run never reads approximate vectors."""
    exact = (
        settings["precision"] == "fp32"
        and settings["decode"] == "exact"
        and settings["engine"] == "torch"
        and not settings["compile"]
    )
    return backbone.cache_key if exact else f"{backbone.cache_key}{APPROXIMATE_SUFFIX}"


def _resolve_settings(backbone: Backbone, device: torch.device, *, precision, decode, compile, engine) -> dict:
    """Validate the options and resolve each 'auto' for this device."""
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {', '.join(DECODES)}, not {decode!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto', not {compile!r}")
    precision = resolve_precision(precision, device)
    cuda = device.type == "cuda"
    if decode == "auto":
        decode = "device"
    if decode == "device" and backbone.preprocess.interpolation not in TENSOR_INTERPOLATIONS:
        warnings.warn(
            f"{backbone.preprocess.interpolation} resizing has no tensor kernel matching "
            "PIL's; decoding with PIL instead",
            RuntimeWarning,
            stacklevel=3,
        )
        decode = "exact"
    if compile == "auto":
        compile = cuda
    if engine == "auto":
        from wildreid.describe import onnx_engine

        engine = (
            "onnxruntime" if not cuda and precision == "fp32" and not compile and onnx_engine.available() else "torch"
        )
    if engine == "onnxruntime" and (cuda or precision != "fp32" or compile):
        raise ValueError(
            "engine='onnxruntime' runs fp32 on a CPU: use it with a CPU model, precision='fp32' and compile=False"
        )
    return dict(
        precision=precision,
        decode=decode,
        compile=bool(compile),
        engine=engine,
        device=str(device),
        batch_size=None,
        agreement=None,
        fell_back=False,
        device_decoded=0,
        cpu_decoded=0,
    )


def _runner_plan(settings: dict, requested_precision: str, device: torch.device) -> list[dict]:
    """The runner asked for, then what to fall back to if it disagrees with the exact model: with
    precision 'auto' on a GPU, bf16 (never overflows) then fp16 (3 more mantissa bits), then exact
    fp32, which always ends the list."""
    first = dict(engine=settings["engine"], precision=settings["precision"], compile=settings["compile"])
    plan = [first]
    if requested_precision == "auto" and device.type == "cuda" and first["precision"] == "bf16":
        plan.append(dict(first, precision="fp16"))
    exact = dict(engine="torch", precision="fp32", compile=False)
    if first != exact:
        plan.append(exact)
    return plan


def _settle(
    runner,
    plan: list[dict],
    features: torch.Tensor,
    images: torch.Tensor,
    backbone: Backbone,
    settings: dict,
    *,
    min_agreement: float,
    cache_dir,
):
    """Check an approximate runner on the first batch against the exact fp32 model, and go down
    the plan until one agrees (exact fp32, last, always does). Returns the runner to keep and the
    batch's features from it."""
    while runner.approximate:
        score = agreement(backbone.model, images, features)
        settings["agreement"] = score
        if score >= min_agreement or not plan:  # NaN compares False: falls back
            break
        choice = plan.pop(0)
        warnings.warn(
            f"{runner.engine} {runner.precision} features agree with the exact fp32 model only "
            f"to cosine {score:.5f} (< {min_agreement}); using {choice['engine']} "
            f"{choice['precision']} instead.",
            RuntimeWarning,
            stacklevel=3,
        )
        batch_size = runner.fixed_batch
        runner.close()
        runner = _make_runner(backbone, images.device, choice, cache_dir)
        runner.fixed_batch = batch_size
        settings.update(choice, fell_back=True)
        features = runner(images)
    return runner, features


def _make_runner(backbone: Backbone, device: torch.device, choice: dict, cache_dir):
    if choice["engine"] == "onnxruntime":
        from wildreid.describe.onnx_engine import OnnxRunner

        folder = Path(cache_dir) / "onnx" if cache_dir else None
        return OnnxRunner(backbone.model, backbone.preprocess.size, cache_key=backbone.cache_key, folder=folder)
    return TorchRunner(backbone.model, device, choice["precision"], choice["compile"])


def _batches(paths, rows, preprocess, device, decode, batch_size, num_workers, regions=None) -> Iterator[Batch]:
    cpus = os.cpu_count() or 1
    if decode == "device":
        # Threads only read files and parse headers (and decode the odd PNG): a few suffice.
        threads = num_workers if num_workers else min(8, cpus)
        # Regions are cut on the CPU (PIL), each with its own region.
        region_paths = {
            row: functools.partial(_region_tensor, region=regions[row], preprocess=preprocess)
            for row in rows
            if regions is not None and regions[row] is not None
        }
        return device_batches(
            paths,
            rows,
            preprocess,
            device,
            batch_size,
            threads=threads,
            cpu_path=lambda data, name: image_to_tensor(decode_image(data, name), preprocess),
            cpu_only=region_paths,
        )
    if num_workers is None:
        # With a GPU, PIL decoding is the bottleneck: a worker per core. On a CPU-only machine the
        # model's own threads use the cores, and one worker keeps decoding ahead of it.
        num_workers = min(16, cpus) if device.type == "cuda" else 1
    return cpu_batches(paths, rows, preprocess, device, batch_size, num_workers, decode == "fast", regions)


def _region_tensor(data: bytes, name: str, *, region: Region, preprocess: Preprocess) -> torch.Tensor:
    return image_to_tensor(region_picture(data, name, region), preprocess)


def _to_host(features: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    if features.device.type != "cuda":
        return features, None
    host = features.to("cpu", non_blocking=True)  # into pinned memory; valid once the event fires
    ready = torch.cuda.Event()
    ready.record()
    return host, ready
