"""Ranking, thresholds, decision, and the whole identify job on real photos."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from wildreid.data.dataset import NEW_INDIVIDUAL, load_csv
from wildreid.decide.decision import decide
from wildreid.decide.ranking import rank_identities
from wildreid.decide.thresholds import Neighbours, choose_threshold
from wildreid.evaluate.metrics import load_submission
from wildreid.evaluate.outputs import evaluate_if_possible, write_run
from wildreid.gallery.pipeline import identify
from wildreid.gallery.result import UNREADABLE
from wildreid.presets import get_preset, parse_threshold


def test_rank_identities_matches_brute_force():
    rng = np.random.default_rng(3)
    similarity = rng.normal(size=(20, 50))
    identities = rng.choice([f"i{k}" for k in range(9)], size=50)
    ranking = rank_identities(similarity, identities, k=4)
    for query in range(20):
        best = {}
        for image, identity in enumerate(identities):
            if identity not in best or similarity[query, image] > similarity[query, best[identity]]:
                best[identity] = image
        expected = sorted(best, key=lambda i: -similarity[query, best[i]])[:4]
        assert ranking.identities[query].tolist() == expected
        assert ranking.best_images[query].tolist() == [best[i] for i in expected]
        assert np.allclose(ranking.scores[query], [similarity[query, best[i]] for i in expected])


def test_rank_identities_pads_when_few_identities():
    ranking = rank_identities(np.array([[0.2, 0.9]]), np.array(["a", "b"]), k=4)
    assert ranking.identities[0].tolist() == ["b", "a", None, None]
    assert np.isnan(ranking.scores[0, 2]) and ranking.best_images[0, 3] == -1


def test_decide_threshold_and_closed_set():
    identities = np.array(["a", "b", None], dtype=object)
    scores = np.array([0.7, 0.5, np.nan])
    assert decide(identities, scores, 0.6).tolist() == ["a", NEW_INDIVIDUAL, NEW_INDIVIDUAL]
    assert decide(identities, scores, None).tolist() == ["a", "b", NEW_INDIVIDUAL]


def test_parse_threshold():
    assert parse_threshold("0.6") == 0.6 and parse_threshold("none") is None
    assert parse_threshold("auto") == "auto"
    assert parse_threshold("Lynx=0.5,Turtle=0.7") == {"Lynx": 0.5, "Turtle": 0.7}
    with pytest.raises(ValueError, match="not a number"):
        parse_threshold("high")


def test_threshold_chosen_between_same_and_different_scores():
    """Images of one identity score ~0.9 with each other, ~0.3 across: the chosen threshold must
    separate the two and the simulated score must be high."""
    rng = np.random.default_rng(0)
    identities = np.repeat([f"i{k}" for k in range(12)], 4)
    same = identities[:, None] == identities[None, :]
    similarity = np.where(same, 0.9, 0.3) + rng.normal(scale=0.02, size=same.shape)
    choice = choose_threshold(Neighbours.from_dense(similarity), identities)
    assert 0.35 < choice.threshold <= 0.85
    assert choice.simulated_score > 0.95


def test_near_duplicate_groups_are_not_matched():
    """With each identity's images all from one 'date', a known pseudo-query may not match its own
    date, so no known query can be answered correctly: BAKS collapses."""
    identities = np.repeat([f"i{k}" for k in range(8)], 3)
    similarity = np.where(identities[:, None] == identities[None, :], 0.9, 0.3)
    free = choose_threshold(Neighbours.from_dense(similarity), identities, rounds=5)
    grouped = choose_threshold(
        Neighbours.from_dense(similarity), identities, rounds=5, near_duplicate_groups=identities.copy()
    )
    assert free.simulated_baks > 0.9 and grouped.simulated_baks < 0.05


@pytest.fixture(scope="module")
def small_lion(shared_data, tmp_path_factory):
    """A quick real open-set problem: 20 LionData identities, their database photos and queries."""
    table = pd.read_csv(shared_data / "LionData" / "metadata.csv", dtype=str)
    keep = table[table["split"] == "database"]["identity"].drop_duplicates().head(14).tolist()
    new = sorted(
        set(table[table["split"] == "query"]["identity"]) - set(table[table["split"] == "database"]["identity"])
    )[:6]
    table = table[table["identity"].isin(keep + new)].copy()
    table["path"] = [str(shared_data / "LionData" / p) for p in table["path"]]
    folder = tmp_path_factory.mktemp("lion")
    table.to_csv(folder / "metadata.csv", index=False)
    return folder


def test_identify_open_set_on_real_photos(small_lion, tmp_path, lite0_backbone):
    """The per-query decision (grouping off: grouping may give a query its group's individual,
    tests/test_grouping.py and test_cli.py check that)."""
    dataset = load_csv(small_lion / "metadata.csv", allow_outside_paths=True)
    alone = get_preset("offline").replace(grouping=None)
    result = identify(dataset, alone, cache_dir=small_lion / "cache", backbone=lite0_backbone, progress=False)
    candidates = result.candidates
    assert candidates["image_id"].tolist() == dataset.queries["image_id"].tolist()
    assert (candidates["prediction"] == NEW_INDIVIDUAL).any()
    assert candidates["identity_1"].notna().all()
    assert (candidates["score_1"] >= candidates["score_2"]).all()
    (name,) = dataset.dataset_names  # the folder's name: the CSV has no dataset column
    threshold = result.thresholds[name]
    assert math.isfinite(threshold)
    answered = candidates["prediction"] != NEW_INDIVIDUAL
    assert (candidates.loc[answered, "top1_score"] >= threshold).all()
    assert (candidates.loc[~answered, "top1_score"] < threshold).all()

    written = write_run(result, tmp_path / "out", evaluation=evaluate_if_possible(result))
    submission = load_submission(written["submission"])
    assert submission.columns.tolist() == ["image_id", "identity"]
    assert submission["image_id"].tolist() == dataset.queries["image_id"].tolist()
    html = written["report"].read_text()
    assert name in html and "data:image/png;base64" in html
    assert (tmp_path / "out" / "plots" / f"{name}_histogram.png").stat().st_size > 1000

    again = identify(dataset, alone, cache_dir=small_lion / "cache", backbone=lite0_backbone, progress=False)
    assert again.timings["images_extracted"] == 0
    pd.testing.assert_frame_equal(again.candidates, candidates)


def test_bad_image_is_skipped_and_flagged(small_lion, tmp_path, lite0_backbone):
    table = pd.read_csv(small_lion / "metadata.csv", dtype=str)
    query_row = table.index[table["split"] == "query"][0]
    database_row = table.index[table["split"] == "database"][0]
    for row, name in ((query_row, "broken_query.jpg"), (database_row, "broken_db.jpg")):
        original = open(table.loc[row, "path"], "rb").read()
        (tmp_path / name).write_bytes(original[: len(original) // 4])
        table.loc[row, "path"] = str(tmp_path / name)
    table.to_csv(tmp_path / "metadata.csv", index=False)
    dataset = load_csv(tmp_path / "metadata.csv", allow_outside_paths=True)
    result = identify(
        dataset,
        get_preset("offline").replace(threshold=None),
        backbone=lite0_backbone,
        cache_dir=small_lion / "cache",
        progress=False,
    )
    broken = result.candidates[result.candidates["image_id"] == table.loc[query_row, "image_id"]].iloc[0]
    assert broken["prediction"] == NEW_INDIVIDUAL and broken["flags"] == UNREADABLE
    assert "broken_query.jpg" in broken["error"]
    assert set(result.failures["image_id"]) == {table.loc[query_row, "image_id"], table.loc[database_row, "image_id"]}
    others = result.candidates.drop(index=broken.name)
    assert (others["prediction"] != NEW_INDIVIDUAL).all()  # closed set: everything else answered
    assert table.loc[database_row, "image_id"] not in set(result.candidates["match_1"])


def test_seed_preset_is_the_reference_notebook():
    seed = get_preset("seed")
    assert seed.backbone == "megadescriptor-l-384" and seed.threshold == 0.6
    assert seed.preprocess.size == (384, 384) and seed.preprocess.interpolation == "bilinear"
    assert seed.preprocess.mean == (0.485, 0.456, 0.406) and seed.preprocess.std == (0.229, 0.224, 0.225)


def test_same_dataset_only(tmp_path, small_lion, lite0_backbone):
    """Split the lions into two 'datasets': no query may be matched across them, unless asked."""
    table = pd.read_csv(small_lion / "metadata.csv", dtype=str)
    identities = sorted(table["identity"].unique())
    table["dataset"] = ["A" if identities.index(i) % 2 else "B" for i in table["identity"]]
    table.to_csv(tmp_path / "metadata.csv", index=False)
    dataset = load_csv(tmp_path / "metadata.csv", allow_outside_paths=True)
    group_of = dict(zip(table["identity"], table["dataset"]))
    result = identify(
        dataset,
        get_preset("offline").replace(threshold=None),
        backbone=lite0_backbone,
        cache_dir=small_lion / "cache",
        progress=False,
    )
    for row in result.candidates.itertuples():
        assert all(group_of[i] == row.dataset for i in (row.identity_1, row.identity_2))
    assert set(result.thresholds) == {"A", "B"}
    mixed = identify(
        dataset,
        get_preset("offline").replace(threshold=None, same_dataset_only=False),
        backbone=lite0_backbone,
        cache_dir=small_lion / "cache",
        progress=False,
    )
    assert set(mixed.thresholds) == {"all"}
    crossed = [group_of[r.identity_1] != r.dataset for r in mixed.candidates.itertuples()]
    assert any(crossed)
