"""MiewID (conservationxlabs/miewid-msv3) built from its description, without running its code.

The Hub repository is a transformers ``trust_remote_code`` model: config.json (``model_type``
"miewid", ``model_name`` "efficientnetv2_rw_m", ``n_classes``, ``loss_module``, ``use_fc``),
configuration_miewid.py, modeling_miewid.py, heads.py and model.safetensors. wildreid never
imports those files; it rebuilds the network the way WildMe's training code
(github.com/WildMeOrg/wbia-plugin-miew-id, wbia_miew_id/models/model.py, ``MiewIdNet``) does:

* ``backbone``: timm's ``efficientnetv2_rw_m`` with classifier and global pooling removed;
  ``forward_features`` gives 2152 channels;
* ``pooling``: GeM, ``avg_pool2d(x.clamp(min=1e-6) ** p) ** (1 / p)`` with a learned ``p``;
* ``bn``: BatchNorm1d(2152), whose output is the embedding (``use_fc`` false);
* ``final``: the training head (``nn.Linear(2152, n_classes)`` for loss_module "softmax"),
  unused for embeddings and dropped here.

The model card gives 51.11 M parameters: efficientnetv2_rw_m without its classifier (51.08 M)
plus the BatchNorm (4,304), ``p`` and a Linear(2152, 10) head (21,530), so the file holds that
head. One public loader that checks the file's SHA-256 reads the GeM exponent as
``backbone.global_pool.p`` rather than ``pooling.p``; both names are accepted.
Preprocessing (model card): resize to 440x440, ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wildreid.describe.backbones import MODEL_FOLDERS, BackboneUnavailable, ModelFolder, read_config, read_weights

INPUT_SIZE = 440
_HEAD = "final."  # training head: dropped
_GEM_ALIASES = {"backbone.global_pool.p": "pooling.p"}


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), (x.size(-2), x.size(-1))).pow(1.0 / self.p)


class MiewIdNet(nn.Module):
    """Backbone features -> GeM -> BatchNorm: the MiewID embedding (use_fc false)."""

    def __init__(self, model_name: str = "efficientnetv2_rw_m"):
        import timm

        super().__init__()
        # pretrained=False: the weights come from the repository's model.safetensors, never timm's.
        self.backbone = timm.create_model(model_name, pretrained=False, num_classes=0, global_pool="")
        self.num_features = int(self.backbone.num_features)
        self.pooling = GeM()
        self.bn = nn.BatchNorm1d(self.num_features)
        # What preprocess_from_model reads when the registry does not say (a local-dir copy).
        self.pretrained_cfg = {
            "input_size": (3, INPUT_SIZE, INPUT_SIZE),
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "interpolation": "bilinear",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.forward_features(x)
        return self.bn(self.pooling(x).flatten(1))


def is_miewid_config(config: dict) -> bool:
    return config.get("model_type") == "miewid" or "MiewIdNet" in (config.get("architectures") or [])


def load_miewid(folder: Path, config: dict | None = None) -> MiewIdNet:
    """The MiewID network of a repository folder, its model.safetensors loaded with every tensor
    checked (name and shape); the training head is dropped."""
    config = config if config is not None else read_config(folder)
    if config.get("use_fc"):
        raise BackboneUnavailable(
            f"{folder / 'config.json'}: use_fc is true; wildreid builds MiewID's embedding without the fc layer "
            "(as miewid-msv3 is published) and cannot load this variant."
        )
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise BackboneUnavailable(f"{folder}: no model.safetensors next to config.json (MiewID's weights file).")
    model = MiewIdNet(config.get("model_name", "efficientnetv2_rw_m"))
    state = {_GEM_ALIASES.get(key, key): value for key, value in read_weights(weights).items()}
    state = {key: value for key, value in state.items() if not key.startswith(_HEAD)}
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    wrong = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(ours[key].shape)})"
        for key in ours
        if key in state and state[key].shape != ours[key].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown tensors (first: {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"wrong shapes: {', '.join(wrong[:3])}")
        raise BackboneUnavailable(
            f"{weights} does not fit MiewID ({config.get('model_name', 'efficientnetv2_rw_m')}, "
            f"{model.num_features}-d): {'; '.join(parts)}. It is not the miewid-msv3 weights file."
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


MODEL_FOLDERS.register("miewid", ModelFolder(is_miewid_config, load_miewid))
