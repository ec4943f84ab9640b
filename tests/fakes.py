"""Weights files in the exact on-disk layouts wildreid reads, filled with random numbers.

Nothing can be downloaded here, so the tests publish randomly initialised models the way the
real files sit on a user's machine: a Hugging Face cache (``hub/models--ORG--NAME`` with
``blobs/<sha256>``, ``snapshots/<revision>/<file>`` symlinks into blobs and ``refs/main``, as
huggingface_hub writes it) and kornia's torch-hub checkpoint folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import kornia.feature as KF
import torch

REVISION = "0123456789abcdef0123456789abcdef01234567"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def publish(hf_home: Path, repo_id: str, files: dict[str, bytes | Path], revision: str = REVISION) -> Path:
    """Put ``files`` (contents, or a file to move) into the HF cache under HF_HOME; the snapshot."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / revision
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        digest = hashlib.sha256()
        if isinstance(content, Path):
            with content.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
            blob = blobs / digest.hexdigest()
            shutil.move(content, blob)
        else:
            digest.update(content)
            blob = blobs / digest.hexdigest()
            blob.write_bytes(content)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def random_state_dict(architecture: str, seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    """Random tensors of every shape timm's ``architecture`` (headless) has, without paying for
    its weight initialisation: shapes come from a model built on the meta device. Scaled like a
    real initialisation (weights ~ 1/sqrt(fan-in), norm scales ~ 1, variances positive), so that
    activations stay in range: vanishing ones turn denormal and make CPU convolutions crawl."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, num_classes=0, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        shape = value.shape
        if not value.is_floating_point():
            state[key] = torch.randint(0, 5, shape, generator=generator, dtype=value.dtype)
        elif key.endswith("running_var") or (len(shape) == 1 and key.endswith("weight")):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) >= 2:
            state[key] = torch.randn(shape, generator=generator) / max(shape[1:].numel(), 1) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    return state


def save_pickle(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def timm_config(architecture: str, num_features: int, size: int, **pretrained_cfg) -> bytes:
    """A timm config.json as the BVRA repositories hold it: num_classes 0 and a pretrained_cfg."""
    cfg = {
        "custom_load": False,
        "input_size": [3, size, size],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": 0.9,
        "crop_mode": "center",
        **IMAGENET,
        "num_classes": 0,
        **pretrained_cfg,
    }
    config = {"architecture": architecture, "num_classes": 0, "num_features": num_features, "pretrained_cfg": cfg}
    return json.dumps(config, indent=2).encode()


# config.json of BVRA/MegaDescriptor-B-224 as on the Hub (blame of revision 94bad65, 610 bytes).
B224_CONFIG = {
    "architecture": "swin_base_patch4_window7_224",
    "num_classes": 0,
    "num_features": 1024,
    "global_pool": "avg",
    "pretrained_cfg": {
        "custom_load": False,
        "input_size": [3, 224, 224],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": 0.9,
        "crop_mode": "center",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "num_classes": 0,
        "pool_size": [7, 7],
        "first_conv": "patch_embed.proj",
        "license": "mit",
        "classifier": "head.fc",
    },
}


def b224_like(architecture: str, num_features: int) -> bytes:
    """T-224, S-224 and L-224's config.json were not readable (609-611 bytes on the Hub, like
    B-224's 610): B-224's with the architecture their model cards name."""
    return json.dumps({**B224_CONFIG, "architecture": architecture, "num_features": num_features}).encode()


# --- kornia's learned local features ---------------------------------------------------------

LEARNED_FILES = {
    "disk-lightglue": ("depth-save.pth", "disk_lightglue_v0-1_arxiv-pth"),
    "aliked-lightglue": ("aliked-n16.pth", "aliked_lightglue_v0-1_arxiv-pth"),
}


def release_layout(state_dict: dict) -> dict:
    """A kornia LightGlue state dict as the v0.1 release files store it: per-layer
    "self_attn.i" / "cross_attn.i" instead of "transformers.i.*", without derived buffers."""
    out = {}
    for key, value in state_dict.items():
        if key == "confidence_thresholds":
            continue
        for kind in ("self_attn", "cross_attn"):
            if key.startswith("transformers.") and f".{kind}." in key:
                index = key.split(".")[1]
                key = key.replace(f"transformers.{index}.{kind}", f"{kind}.{index}")
        out[key] = value
    return out


def write_learned_weights(folder: Path, name: str, seed: int = 0, which: str = "both") -> None:
    """Random ALIKED/DISK + LightGlue weights under kornia's own cache names in ``folder``."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    extractor_name, matcher_name = LEARNED_FILES[name]
    if which in ("both", "extractor"):
        if name == "disk-lightglue":
            torch.save({"extractor": KF.DISK().state_dict()}, folder / extractor_name)
        else:
            torch.save(KF.ALIKED("aliked-n16").state_dict(), folder / extractor_name)
    if which in ("both", "matcher"):
        matcher = KF.LightGlue(None, input_dim=128)  # the disk/aliked configuration, random weights
        torch.save(release_layout(matcher.state_dict()), folder / matcher_name)
