"""The registry of local feature methods: names, errors, and a method added by a test."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wildreid.local.base import LEARNED, LOCAL_METHODS, get_method, method_names
from wildreid.local.orb import OrbMethod
from wildreid.local.verify import count_inliers
from wildreid.util.registry import UnknownName


def test_every_method_file_registers_its_methods():
    assert method_names() == ["sift", "rootsift", "orb", "aliked-lightglue", "disk-lightglue"]
    assert LEARNED.names() == ["aliked-lightglue", "disk-lightglue"] and "orb" not in LEARNED
    assert [get_method(name).name for name in ("sift", "RootSIFT", "orb")] == ["sift", "rootsift", "orb"]


def test_an_unknown_method_names_the_known_ones():
    with pytest.raises(UnknownName, match="unknown local feature method 'surf'; choose one of sift, rootsift, orb,"):
        get_method("surf")
    with pytest.raises(KeyError):  # what callers caught before the registry
        get_method("surf")


def test_listing_the_methods_does_not_load_torch():
    """A command's help lists them; it must not pay for torch (learned.py imports it where used)."""
    code = "import sys\nfrom wildreid.local.base import method_names\nmethod_names()\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.fixture
def few_corners():
    """A test's own method: ORB with at most 300 corners, registered under its own name."""

    class FewCorners(OrbMethod):
        name = "few-corners"

        def __init__(self, **options):
            super().__init__(**{"max_keypoints": 300, **options})

    LOCAL_METHODS.register("few-corners", FewCorners)
    yield "few-corners"
    LOCAL_METHODS.unregister("few-corners")


def test_a_new_method_is_used_by_name(few_corners):
    assert method_names()[-1] == "few-corners"
    method = get_method("few-corners", max_side=256)
    texture = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    picture = Image.fromarray(np.kron(texture, np.ones((4, 4), np.uint8))).convert("RGB")  # 256 x 256 blocks
    shifted = Image.fromarray(np.roll(np.asarray(picture), (12, 20), axis=(0, 1)))
    a, b = method.extract(picture), method.extract(shifted)
    assert 0 < len(a) <= 300 and a.descriptors.shape[1] == method.descriptor_dim
    pairs = method.match(a, b)
    inliers, _ = count_inliers(a.keypoints[pairs[:, 0]], b.keypoints[pairs[:, 1]])
    assert inliers > 20
