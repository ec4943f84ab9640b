"""The backbone exported to ONNX and run by ONNX Runtime: a faster CPU engine.

Why: on a small CPU machine ONNX Runtime runs EfficientNet-Lite0 several times faster than eager
PyTorch (it fuses the depthwise convolutions, batch norms and activations), with fp32 results
equal to PyTorch's within float rounding (~1e-5). Measured in docs/extraction.md. It is used
only when asked for (``engine="onnxruntime"``, or ``"auto"`` on a CPU), and the extraction checks
its first batch against the PyTorch model like any other approximation.

Exporting takes seconds, so the exported file is kept beside the embedding cache (keyed by the
backbone's cache key and a hash of the actual weights) and the session for the life of the model
object.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

from wildreid.util.files import atomic_path

_SESSIONS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def available() -> bool:
    try:
        import onnx  # noqa: F401 - the exporter needs it
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the weights themselves: two randomly initialised models share a cache key but not
    a fingerprint, so an export is never reused for other weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class OnnxRunner:
    """Same interface as inference.TorchRunner: float32 features for a batch of model input."""

    engine = "onnxruntime"
    precision = "fp32"
    compiled = False
    channels_last = False
    approximate = True  # another implementation of the model: checked on the first batch
    fixed_batch = None  # any batch size works

    def __init__(
        self,
        model: torch.nn.Module,
        size: tuple[int, int],
        *,
        cache_key: str,
        folder: str | Path | None = None,
        threads: int | None = None,
    ):
        self.model = model
        key = (tuple(size), threads or torch.get_num_threads())
        sessions = _SESSIONS.setdefault(model, {})
        if key not in sessions:
            if folder is None:
                with tempfile.TemporaryDirectory(prefix="wildreid-onnx-") as scratch:
                    sessions[key] = _session(_exported(model, size, cache_key, scratch), key[1])
            else:
                sessions[key] = _session(_exported(model, size, cache_key, folder), key[1])
        self.session = sessions[key]
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().contiguous().numpy().astype(np.float32, copy=False)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])

    def close(self) -> None:
        pass


def _session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads sleep instead of spinning: the image decoding shares these cores (measured
    # 10-20% more images/s on two cores with "device" decoding).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The session reads the file now; a temporary export can be deleted afterwards.
    return onnxruntime.InferenceSession(path.read_bytes(), options, providers=["CPUExecutionProvider"])


def _exported(model: torch.nn.Module, size: tuple[int, int], cache_key: str, folder) -> Path:
    name = f"{cache_key}-{weights_fingerprint(model)}-{size[0]}x{size[1]}-torch{torch.__version__}.onnx"
    path = Path(folder) / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if path.is_file():
        return path
    with atomic_path(path) as temporary, warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs the
        # onnxscript package; for these convolutional models both give the same graph.
        warnings.simplefilter("ignore")
        example = torch.zeros((1, 3, *size), device=next(model.parameters()).device)
        torch.onnx.export(
            model,
            (example,),
            str(temporary),
            input_names=["images"],
            output_names=["features"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
        )
    os.chmod(path, 0o644)
    return path
