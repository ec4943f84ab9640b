"""Local matching, LNBNN, calibration, fusion and the fusion preset end to end on real photos."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wildreid.data.dataset import NEW_INDIVIDUAL, load_csv
from wildreid.data.images import read_image
from wildreid.decide.thresholds import Neighbours, choose_threshold
from wildreid.evaluate.outputs import evaluate_if_possible, write_run
from wildreid.gallery.calibration import CALIBRATORS, FUSION_RULES, Calibration, Calibrator
from wildreid.gallery.pipeline import identify
from wildreid.local.base import get_method
from wildreid.local.cache import local_features
from wildreid.local.lnbnn import KeypointIndex
from wildreid.local.pairs import FusionSettings
from wildreid.local.verify import count_inliers
from wildreid.presets import get_preset
from wildreid.util.registry import UnknownName


@pytest.fixture(scope="module")
def nyala_photos(shared_data):
    return [read_image(shared_data / "NyalaData" / "images" / f"{i:06d}.jpg") for i in range(3)]


def test_rootsift_finds_a_warped_copy_and_not_another_animal(nyala_photos):
    method = get_method("rootsift", max_keypoints=512, max_side=480)
    photo, other = nyala_photos[0], nyala_photos[2]
    warped = photo.rotate(12, resample=Image.BICUBIC, expand=True).resize(
        (int(photo.width * 0.8), int(photo.height * 0.8))
    )
    a, b, c = method.extract(photo), method.extract(warped), method.extract(other)
    assert len(a) > 100 and a.descriptors.shape[1] == 128
    assert np.allclose(np.linalg.norm(a.descriptors, axis=1), 1, atol=1e-3)  # RootSIFT is unit length
    same = method.match(a, b)
    inliers_same, _ = count_inliers(a.keypoints[same[:, 0]], b.keypoints[same[:, 1]])
    different = method.match(a, c)
    inliers_different = (
        count_inliers(a.keypoints[different[:, 0]], c.keypoints[different[:, 1]])[0] if len(different) else 0
    )
    assert inliers_same > 50 and inliers_same > 5 * max(inliers_different, 1)


def test_tiny_crops_are_upscaled():
    method = get_method("sift", min_side=320)
    tiny = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    features = method.extract(tiny)
    assert features.scale == pytest.approx(320 / 60)
    assert features.image_size == (480, 320)


def test_local_features_cached(tmp_path, shared_data):
    paths = [str(shared_data / "NyalaData" / "images" / f"{i:06d}.jpg") for i in range(2)]
    paths.append(str(tmp_path / "missing.jpg"))
    method = get_method("rootsift", max_keypoints=128, max_side=320)
    first = local_features(paths, method, cache_dir=tmp_path, progress=False)
    assert first[2] is None and len(first[0]) > 0
    files = list((tmp_path / "local").rglob("*.npz"))
    assert len(files) == 2
    again = local_features(paths, method, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(again[0].keypoints, first[0].keypoints)
    np.testing.assert_allclose(again[0].descriptors, first[0].descriptors, atol=1e-3)  # stored as float16
    assert again[0].image_size == first[0].image_size


def test_lnbnn_prefers_shared_distinctive_keypoints():
    rng = np.random.default_rng(0)
    from wildreid.local.base import LocalFeatures

    def features(descriptors):
        return LocalFeatures(np.zeros((len(descriptors), 2), np.float32), descriptors.astype(np.float32), 1.0)

    marks = rng.normal(size=(40, 16))  # distinctive marks of one animal
    background = rng.normal(size=(10, 16))  # texture found in every photo
    database = [features(np.vstack([marks + rng.normal(scale=0.05, size=marks.shape), background]))]
    database += [features(np.vstack([rng.normal(size=(40, 16)), background])) for _ in range(5)]
    query = features(np.vstack([marks + rng.normal(scale=0.05, size=marks.shape), background]))
    scores = KeypointIndex(database).lnbnn([query], k=3)[0]
    assert np.argmax(scores) == 0 and scores[0] > 5 * scores[1:].max()
    excluded = KeypointIndex(database).lnbnn([query], k=3, excluded=[{0}])[0]
    assert excluded[0] == 0


def test_shortlist_unions_both_rankings_and_respects_exclusions():
    """Per query: the top-B by cosine (from the index) united with the top-B by LNBNN votes;
    an excluded image (itself, its clip) is in neither list."""
    from wildreid.gallery.index import VectorIndex
    from wildreid.gallery.shortlist import shortlist_pairs
    from wildreid.local.base import LocalFeatures

    rng = np.random.default_rng(0)
    database_vectors = rng.normal(size=(6, 8))
    marks = [rng.normal(size=(20, 16)) for _ in range(6)]
    database = [LocalFeatures(np.zeros((20, 2), np.float32), m.astype(np.float32), 1.0) for m in marks]
    index = VectorIndex.build(database_vectors)
    # Query 0 looks like image 1 globally but carries image 4's keypoints.
    query_vectors = database_vectors[[1]] + 0.01 * rng.normal(size=(1, 8))
    query = [LocalFeatures(np.zeros((20, 2), np.float32), (marks[4] + 0.01).astype(np.float32), 1.0)]
    settings = FusionSettings(shortlist=1, scores=("cosine", "lnbnn"))
    pairs = shortlist_pairs(index, query_vectors, query, KeypointIndex(database), database, None, settings)
    assert list(zip(pairs.queries.tolist(), pairs.images.tolist())) == [(0, 1), (0, 4)]
    assert pairs.raw["lnbnn"][1] > pairs.raw["lnbnn"][0] and pairs.raw["cosine"][0] > 0.99
    excluded = shortlist_pairs(
        index, query_vectors, query, KeypointIndex(database), database, None, settings, excluded=[{1, 4}]
    )
    assert not ({1, 4} & set(excluded.images.tolist())) and len(excluded.images) == 2


def test_calibration_monotone_probabilities_and_round_trip():
    rng = np.random.default_rng(1)
    same = rng.random(500) < 0.3
    inliers = np.where(same, rng.poisson(30, 500), rng.poisson(5, 500)).astype(float)
    cosine = np.where(same, rng.normal(0.8, 0.05, 500), rng.normal(0.6, 0.05, 500))
    calibration = Calibration.fit({"inliers": inliers, "cosine": cosine}, same.astype(float))
    grid = np.linspace(0, 60, 50)
    probability = calibration.probability("inliers", grid)
    assert np.all(np.diff(probability) >= 0) and probability[0] < 0.1 and probability[-1] > 0.9
    fused = calibration.fuse({"inliers": np.array([40.0]), "cosine": np.array([0.85])})
    assert 0.9 < fused[0] <= 1.0
    again = Calibration.from_json(calibration.to_json())
    assert np.allclose(again.probability("cosine", cosine), calibration.probability("cosine", cosine))


def test_calibration_keeps_the_raw_order_inside_flat_steps():
    """Isotonic steps must not tie a query's candidates: the better raw score still ranks first,
    and no probability moves by more than the tie-break weight."""
    rng = np.random.default_rng(2)
    cosine = rng.normal(size=2000)
    same = (cosine + rng.normal(size=2000) > 1.5).astype(float)
    calibration = Calibration.fit({"cosine": cosine}, same)
    xs, ys = calibration.knots["cosine"]
    assert len(np.unique(ys)) < len(ys)  # the fit does have flat steps
    grid = np.linspace(-4, 4, 1001)  # also beyond both ends, where the map is clipped
    probability = calibration.probability("cosine", grid)
    assert np.all(np.diff(probability) > 0)
    assert np.abs(probability - np.interp(grid, xs, ys)).max() <= 1e-6
    # Two candidates on one step: the fused order follows the raw scores.
    flat = np.flatnonzero(np.diff(ys) == 0)[0]
    low, high = xs[flat] + 0.25 * (xs[flat + 1] - xs[flat]), xs[flat] + 0.75 * (xs[flat + 1] - xs[flat])
    fused = calibration.fuse({"cosine": np.array([low, high])})
    assert fused[1] > fused[0]


def test_calibrators_and_fusion_rules_are_registered_by_name():
    assert CALIBRATORS.names() == ["isotonic"] and FUSION_RULES.names() == ["mean", "logistic", "boosted"]
    scores, same = {"cosine": np.array([0.1, 0.2, 0.8, 0.9])}, np.array([0.0, 0.0, 1.0, 1.0])
    with pytest.raises(UnknownName, match="unknown calibrator 'platt'; choose one of isotonic"):
        Calibration.fit(scores, same, calibrator="platt")
    with pytest.raises(UnknownName, match="unknown fusion rule .median.; choose one of mean, logistic"):
        Calibration.fit(scores, same, fusion="median")


def test_a_calibration_saved_before_calibrators_were_choices_loads_and_saves_the_same():
    saved = '{"pairs": 4, "positives": 2, "knots": {"cosine": [[0.1, 0.9], [0.0, 1.0]]}}'
    calibration = Calibration.from_json(saved)
    assert (calibration.calibrator, calibration.fusion) == ("isotonic", "mean")
    assert calibration.to_json() == saved
    assert calibration.knots == {"cosine": ([0.1, 0.9], [0.0, 1.0])}


class MinMax(Calibrator):
    """A test's own calibrator: the raw score's place between the lowest and highest seen."""

    def __init__(self, low: float = 0.0, high: float = 1.0):
        self.low, self.high = low, high

    def fit(self, scores, same):
        self.low, self.high = float(np.min(scores)), float(np.max(scores))
        return self

    def predict(self, scores):
        return np.clip((np.asarray(scores, dtype=float) - self.low) / (self.high - self.low), 0.0, 1.0)

    def to_json(self):
        return {"low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, data):
        return cls(data["low"], data["high"])


@pytest.fixture
def minmax_and_max():
    CALIBRATORS.register("minmax", MinMax)
    FUSION_RULES.register("max", lambda probabilities: np.max(list(probabilities.values()), axis=0))
    yield
    CALIBRATORS.unregister("minmax")
    FUSION_RULES.unregister("max")


def test_a_new_calibrator_and_fusion_rule_are_used_by_name(minmax_and_max):
    assert CALIBRATORS.names() == ["isotonic", "minmax"]
    assert FUSION_RULES.names() == ["mean", "logistic", "boosted", "max"]
    scores = {"cosine": np.array([0.0, 0.5, 1.0]), "inliers": np.array([0.0, 10.0, 40.0])}
    same = np.array([0.0, 1.0, 1.0])
    calibration = Calibration.fit(scores, same, calibrator="minmax", fusion="max")
    fused = calibration.fuse({"cosine": np.array([0.25, 0.5]), "inliers": np.array([30.0, 4.0])})
    assert fused.tolist() == [0.75, 0.5]  # the larger of (0.25, 0.75) and of (0.5, 0.1)
    saved = json.loads(calibration.to_json())
    assert saved["calibrator"] == "minmax" and saved["fusion"] == "max"
    assert saved["knots"]["inliers"] == {"low": 0.0, "high": 40.0}
    again = Calibration.from_json(calibration.to_json())
    assert again.fuse({"cosine": np.array([0.25]), "inliers": np.array([30.0])}).tolist() == [0.75]


def test_threshold_simulation_on_sparse_scores():
    """Only anchor rows carry scores: the simulation asks only those."""
    identities = np.repeat([f"i{k}" for k in range(10)], 4)
    scores = np.where(identities[:, None] == identities[None, :], 0.9, 0.2)
    anchors = np.zeros(len(identities), dtype=bool)
    anchors[::2] = True
    scores[~anchors] = -np.inf
    choice = choose_threshold(Neighbours.from_dense(scores, anchors), identities)
    assert 0.2 < choice.threshold <= 0.9 and choice.simulated_score > 0.95


def test_threshold_simulation_ignores_rounds_without_new_queries():
    """With few scored rows (photos a trained model held out) some rounds ask no new individual;
    they must not drag the simulated figures to NaN or zero."""
    identities = np.repeat([f"i{k}" for k in range(20)], 3)
    scores = np.where(identities[:, None] == identities[None, :], 0.9, 0.2)
    scored = np.zeros(len(identities), dtype=bool)
    scored[[0, 1, 3, 4]] = True  # two identities only: most rounds hold out neither as new
    choice = choose_threshold(Neighbours.from_dense(scores, scored), identities)
    assert np.isfinite(choice.simulated_baus) and np.isfinite(choice.simulated_baks)
    assert 0.2 < choice.threshold <= 0.9 and choice.simulated_score > 0.95


def test_fusion_preset_end_to_end(shared_data, tmp_path, lite0_backbone):
    table = pd.read_csv(shared_data / "LionData" / "metadata.csv", dtype=str)
    database_ids = table[table["split"] == "database"]["identity"].drop_duplicates().head(12)
    table = table[table["identity"].isin(database_ids)]
    table["path"] = [str(shared_data / "LionData" / p) for p in table["path"]]
    (tmp_path / "Lions").mkdir()
    table.to_csv(tmp_path / "Lions" / "metadata.csv", index=False)
    dataset = load_csv(tmp_path / "Lions" / "metadata.csv", allow_outside_paths=True)
    preset = get_preset("fusion").replace(local_options={"max_keypoints": 256}, fusion=FusionSettings(shortlist=5))
    result = identify(dataset, preset, cache_dir=tmp_path / "cache", backbone=lite0_backbone, progress=False)
    calibration = result.calibrations["Lions"]
    assert calibration.pairs > 0 and calibration.positives > 0
    assert set(calibration.knots) == {"cosine", "lnbnn", "inliers"}
    scores = result.candidates["score_1"].dropna()
    assert ((scores >= 0) & (scores <= 1)).all()  # fused scores are probabilities
    threshold = result.thresholds["Lions"]
    answered = result.candidates["prediction"] != NEW_INDIVIDUAL
    assert (result.candidates.loc[answered, "top1_score"] >= threshold).all()

    written = write_run(result, tmp_path / "out", evaluation=evaluate_if_possible(result), match_examples=2)
    saved = json.loads(written["calibration_Lions"].read_text())
    assert saved["pairs"] == calibration.pairs
    match_pictures = list((tmp_path / "out" / "plots").glob("matches_Lions_*.png"))
    assert len(match_pictures) == 2
    assert "matches_Lions_" in written["report"].read_text()
