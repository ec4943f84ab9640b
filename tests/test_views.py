"""Viewpoints, mirrored matching, extra local features and per-identity aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from wildreid.cli.main import app
from wildreid.data.dataset import Dataset
from wildreid.data.images import read_image
from wildreid.data.views import ViewRule, known_views, mirror_view, parse_view_rule, photo_views
from wildreid.decide.ranking import rank_neighbours
from wildreid.decide.thresholds import Neighbours, ThresholdChoice, simulate_round
from wildreid.describe.mirror import MirroredMethod, mirrored_backbone
from wildreid.gallery.calibration import MIRRORED, Calibration
from wildreid.gallery.gallery import Gallery
from wildreid.gallery.index import VectorIndex
from wildreid.gallery.shortlist import shortlist_pairs
from wildreid.local.base import LocalFeatures, get_method
from wildreid.local.lnbnn import KeypointIndex
from wildreid.local.pairs import FusionSettings
from wildreid.presets import TOP_M_CHOICES, get_preset

FUSION = get_preset("fusion").replace(local_options={"max_keypoints": 128}, fusion=FusionSettings(shortlist=5))


# ---------------------------------------------------------------------------------------------- rules


def test_same_rule_unknown_views_and_mirror_views():
    same = ViewRule("same")
    assert same.compatible("left", "left") and not same.compatible("left", "right")
    assert same.compatible(None, "right") and same.compatible("left", None)  # unknown meets all
    assert ViewRule("off").compatible("left", "right")
    assert mirror_view("left") == "right" and mirror_view("topleft") == "topright"
    assert mirror_view("left_face") == "right_face" and mirror_view("front") is None
    mirrored = ViewRule("same", mirror=True)
    assert mirrored.mirrored("left", "right") and not mirrored.mirrored("left", "left")
    assert not mirrored.mirrored("front", "back") and not mirrored.mirrored(None, "right")
    assert not same.mirrored("left", "right")  # mirroring is an option


def test_table_rule_adds_pairs_both_ways_and_mirrors_through_them(tmp_path):
    rule = ViewRule("left=front", mirror=True)
    assert rule.compatible("front", "left") and rule.compatible("left", "front")
    assert not rule.compatible("right", "front")
    assert rule.mirrored("right", "front")  # right, flipped, is a left: compatible with front
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("view_a,view_b\nleft,front\nright, front\n")
    assert parse_view_rule(str(pairs)) == "left=front,right=front"
    assert parse_view_rule(" Same ") == "same"


def test_bad_rules_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="needs a view rule.*--views same"):
        ViewRule("off", mirror=True)
    with pytest.raises(ValueError, match="'left' is not a pair of views"):
        ViewRule("left")
    bad = tmp_path / "bad.csv"
    bad.write_text("left,front,back\n")
    with pytest.raises(ValueError, match="row 1: give two views per row"):
        parse_view_rule(str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        parse_view_rule(str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="needs a view rule"):
        get_preset("fusion").replace(mirror=True)


def test_views_from_viewpoint_or_orientation_column():
    table = pd.DataFrame({"orientation": ["Left", " right", "", None, "unknown"]})
    assert photo_views(table).tolist() == ["left", "right", None, None, None]
    both = pd.DataFrame({"viewpoint": ["front", None], "orientation": ["left", "right"]})
    assert photo_views(both).tolist() == ["front", None]
    assert photo_views(pd.DataFrame({"path": ["a"]})).tolist() == [None]


def test_views_read_back_from_a_table_column_are_unknown_where_empty():
    table = pd.DataFrame({"view": np.array(["left", None, "right"], dtype=object)})
    assert table["view"].isna().tolist() == [False, True, False]  # stored as NaN or None, by pandas version
    assert known_views(table["view"]).tolist() == ["left", None, "right"]
    assert known_views(pd.Series([None, np.nan, ""], dtype=object)) is None


def test_masks_are_shared_per_view_and_mirror_masks_disjoint():
    database = np.array(["left", "right", None, "front", "left"], dtype=object)
    direct, flipped = ViewRule("same", mirror=True).masks(["left", "right", "left", None, "front"], database)
    assert direct[0].tolist() == [True, False, True, False, True] and direct[0] is direct[2]
    assert flipped[0].tolist() == [False, True, False, False, False]
    assert direct[3] is None and flipped[3] is None  # an unknown query meets all, unflipped
    assert flipped[4] is None  # front has no mirror view
    assert not (direct[1] & flipped[1]).any()


# ---------------------------------------------------------------------------------------------- search


def _photos(rng, count=6):
    vectors = rng.normal(size=(count, 8))
    marks = [rng.normal(size=(20, 16)).astype(np.float32) for _ in range(count)]
    return vectors, marks, [LocalFeatures(np.zeros((20, 2), np.float32), m, 1.0) for m in marks]


def test_shortlist_meets_only_allowed_photos_in_both_searches():
    rng = np.random.default_rng(0)
    vectors, marks, database = _photos(rng)
    index, keypoints = VectorIndex.build(vectors), KeypointIndex(database)
    # The query looks like photo 1 and carries photo 4's keypoints; neither is allowed.
    query_vectors = vectors[[1]] + 0.01 * rng.normal(size=(1, 8))
    query = [LocalFeatures(np.zeros((20, 2), np.float32), marks[4] + 0.01, 1.0)]
    settings = FusionSettings(shortlist=2, scores=("cosine", "lnbnn"))
    allowed = np.array([True, False, True, True, False, True])
    pairs = shortlist_pairs(index, query_vectors, query, keypoints, database, None, settings, allowed=[allowed])
    assert set(pairs.images.tolist()) <= {0, 2, 3, 5} and len(pairs.images) >= 2
    free = shortlist_pairs(index, query_vectors, query, keypoints, database, None, settings)
    assert {1, 4} <= set(free.images.tolist())
    # LNBNN's normalising neighbour is an allowed photo's too: scores equal those of an index of them alone.
    alone = KeypointIndex([database[i] for i in np.flatnonzero(allowed)]).lnbnn(query, k=3)[0]
    restricted = keypoints.lnbnn(query, k=3, allowed=allowed)[0]
    np.testing.assert_allclose(restricted[allowed], alone, rtol=1e-5)
    assert (restricted[~allowed] == 0).all()


def test_queries_of_different_views_are_shortlisted_apart_and_in_order():
    rng = np.random.default_rng(1)
    vectors, _, database = _photos(rng)
    index, keypoints = VectorIndex.build(vectors), KeypointIndex(database)
    left, right = np.array([1, 1, 1, 0, 0, 0], bool), np.array([0, 0, 0, 1, 1, 1], bool)
    queries = [database[5], database[0], database[4]]
    settings = FusionSettings(shortlist=2, scores=("cosine", "lnbnn"))
    pairs = shortlist_pairs(
        index, vectors[[5, 0, 4]], queries, keypoints, database, None, settings, allowed=[left, right, left]
    )
    assert np.all(np.diff(pairs.queries) >= 0)
    for query, mask in enumerate([left, right, left]):
        assert mask[pairs.images[pairs.queries == query]].all()


def test_calibration_fits_mirrored_pairs_apart():
    rng = np.random.default_rng(0)
    same = rng.random(400) < 0.3
    mirrored = np.arange(400) >= 200
    # Direct pairs: high cosine means the same animal; mirrored pairs: cosine says nothing.
    cosine = np.where(mirrored, rng.random(400), np.where(same, 0.8, 0.2) + 0.1 * rng.random(400))
    calibration = Calibration.fit({"cosine": cosine}, same, mirrored)
    assert set(calibration.knots) == {"cosine", MIRRORED + "cosine"}
    high = np.array([0.85, 0.85])
    fused = calibration.fuse({"cosine": high}, np.array([False, True]))
    assert fused[0] > 0.9 and fused[1] < 0.6
    direct_only = Calibration.fit({"cosine": cosine[:200]}, same[:200])
    assert direct_only.fuse({"cosine": high}, np.array([False, True]))[1] == pytest.approx(fused[0])
    assert Calibration.from_json(calibration.to_json()).knots == calibration.knots


# ---------------------------------------------------------------------------------------------- aggregation


def test_top_m_mean_pads_with_the_lowest_listed_score():
    columns = np.array([[0, 1, 2, 3, -1], [3, 2, 1, 0, 4]])
    scores = np.array([[0.9, 0.8, 0.5, 0.4, -np.inf], [0.9, 0.3, 0.2, 0.1, 0.05]])
    identities = np.array(["a", "b", "a", "b", "c"], dtype=object)
    best = rank_neighbours(columns, scores, identities, 3)
    assert best.scores[1].tolist() == [0.9, 0.3, 0.05]
    mean = rank_neighbours(columns, scores, identities, 3, top_m=2)
    assert mean.identities.tolist() == [["a", "b", None], ["b", "a", "c"]]
    np.testing.assert_allclose(mean.scores[0, :2], [0.7, 0.6])
    np.testing.assert_allclose(mean.scores[1], [0.55, 0.2, 0.05])  # c: its one photo and the floor
    assert mean.best_images.tolist() == [[0, 1, -1], [3, 2, 4]]
    # One photo each: a padded mean orders identities by their best photo, as the max does.
    single = rank_neighbours(columns, scores, np.array(list("abcde"), dtype=object), 5, top_m=3)
    assert (
        single.identities.tolist()
        == rank_neighbours(columns, scores, np.array(list("abcde"), object), 5).identities.tolist()
    )


def test_top_m_auto_takes_the_best_simulated_score(monkeypatch):
    """The m chosen is the one whose simulated open-set score is highest (ties: the smaller)."""
    from wildreid.decide import thresholds
    from wildreid.gallery import part as group_module

    simulated = {1: 0.40, 2: 0.45, 3: 0.45}
    monkeypatch.setattr(
        thresholds,
        "choose_threshold",
        lambda neighbours, identities, near_duplicate_groups=None, top_m=1, seed=0: ThresholdChoice(
            0.5, simulated[top_m], 0, 0
        ),
    )
    group = group_module.DatasetPart("g", np.zeros(4, object), np.array(list("aabb"), object), None, None)
    assert group._choose_top_m(None)[0] == 2
    simulated[1] = float("nan")  # nothing to simulate counts as worst, never as best
    simulated[2] = simulated[3] = 0.1
    assert group._choose_top_m(None)[0] == 2


def test_threshold_simulation_scores_identities_as_the_ranking_does():
    rng = np.random.default_rng(3)
    identities = np.repeat(np.array([f"id{i}" for i in range(8)], dtype=object), 4)
    similarity = rng.random((32, 32))
    np.fill_diagonal(similarity, -np.inf)
    neighbours = Neighbours.from_dense(similarity)
    simulated = simulate_round(neighbours, identities, np.random.default_rng(0), top_m=2)
    # The same round's hidden photos, replayed by hand through rank_neighbours.
    replay = simulate_round(neighbours, identities, np.random.default_rng(0))
    assert (simulated.is_new == replay.is_new).all()
    answered = ~pd.isna(simulated.top_score)
    assert answered.any()
    assert (simulated.top_score[answered] <= replay.top_score[answered] + 1e-12).all()


# ---------------------------------------------------------------------------------------------- features


def test_orb_finds_a_warped_copy_and_not_another_animal(shared_data):
    photos = [read_image(shared_data / "NyalaData" / "images" / f"{i:06d}.jpg") for i in range(2)]
    orb = get_method("orb")
    original = orb.extract(photos[0])
    warped = orb.extract(photos[0].rotate(8, resample=Image.BICUBIC).resize((photos[0].width - 40, photos[0].height)))
    other = orb.extract(photos[1])
    from wildreid.local.verify import count_inliers

    def inliers(a, b):
        matches = orb.match(a, b)
        return count_inliers(a.keypoints[matches[:, 0]], b.keypoints[matches[:, 1]])[0] if len(matches) else 0

    assert len(original) > 100 and original.descriptors.shape[1] == 32
    assert inliers(original, warped) > 5 * max(inliers(original, other), 4)


def test_mirrored_descriptor_and_keypoints_are_those_of_the_flipped_photo(shared_data, lite0_backbone, tmp_path):
    from wildreid.describe.extract import extract_embeddings

    source = shared_data / "NyalaData" / "images" / "000000.jpg"
    flipped_file = tmp_path / "flipped.png"
    read_image(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped_file)
    mirrored = extract_embeddings([str(source)], mirrored_backbone(lite0_backbone), progress=False).embeddings[0]
    direct = extract_embeddings([str(flipped_file)], lite0_backbone, progress=False).embeddings[0]
    assert np.dot(mirrored, direct) / np.linalg.norm(mirrored) / np.linalg.norm(direct) > 0.999
    assert mirrored_backbone(lite0_backbone).cache_key != lite0_backbone.cache_key
    sift = get_method("rootsift", max_keypoints=64)
    flipped = MirroredMethod(sift)
    np.testing.assert_array_equal(
        flipped.extract(read_image(source)).keypoints, sift.extract(read_image(flipped_file)).keypoints
    )
    assert flipped.config_key() != sift.config_key()


# ---------------------------------------------------------------------------------------------- gallery


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("views-cache")


def test_gallery_meets_only_compatible_views_in_queries_and_calibration(lions, cache, lite0_backbone):
    preset = FUSION.replace(views="same")
    gallery = Gallery.build(Dataset(lions, "lions"), preset, backbone=lite0_backbone, cache_dir=cache, progress=False)
    group = gallery.groups["LionData"]
    rule = preset.view_rule()
    pseudo = group.fit.pseudo_queries
    pairs = group._pseudo_query_pairs(pseudo, preset, gallery.method, {})
    views = group.views
    compatible = [rule.compatible(views[pseudo[q]], views[i]) for q, i in zip(pairs.queries, pairs.images)]
    fell_back = set(group.view_masks(views[pseudo], preset, group._excluded(pseudo))[2])
    assert all(ok or views[pseudo[q]] in fell_back for ok, q in zip(compatible, pairs.queries))
    queries = lions[lions["split"] == "query"].reset_index(drop=True)
    result = gallery.identify(queries, cache_dir=cache, progress=False)
    candidates = result.candidates.set_index("image_id")
    view_of = dict(zip(gallery.table["image_id"], gallery.table["view"]))
    query_views = photo_views(queries)
    alone = set(group.view_masks(query_views, preset)[2])  # views absent from the database
    checked = 0
    for image_id, view in zip(queries["image_id"].astype(str), query_views):
        match = candidates.loc[image_id, "match_1"]
        if isinstance(match, str) and view not in alone:
            assert rule.compatible(view, view_of[match])
            checked += 1
    assert checked > 10


def test_a_view_without_compatible_photos_falls_back_to_all_and_is_said(lions, cache, lite0_backbone):
    preset = FUSION.replace(views="same")
    database = lions[lions["split"] == "database"]
    gallery = Gallery.build(database, preset, backbone=lite0_backbone, cache_dir=cache, progress=False)
    query = lions[lions["split"] == "query"].head(2).assign(viewpoint=["scar", "left_face"]).reset_index(drop=True)
    result = gallery.identify(query, cache_dir=cache, progress=False)
    assert result.ranking.identities[0, 0] is not None  # answered, not silenced
    assert any("scar" in note and "compared with every photo" in note for note in result.notes)


def _query_links(result, name: str, views: np.ndarray) -> list[tuple]:
    """The views at both ends of each query-to-query edge of a run's grouping graph."""
    grouping = result.grouping.datasets[name]
    graph, ends = grouping.graph, views[grouping.rows]
    between = graph.right < graph.queries
    return [(ends[a], ends[b]) for a, b in zip(graph.left[between], graph.right[between])]


