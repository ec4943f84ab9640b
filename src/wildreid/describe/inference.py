"""How the backbone runs: precision, memory layout, torch.compile, batch size, and the agreement
check that guards every approximation against the exact fp32 model.

Everything here is opt-in: ``TorchRunner(model, device, "fp32", compile=False)`` is the plain
eager fp32 forward pass the reference notebook uses.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BATCH_SIZE = 32  # a CPU gains nothing from larger batches
MAX_AUTO_BATCH_SIZE = 128  # beyond this a GPU gets no faster, and the pipeline fills slowly
AGREEMENT_SAMPLE = 16  # images of the first batch run again in fp32 to check agreement

# What runs a batch: the model, or torch.compile's wrapper of it (a Module at run time, typed by
# torch as a function with the model's signature).
Forward = Callable[..., torch.Tensor]

# Compiled models and measured batch sizes, so that a second extraction with the same model (a
# warm-up, then the real run) neither compiles nor measures again. A compiled wrapper refers to its
# model, so a compiled model stays in memory for the life of the process (one per backbone
# compiled: a command-line run or a benchmark compiles one).
_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, Forward]" = weakref.WeakKeyDictionary()
_BATCH_SIZES: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto': bf16 on a GPU that has it, else fp16 on a GPU; fp32 on a CPU (exact, and a CPU's
    bf16 speed depends on its instruction set)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


class TorchRunner:
    """The backbone's forward pass with the chosen speed options; returns float32 features.

    Reduced precision runs under autocast (weights stay fp32, matmuls and convolutions run in
    bf16/fp16). Speed options also switch the model to channels_last (what tensor-core
    convolutions want); ``close()`` puts the layout back, so a later exact run is still exact.
    """

    engine = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32", compile: bool = False):
        self.model, self.device, self.precision = model, device, precision
        self.compiled = compile
        # With compile, every batch is padded to this size (set by the caller to its batch size;
        # else the first batch's): one graph, no recompilation for a short last batch.
        self.fixed_batch: int | None = None
        self.channels_last = precision != "fp32" or compile
        self._forward: Forward = _compiled(model) if compile else model
        self._cudnn_benchmark = torch.backends.cudnn.benchmark
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
            # Fixed input shapes: let cuDNN pick its fastest convolution once.
            torch.backends.cudnn.benchmark = True

    @property
    def approximate(self) -> bool:
        """Whether the features can differ from the eager fp32 model's beyond float noise."""
        return self.precision != "fp32"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        count = len(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.compiled:
            if self.fixed_batch is None:
                self.fixed_batch = count
            if count < self.fixed_batch:  # a larger one is compiled for once, as it comes
                padding = images.new_zeros((self.fixed_batch - count, *images.shape[1:]))
                images = torch.cat([images, padding])
        with torch.inference_mode(), self._autocast():
            try:
                features = self._forward(images)
            except Exception as error:  # noqa: BLE001 - compilation depends on the machine's toolchain
                if not self.compiled:
                    raise
                # A compiler that fails (no Triton, no C++ compiler, an unsupported op) costs speed,
                # not the run: go on eagerly.
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {str(error)[:300]}); running the model eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.compiled, self._forward = False, self.model
                features = self.model(images)
            return features[:count].float()

    def _autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def bytes_per_image(self, size: tuple[int, int], probe: int = 8) -> int:
        """Peak GPU memory of one image in the forward pass, measured on a small eager batch."""
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        images = torch.zeros((probe, 3, *size), device=self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            self.model(images)
        torch.cuda.synchronize(self.device)
        return max(1, (torch.cuda.max_memory_allocated(self.device) - before) // probe)

    def close(self) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.contiguous_format)
            torch.backends.cudnn.benchmark = self._cudnn_benchmark


def _compiled(model: torch.nn.Module) -> Forward:
    if model not in _COMPILED:
        # dynamic=False: batches are padded to one shape, so the static graph is the fast one.
        _COMPILED[model] = torch.compile(model, dynamic=False)
    return _COMPILED[model]


def agreement(
    model: torch.nn.Module, images: torch.Tensor, features: torch.Tensor, sample: int = AGREEMENT_SAMPLE
) -> float:
    """Lowest cosine similarity between ``features`` and the eager fp32 model's features for the
    first ``sample`` images (NaN if either has non-finite values)."""
    count = min(sample, len(images))
    with torch.inference_mode():
        exact = model(images[:count].float()).float()
    approximate = features[:count].float()
    if not (torch.isfinite(exact).all() and torch.isfinite(approximate).all()):
        return float("nan")
    return float(F.cosine_similarity(approximate, exact, dim=1, eps=1e-12).min())


def choose_batch_size(
    free_bytes: int, bytes_per_image: int, *, fraction: float = 0.5, maximum: int = MAX_AUTO_BATCH_SIZE
) -> int:
    """Largest batch using at most ``fraction`` of the free memory, a multiple of 8 when >= 8
    (tensor cores work in multiples of 8), between 1 and ``maximum``."""
    fits = int(free_bytes * fraction) // max(1, int(bytes_per_image))
    size = max(1, min(maximum, fits))
    return size - size % 8 if size >= 8 else size


def auto_batch_size(runner, size: tuple[int, int], device: torch.device, *, extra_bytes_per_image: int = 0) -> int:
    """Batch size from the GPU's free memory (measured once per model and setting); a CPU gets
    CPU_BATCH_SIZE."""
    if device.type != "cuda" or not isinstance(runner, TorchRunner):
        return CPU_BATCH_SIZE
    key = (runner.precision, runner.channels_last, tuple(size), extra_bytes_per_image, str(device))
    known = _BATCH_SIZES.setdefault(runner.model, {})
    if key not in known:
        per_image = runner.bytes_per_image(size) + extra_bytes_per_image
        free, _ = torch.cuda.mem_get_info(device)
        # Memory PyTorch holds in its cache but does not use is free for our purpose.
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        known[key] = choose_batch_size(free, per_image)
    return known[key]
