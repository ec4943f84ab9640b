"""The learned matchers reachable from the command line, the confident-match score, and the
``wildfusion`` preset end to end.

Nothing can be downloaded here: the global descriptor is published with random weights in the
Hugging Face cache layout (a MegaDescriptor-T-224 stand-in for L-384, whose Swin-L at 384x384
is too slow for a CPU test; the loading code path is the same) and ALIKED/DISK + LightGlue with
random weights under kornia's cache names. With random weights these tests check wiring,
calibration and outputs, never accuracy.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fakes import LEARNED_FILES, b224_like, publish, random_state_dict, save_pickle, write_learned_weights
from typer.testing import CliRunner

from wildreid.cli.main import app
from wildreid.data.dataset import NEW_INDIVIDUAL, load_dataset
from wildreid.data.demo import make_demo_dataset
from wildreid.describe.backbones import BackboneUnavailable
from wildreid.evaluate.outputs import evaluate_if_possible, write_run
from wildreid.gallery.pipeline import identify
from wildreid.local.base import LocalFeatures, LocalMethod
from wildreid.local.pairs import FusionSettings, pair_counts
from wildreid.presets import get_preset, missing_weights

runner = CliRunner()
STAND_IN = "megadescriptor-t-224"


@pytest.fixture
def homes(tmp_path, monkeypatch, no_network) -> dict[str, Path]:
    """Empty HF and torch caches, offline, and no network at all."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("KORNIA_DOWNLOAD_TIMEOUT", "1")
    return {"hf": tmp_path / "hf", "checkpoints": tmp_path / "torch" / "hub" / "checkpoints"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """3 known individuals (3 database photos, 1 query each) and 1 new one: 13 photos."""
    root = tmp_path_factory.mktemp("demo")
    return make_demo_dataset(
        root, n_known=3, n_new=1, database_per_individual=3, queries_per_known=1, queries_per_new=1, image_size=128
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """2 known individuals (2 database photos, 1 query each) and 1 new one: 7 photos, so that
    every pair can be matched at the presets' own keypoint budgets."""
    root = tmp_path_factory.mktemp("tiny")
    return make_demo_dataset(
        root, n_known=2, n_new=1, database_per_individual=2, queries_per_known=1, queries_per_new=1, image_size=128
    )


# Few keypoints on small working images: these tests check wiring, not matching quality.
SMALL_KEYPOINTS = {"max_keypoints": 128, "max_side": 256, "min_side": 128}


def publish_stand_in(hf_home: Path, tmp_path: Path) -> None:
    state = random_state_dict("swin_tiny_patch4_window7_224")
    files = {
        "config.json": b224_like("swin_tiny_patch4_window7_224", 768),
        "pytorch_model.bin": save_pickle(state, tmp_path / "stand-in.bin"),
    }
    publish(hf_home, "BVRA/MegaDescriptor-T-224", files)


def test_wildfusion_is_the_competition_baseline_recipe():
    preset = get_preset("wildfusion")
    assert preset.backbone == "megadescriptor-l-384" and preset.preprocess is None  # the registry's
    assert preset.local == "aliked-lightglue"
    assert preset.local_options == {"max_keypoints": 256, "max_side": 512, "detection_threshold": 0.0}
    assert preset.fusion.scores == ("cosine", "matches") and not preset.fusion.use_lnbnn
    assert preset.fusion.match_confidence == 0.5
    assert get_preset("offline").local is None  # the default preset is left alone


class _Scripted(LocalMethod):
    """Matches every keypoint i of one side with keypoint i of the other, with given confidences."""

    def __init__(self, confidence):
        self.confidence = confidence

    def match(self, a, b):
        return np.stack([np.arange(len(a)), np.arange(len(a))], axis=1)

    def match_with_confidence(self, a, b):
        return self.match(a, b), self.confidence


def test_pair_counts_confident_matches_and_inliers_from_one_matching():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 200, size=(12, 2)).astype(np.float32)
    shifted = LocalFeatures(points + 5.0, np.zeros((12, 4), np.float32), 1.0)  # one translation explains all
    scattered = LocalFeatures(rng.uniform(0, 200, size=(12, 2)).astype(np.float32), np.zeros((12, 4)), 1.0)
    left = [LocalFeatures(points, np.zeros((12, 4), np.float32), 1.0)]
    confidence = np.array([0.9] * 7 + [0.3] * 5, dtype=np.float32)
    counts = pair_counts(
        _Scripted(confidence), left, [shifted, scattered, None], np.zeros(3, int), np.arange(3), ("inliers", "matches")
    )
    np.testing.assert_array_equal(counts["matches"], [7, 7, 0])  # above 0.5, whatever the geometry
    assert counts["inliers"][0] == 12 and counts["inliers"][1] < 12 and counts["inliers"][2] == 0
    # a matcher without confidences (a ratio test): every tentative match counts
    no_confidence = pair_counts(_Scripted(None), left, [shifted], np.zeros(1, int), np.zeros(1, int), ("matches",))
    assert set(no_confidence) == {"matches"} and no_confidence["matches"][0] == 12
    with pytest.raises(ValueError, match="unknown: match"):
        FusionSettings(scores=("cosine", "match"))


def test_wildfusion_end_to_end_with_random_weights(homes, demo, tmp_path):
    publish_stand_in(homes["hf"], tmp_path)
    write_learned_weights(homes["checkpoints"], "aliked-lightglue")
    wildfusion = get_preset("wildfusion")
    preset = wildfusion.replace(
        backbone=STAND_IN,
        local_options={**wildfusion.local_options, **SMALL_KEYPOINTS},
        fusion=replace(wildfusion.fusion, shortlist=3),
    )
    assert missing_weights(preset) == []
    dataset = load_dataset(demo)
    # no backbone given: the weights check and the loader read the HF cache, offline
    result = identify(dataset, preset, cache_dir=tmp_path / "cache", progress=False)

    assert result.preset.backbone == STAND_IN
    (calibration,) = result.calibrations.values()
    assert set(calibration.knots) == {"cosine", "matches"}  # no LNBNN, no geometry: WildFusion's two scores
    assert calibration.pairs > 0 and 0 < calibration.positives < calibration.pairs
    scores = result.candidates["score_1"].dropna()
    assert len(scores) == len(dataset.queries) and ((scores >= 0) & (scores <= 1)).all()
    (threshold,) = result.thresholds.values()
    answered = result.candidates["prediction"] != NEW_INDIVIDUAL
    assert (result.candidates.loc[answered, "top1_score"] >= threshold).all()
    written = write_run(result, tmp_path / "out", evaluation=evaluate_if_possible(result), match_examples=1)
    run = json.loads(written["run"].read_text())
    assert run["preset"]["local"] == "aliked-lightglue" and run["preset"]["fusion"]["scores"] == ["cosine", "matches"]
    # the ALIKED features were cached under a key that says top-k mode (threshold 0)
    assert any("aliked-lightglue-k128-s256-128-t0-w" in str(p) for p in (tmp_path / "cache").rglob("*.npz"))


def test_wildfusion_without_weights_names_everything_to_fetch(homes, demo, tmp_path):
    result = runner.invoke(
        app, ["identify", str(demo), "--out", str(tmp_path / "out"), "--preset", "wildfusion", "--no-cache"]
    )
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "The 'wildfusion' preset needs weights that are not on this machine" in message
    assert "hf download BVRA/MegaDescriptor-L-384" in message and "models--BVRA--MegaDescriptor-L-384" in message
    unwrapped = "".join(result.output.split())  # the console wraps long paths anywhere
    for file_name in LEARNED_FILES["aliked-lightglue"]:
        assert str(homes["checkpoints"] / file_name) in unwrapped
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "submission.csv").exists()

    # with the descriptor there, only the keypoint weights are asked for
    publish_stand_in(homes["hf"], tmp_path)
    with pytest.raises(BackboneUnavailable, match="'aliked-lightglue' cannot start"):
        identify(load_dataset(demo), get_preset("wildfusion").replace(backbone=STAND_IN), progress=False)