def test_grouping_never_links_queries_of_incompatible_views(lions, cache, lite0_backbone):
    preset = FUSION.replace(views="same")
    assert preset.grouping is not None
    database = lions[lions["split"] == "database"].reset_index(drop=True)
    database.loc[:1, "viewpoint"] = None  # photos of unknown view stay unknown in the gallery
    gallery = Gallery.build(database, preset, backbone=lite0_backbone, cache_dir=cache, progress=False)
    assert gallery.groups["LionData"].views[:3].tolist() == [None, None, photo_views(database)[2]]
    queries = lions[lions["split"] == "query"].reset_index(drop=True)
    views = photo_views(queries)
    views[:3] = None  # unknown views meet all, in the graph too
    queries["viewpoint"] = views
    links = _query_links(gallery.identify(queries, cache_dir=cache, progress=False), "LionData", views)
    rule = preset.view_rule()
    assert links and all(rule.compatible(a, b) for a, b in links)
    assert any(a is None and b is not None or b is None and a is not None for a, b in links)
    # The same queries without their views are linked across views: the rule is what kept them apart.
    unlabelled = gallery.identify(queries.drop(columns=["viewpoint"]), cache_dir=cache, progress=False)
    assert not all(rule.compatible(a, b) for a, b in _query_links(unlabelled, "LionData", views))


