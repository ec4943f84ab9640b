"""ALIKED/DISK + LightGlue: weights only from disk under kornia's own cache names, features in the
working-image frame, LightGlue matches, clear errors for missing or broken weights.

Nothing can be downloaded here, so the tests save randomly initialised weights in the layout of
the released files (DISK's "extractor" entry, LightGlue's v0.1 "self_attn.i" keys) under the
exact names in a temporary TORCH_HOME. With random weights the tests check shapes, frames,
bounds and loading, never matching quality.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import kornia.feature as KF
import numpy as np
import pytest
import torch
from fakes import LEARNED_FILES, write_learned_weights

from wildreid.data.images import read_image
from wildreid.describe.backbones import BackboneUnavailable
from wildreid.local.base import LocalFeatures, get_method, working_image
from wildreid.local.cache import local_features
from wildreid.local.learned import LearnedMethod, _image_size, weights_files

FILE_NAMES = LEARNED_FILES
FETCH = {
    "disk-lightglue": "KF.DISK.from_pretrained('depth'); KF.LightGlue('disk')",
    "aliked-lightglue": "KF.ALIKED.from_pretrained('aliked-n16'); KF.LightGlue('aliked')",
}
SMALL = {"max_keypoints": 256, "max_side": 256, "min_side": 128, "device": "cpu"}
METHODS = list(FILE_NAMES)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the network fails at once, so a download could not pass unnoticed."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("KORNIA_DOWNLOAD_TIMEOUT", "1")


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def photo_path(shared_data) -> Path:
    return shared_data / "NyalaData" / "images" / "000000.jpg"


def checkpoints(home: Path) -> Path:
    return home / "hub" / "checkpoints"


def test_torch_hub_dir_follows_torch_home_at_call_time(torch_home):
    assert Path(torch.hub.get_dir()) == torch_home / "hub"
    for name in METHODS:
        assert [p.name for p in weights_files(name)] == list(FILE_NAMES[name])
        assert all(p.parent == checkpoints(torch_home) for p in weights_files(name))


@pytest.mark.parametrize("name", METHODS)
def test_loads_the_files_kornia_itself_would_load(torch_home, name):
    """Same names, same key mapping: kornia's own loaders, reading our files from its cache,
    build exactly the models the method built."""
    write_learned_weights(checkpoints(torch_home), name)
    method = get_method(name, **SMALL)
    assert isinstance(method, LearnedMethod) and method.name == name
    assert not method._extractor.training and not method._matcher.training
    if name == "disk-lightglue":
        kornia_extractor, kornia_matcher = KF.DISK.from_pretrained("depth"), KF.LightGlue("disk")
    else:
        kornia_extractor, kornia_matcher = KF.ALIKED.from_pretrained("aliked-n16"), KF.LightGlue("aliked")
    for ours, theirs in ((method._extractor, kornia_extractor), (method._matcher, kornia_matcher)):
        ours, theirs = ours.state_dict(), theirs.state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("name", METHODS)
def test_extract_and_match_a_real_photo(torch_home, tmp_path, photo_path, name):
    write_learned_weights(checkpoints(torch_home), name)
    # filter_threshold 0 keeps every mutual best match, so random weights still give some to check.
    method = get_method(name, filter_threshold=0.0, **SMALL)
    grey, scale = working_image(read_image(photo_path), SMALL["max_side"], SMALL["min_side"])
    height, width = grey.shape

    # Through the feature cache, as the pipeline runs it: the first call extracts, the second
    # reads the .npz back - keypoints, descriptors, scale and the working image size.
    cache = tmp_path / "cache"
    features = local_features([str(photo_path)], method, cache_dir=cache, progress=False)[0]
    cached = local_features([str(photo_path)], method, cache_dir=cache, progress=False)[0]
    assert len(list(cache.rglob("*.npz"))) == 1 and method.config_key() in str(next(cache.rglob("*.npz")))

    assert features.scale == pytest.approx(scale)
    assert features.image_size == (width, height)
    assert 0 < len(features) <= SMALL["max_keypoints"]
    assert features.keypoints.dtype == np.float32 and features.keypoints.shape == (len(features), 2)
    assert features.keypoints.min() >= 0
    assert (features.keypoints[:, 0] <= width - 1).all() and (features.keypoints[:, 1] <= height - 1).all()
    assert features.descriptors.dtype == np.float32
    assert features.descriptors.shape == (len(features), method.descriptor_dim) == (len(features), 128)
    # both detectors L2-normalise their descriptors (then rounded to float16, as the cache keeps them)
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(cached.descriptors, features.descriptors)  # fresh == read back

    assert cached.image_size == features.image_size
    np.testing.assert_array_equal(cached.keypoints, features.keypoints)
    # features without a stored size (caches written before it was kept) get an estimate that
    # holds every keypoint and is at most the detectors' border off
    sizeless = LocalFeatures(cached.keypoints, cached.descriptors, cached.scale, None)
    estimate = _image_size(sizeless)
    assert (features.keypoints.max(axis=0) < estimate).all()
    assert estimate[0] <= width + 2 and estimate[1] <= height + 2

    # the image with itself: one side with its exact size, the other with the estimate
    pairs = method.match(features, sizeless)
    assert pairs.dtype == np.int64 and pairs.ndim == 2 and pairs.shape[1] == 2 and len(pairs) > 0
    assert pairs.min() >= 0 and pairs.max() < len(features)
    # LightGlue's matches are mutual: no keypoint is used twice on either side
    assert len(set(pairs[:, 0])) == len(pairs) == len(set(pairs[:, 1]))

    # an empty side gives no pairs rather than an error
    empty = LocalFeatures.empty(method.descriptor_dim)
    assert method.match(empty, features).shape == (0, 2)


@pytest.mark.parametrize("name", METHODS)
def test_missing_weights_say_where_and_how(torch_home, name):
    extractor_name, matcher_name = FILE_NAMES[name]
    with pytest.raises(BackboneUnavailable) as error:
        get_method(name, **SMALL)
    message = str(error.value)
    assert str(checkpoints(torch_home) / extractor_name) in message
    assert str(checkpoints(torch_home) / matcher_name) in message
    assert "download" in message and FETCH[name] in message and "\n" not in message

    # only the matcher missing: the message names it, not the extractor's path
    write_learned_weights(checkpoints(torch_home), name, which="extractor")
    with pytest.raises(BackboneUnavailable) as error:
        get_method(name, **SMALL)
    assert str(checkpoints(torch_home) / matcher_name) in str(error.value)
    assert f"not at {checkpoints(torch_home) / extractor_name}" not in str(error.value)


def test_explicit_weights_dir(torch_home, tmp_path):
    folder = tmp_path / "weights"
    with pytest.raises(BackboneUnavailable) as error:
        get_method("disk-lightglue", weights_dir=folder, **SMALL)
    assert str(folder / "depth-save.pth") in str(error.value)
    write_learned_weights(folder, "disk-lightglue")
    assert get_method("disk-lightglue", weights_dir=folder, **SMALL).weights_dir == folder
    assert not checkpoints(torch_home).exists()  # TORCH_HOME was never needed


def test_broken_weights_files_are_refused(torch_home):
    folder = checkpoints(torch_home)
    write_learned_weights(folder, "disk-lightglue")
    (folder / "disk_lightglue_v0-1_arxiv-pth").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(BackboneUnavailable, match="cannot be read as a PyTorch checkpoint"):
        get_method("disk-lightglue", **SMALL)

    # a checkpoint of the wrong kind (DISK weights without the "extractor" wrapper)
    write_learned_weights(folder, "disk-lightglue")
    torch.save(KF.DISK().state_dict(), folder / "depth-save.pth")
    with pytest.raises(BackboneUnavailable, match="no 'extractor' entry"):
        get_method("disk-lightglue", **SMALL)

    # a partial file would leave learned weights random
    partial = {k: v for k, v in KF.ALIKED("aliked-n16").state_dict().items() if not k.startswith("desc_head")}
    write_learned_weights(folder, "aliked-lightglue")
    torch.save(partial, folder / "aliked-n16.pth")
    with pytest.raises(BackboneUnavailable, match="lacks .* weight tensors"):
        get_method("aliked-lightglue", **SMALL)


def test_config_key_follows_settings_and_extractor_weights(torch_home):
    folder = checkpoints(torch_home)
    write_learned_weights(folder, "disk-lightglue")
    key = get_method("disk-lightglue", **SMALL).config_key()
    assert key.startswith("disk-lightglue-k256-s256-128-w")
    assert get_method("disk-lightglue", **SMALL).config_key() == key  # stable while nothing changes
    assert get_method("disk-lightglue", **{**SMALL, "max_keypoints": 128}).config_key() != key

    # new extractor weights (same size, so only the modification time tells them apart)
    extractor = folder / "depth-save.pth"
    size = extractor.stat().st_size
    write_learned_weights(folder, "disk-lightglue", seed=1, which="extractor")
    stat = extractor.stat()
    os.utime(extractor, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert extractor.stat().st_size == size
    changed = get_method("disk-lightglue", **SMALL).config_key()
    assert changed != key

    # LightGlue's weights do not change the extracted features, so cached features stay valid
    matcher = folder / "disk_lightglue_v0-1_arxiv-pth"
    write_learned_weights(folder, "disk-lightglue", seed=2, which="matcher")
    os.utime(matcher, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
    assert get_method("disk-lightglue", **SMALL).config_key() == changed
