"""Backbone loading: offline Lite0, local folders, the Hugging Face cache offline, and advice when
weights are missing. Hub loading is exercised with randomly initialised models saved in the
exact on-disk layouts, since nothing can be downloaded here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import torch

from wildreid.backbones import lite0_imagenet_classifier, load_backbone, resolve_name
from wildreid.data import read_image
from wildreid.extract import image_to_tensor

MEGADESCRIPTOR_CONFIG = {
    "architecture": "swin_large_patch4_window12_384",
    "num_classes": 0,
    "num_features": 1536,
    "pretrained_cfg": {
        "tag": "",
        "custom_load": False,
        "input_size": [3, 384, 384],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "num_classes": 0,
        "pool_size": None,
        "first_conv": "patch_embed.proj",
        "classifier": "head.fc",
    },
}


def test_short_names():
    assert resolve_name("megadescriptor-l-384") == "hf-hub:BVRA/MegaDescriptor-L-384"
    assert resolve_name("MegaDescriptor-T-224") == "hf-hub:BVRA/MegaDescriptor-T-224"
    assert resolve_name("resnet50") == "resnet50"


def test_offline_lite0_has_real_imagenet_weights(shared_data):
    """The package's tensors, mapped by position, must give a working ImageNet classifier."""
    model = lite0_imagenet_classifier()
    table = pd.read_csv(shared_data / "LionData" / "metadata.csv")
    body_shots = table[table["viewpoint"] == "body"].head(4)
    backbone = load_backbone("efficientnet-lite0")
    batch = torch.stack(
        [image_to_tensor(read_image(shared_data / "LionData" / p), backbone.preprocess) for p in body_shots["path"]]
    )
    with torch.no_grad():
        predicted = model(batch).argmax(dim=1).tolist()
    assert predicted.count(291) >= 3, predicted  # ImageNet class 291 is "lion"
    assert backbone.dim == 1280
    assert backbone.preprocess.size == (224, 224) and backbone.preprocess.mean == (0.5, 0.5, 0.5)


def _save_timm_folder(folder, model, config):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")


def test_local_dir_layout(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    config = {
        "architecture": "resnet18",
        "num_classes": 0,
        "pretrained_cfg": {
            "input_size": [3, 96, 96],
            "mean": [0.4, 0.4, 0.4],
            "std": [0.2, 0.2, 0.2],
            "interpolation": "bilinear",
        },
    }
    _save_timm_folder(tmp_path / "mine", model, config)
    for name in (f"local-dir:{tmp_path / 'mine'}", str(tmp_path / "mine")):
        backbone = load_backbone(name)
        assert backbone.preprocess.size == (96, 96) and backbone.preprocess.interpolation == "bilinear"
        probe = torch.randn(2, 3, 96, 96)
        with torch.no_grad():
            assert torch.allclose(backbone.model(probe), model(probe), atol=1e-5)


def _run_python(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def test_megadescriptor_from_hf_cache_offline(tmp_path):
    """A random Swin-L in the exact HF cache layout loads by its short name with HF_HUB_OFFLINE=1."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("swin_large_patch4_window12_384", pretrained=False, num_classes=0).eval()
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--BVRA--MegaDescriptor-L-384"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (snapshot / "config.json").write_text(json.dumps(MEGADESCRIPTOR_CONFIG))
    torch.save(model.state_dict(), snapshot / "pytorch_model.bin")
    probe = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    torch.save(probe, tmp_path / "probe.pt")
    with torch.no_grad():
        expected = model(probe).numpy()
    del model

    code = (
        "import numpy, torch; from wildreid.backbones import load_backbone\n"
        "b = load_backbone('megadescriptor-l-384')\n"
        f"x = torch.load(r'{tmp_path / 'probe.pt'}')\n"
        "with torch.no_grad(): y = b.model(x).numpy()\n"
        f"numpy.save(r'{tmp_path / 'out.npy'}', y)\n"
        "print(b.dim, b.preprocess.size, b.preprocess.mean, b.weights_id)\n"
    )
    result = _run_python(code, {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "1536 (384, 384) (0.5, 0.5, 0.5)" in result.stdout
    assert revision in result.stdout
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-4, atol=1e-4)


def test_missing_weights_offline_gives_advice_not_traceback(tmp_path, shared_data):
    table = pd.read_csv(shared_data / "NyalaData" / "metadata.csv", dtype=str).head(6)
    table["path"] = [str(shared_data / "NyalaData" / p) for p in table["path"]]
    table.to_csv(tmp_path / "small.csv", index=False)
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty-hf"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wildreid",
            "identify",
            str(tmp_path / "small.csv"),
            "--out",
            str(tmp_path / "out"),
            "--preset",
            "seed",
            "--no-cache",
            "--allow-outside-paths",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "hf download BVRA/MegaDescriptor-L-384" in message
    assert "models--BVRA--MegaDescriptor-L-384" in message and "local-dir" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "submission.csv").exists()