def test_mirrored_gallery_with_orb_saves_loads_and_answers_the_same(lions, cache, lite0_backbone, tmp_path):
    preset = FUSION.replace(views="same", mirror=True, extra_local=("orb",), top_m="auto")
    dataset = Dataset(lions, "lions")
    gallery = Gallery.build(dataset, preset, backbone=lite0_backbone, cache_dir=cache, progress=False)
    group = gallery.groups["LionData"]
    calibration = group.fit.calibration
    assert "inliers:orb" in calibration.knots and MIRRORED + "cosine" in calibration.knots
    pairs = group._pseudo_query_pairs(group.fit.pseudo_queries, preset, gallery.method, gallery.extra_methods)
    flipped = pairs.mirrored
    assert flipped.any() and (~flipped).any()
    views = group.views
    rows = group.fit.pseudo_queries[pairs.queries]
    assert all(mirror_view(views[r]) == views[i] for r, i in zip(rows[flipped], pairs.images[flipped]))
    answered = gallery.identify(dataset, cache_dir=cache, progress=False)
    rule = preset.view_rule()
    links = _query_links(answered, "LionData", photo_views(dataset.queries.reset_index(drop=True)))
    assert all(rule.compatible(a, b) or rule.mirrored(a, b) for a, b in links)  # mirror views through the flip
    assert any(rule.mirrored(a, b) for a, b in links)
    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g", backbone=lite0_backbone)
    assert loaded.preset == gallery.preset and loaded.groups["LionData"].views.tolist() == views.tolist()
    assert group.fit.top_m in TOP_M_CHOICES and loaded.groups["LionData"].fit.top_m == group.fit.top_m
    again = loaded.identify(dataset, cache_dir=cache, progress=False)
    pd.testing.assert_frame_equal(again.candidates, answered.candidates)


def test_cli_refuses_view_options_with_a_gallery_and_mirror_without_views(tmp_path, shared_data):
    runner = CliRunner()
    result = runner.invoke(
        app, ["identify", str(shared_data / "LionData"), "--out", str(tmp_path / "o"), "--mirror", "--no-cache"]
    )
    assert result.exit_code == 2 and "needs a view rule" in " ".join(result.output.split())
    result = runner.invoke(
        app,
        ["identify", "x.jpg", "--gallery", str(tmp_path / "g"), "--out", str(tmp_path / "o2"), "--views", "same"],
    )
    assert result.exit_code == 2 and "fixed when a gallery is built" in " ".join(result.output.split())