def test_fusion_preset_with_a_learned_matcher_uses_lnbnn_on_its_descriptors(homes, demo, tmp_path, lite0_backbone):
    """LNBNN needs only descriptors: over ALIKED's 128-d ones it votes as over RootSIFT's, and the
    fusion preset keeps its three scores with a learned matcher."""
    write_learned_weights(homes["checkpoints"], "aliked-lightglue")
    preset = get_preset("fusion").replace(
        local="aliked-lightglue", local_options=SMALL_KEYPOINTS, fusion=FusionSettings(shortlist=3)
    )
    result = identify(load_dataset(demo), preset, cache_dir=tmp_path / "cache", backbone=lite0_backbone, progress=False)
    (calibration,) = result.calibrations.values()
    assert set(calibration.knots) == {"cosine", "lnbnn", "inliers"} and calibration.pairs > 0
    scores = result.candidates["score_1"].dropna()
    assert ((scores >= 0) & (scores <= 1)).all()


def test_cli_local_option_reaches_the_learned_matchers(homes, tiny, tmp_path):
    write_learned_weights(homes["checkpoints"], "aliked-lightglue")
    out = tmp_path / "out"
    # wildfusion's matcher named explicitly: its own options (256 keypoints, top-k) are kept
    lite0 = ["--preset", "wildfusion", "--backbone", "efficientnet-lite0", "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(app, ["identify", str(tiny), "--out", str(out), *lite0, "--local", "aliked-lightglue"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["preset"]["local"] == "aliked-lightglue"
    assert run["preset"]["local_options"] == get_preset("wildfusion").local_options
    (calibration_file,) = out.glob("calibration_*.json")
    assert set(json.loads(calibration_file.read_text())["knots"]) == {"cosine", "matches"}

    gallery = tmp_path / "herd.gallery"
    result = runner.invoke(app, ["gallery", "build", str(tiny), "--out", str(gallery), *lite0, "--local", "none"])
    assert result.exit_code == 0, result.output
    info = json.loads((gallery / "gallery.json").read_text())
    assert info["preset"] == "wildfusion" and info["local_features"] is None

    result = runner.invoke(app, ["identify", str(tiny), "--out", str(tmp_path / "o3"), "--local", "surf"])
    assert result.exit_code == 2 and "aliked-lightglue, disk-lightglue" in " ".join(result.output.split())
    result = runner.invoke(
        app, ["identify", str(tiny), "--out", str(tmp_path / "o4"), "--gallery", str(gallery), "--local", "sift"]
    )
    assert result.exit_code == 2 and "fixed when a gallery is built" in " ".join(result.output.split())
