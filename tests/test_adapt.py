"""The adaptation stage: linear adapters fitted on a catalogue's labels, chosen and cross-fitted on
the database alone, saved with the gallery and used for every global comparison."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from wildreid.describe.adapters import adapter_names, load_adapter, make_adapter, save_adapter
from wildreid.describe.extract import extract_embeddings
from wildreid.gallery import adaptation
from wildreid.gallery.gallery import Gallery, GalleryError
from wildreid.gallery.index import normalize
from wildreid.gallery.part import DatasetPart
from wildreid.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LDA = get_preset("offline").replace(adapt="lda")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapt-cache")


@pytest.fixture(scope="module")
def database(lions):
    table = lions[lions["split"] == "database"].reset_index(drop=True)
    assert (table["identity"].value_counts() >= 2).sum() >= adaptation.MIN_IDENTITIES  # enough to adapt
    return table


@pytest.fixture(scope="module")
def vectors(database, cache, lite0_backbone):
    return extract_embeddings(database["path"].tolist(), lite0_backbone, cache_dir=cache, progress=False).embeddings


@pytest.fixture(scope="module")
def built(database, cache, lite0_backbone):
    """A gallery of all but the last database photo, adapted by LDA."""
    return Gallery.build(database.iloc[:-1], LDA, backbone=lite0_backbone, cache_dir=cache, progress=False)


@pytest.mark.parametrize("level", ["lda", "whiten", "arcface"])
def test_adapter_fits_real_photos_and_separates_their_individuals(level, database, vectors, tmp_path):
    """Unit rows out; same-individual pairs closer than other pairs by a wider margin than before;
    the same photos and seed give the same adapter, also after a save and load."""
    identities = database["identity"].to_numpy()
    adapter = make_adapter(level).fit(vectors, identities, seed=0)
    adapted = adapter.transform(vectors)
    assert np.allclose(np.linalg.norm(adapted, axis=1), 1, atol=1e-5)
    same = identities[:, None] == identities[None, :]
    off_diagonal = ~np.eye(len(identities), dtype=bool)

    def margin(found):
        cosine = found @ found.T
        return cosine[same & off_diagonal].mean() - cosine[~same].mean()

    assert margin(adapted) > margin(normalize(vectors)) + 0.05
    again = make_adapter(level).fit(vectors, identities, seed=0)
    assert all(np.array_equal(again.state()[key], value) for key, value in adapter.state().items())
    save_adapter(tmp_path / "adapter.npz", adapter)
    assert np.array_equal(load_adapter(tmp_path / "adapter.npz").transform(vectors[:5]), adapted[:5])


def test_gallery_saves_its_adapter_and_projects_a_photo_added_later(built, database, cache, tmp_path, lite0_backbone):
    part = built.groups["LionData"]
    assert part.adapter is not None and part.adapter.name == "lda"
    assert part.fit.adaptation["chosen"] == "lda" and set(part.fit.adaptation["validation"]) == {"none", "lda"}
    assert part.adapter.fingerprint == lite0_backbone.cache_key
    built.save(tmp_path / "g")
    record = json.loads((tmp_path / "g" / "gallery.json").read_text())
    assert record["group_files"]["LionData"]["fit"]["adaptation"]["chosen"] == "lda"
    loaded = Gallery.load(tmp_path / "g", backbone=lite0_backbone)
    again = loaded.groups["LionData"]
    assert np.array_equal(again.adapter.projection, part.adapter.projection)
    everything = np.arange(part.size)
    assert np.array_equal(again.search_index.vectors(everything), part.search_index.vectors(everything))
    # A photo added without a refit is compared through the saved adapter; the raw index keeps its vector.
    loaded.add(database.iloc[-1:], cache_dir=cache, progress=False, refit=False)
    assert again.size == part.size + 1
    raw = extract_embeddings([database["path"].iloc[-1]], lite0_backbone, cache_dir=cache, progress=False).embeddings
    assert np.allclose(again.search_index.vectors([part.size]), again.adapter.transform(raw), atol=1e-6)
    assert np.allclose(again.index.vectors([part.size]), normalize(raw), atol=1e-6)


def test_gallery_with_an_adapter_refuses_another_backbone(built, tmp_path):
    built.save(tmp_path / "g")
    other = types.SimpleNamespace(name="other-model", cache_key="other-model-0123")
    with pytest.raises(GalleryError, match="fingerprint"):
        Gallery.load(tmp_path / "g", backbone=other)


def _pseudo_query_scores(monkeypatch, database, cache, backbone):
    """Build an adapted gallery and return it with every cosine its fit scored pseudo-queries with:
    (database row, database row, cosine) from the calibration's pairs and the threshold's lists."""
    seen = []
    pairs, neighbours = DatasetPart.asked_pairs, DatasetPart.asked_neighbours

    def asked_pairs(self, rows, *args, **kwargs):
        found = pairs(self, rows, *args, **kwargs)
        seen.append((rows[found.queries], found.images, found.raw["cosine"]))
        return found

    def asked_neighbours(self, rows, preset):
        found = neighbours(self, rows, preset)
        listed = found.columns >= 0
        seen.append((np.repeat(found.rows, listed.sum(axis=1)), found.columns[listed], found.scores[listed]))
        return found

    monkeypatch.setattr(DatasetPart, "asked_pairs", asked_pairs)
    monkeypatch.setattr(DatasetPart, "asked_neighbours", asked_neighbours)
    gallery = Gallery.build(database, LDA, backbone=backbone, cache_dir=cache, progress=False)
    return gallery, [np.concatenate(values) for values in zip(*seen)]


def test_calibration_and_thresholds_score_pseudo_queries_out_of_fold(
    monkeypatch, database, vectors, cache, lite0_backbone
):
    """Every cosine the fit scored a pseudo-query with is the cosine through an adapter fitted
    without that pseudo-query's identity; and the check catches a fit that leaks (the cross-fit
    replaced by the adapter fitted on everything)."""
    identities = database["identity"].to_numpy()
    folds = adaptation.identity_folds(identities, adaptation.FOLDS, 0)

    adapted_without = {
        fold: make_adapter("lda").fit(vectors[folds != fold], identities[folds != fold]).transform(vectors)
        for fold in np.unique(folds)
    }

    def out_of_fold(rows, images, scores) -> bool:
        expected = np.empty(len(rows))
        for fold, adapted in adapted_without.items():
            mine = folds[rows] == fold
            expected[mine] = np.einsum("ij,ij->i", adapted[rows[mine]], adapted[images[mine]])
        return bool(np.allclose(scores, expected, atol=1e-4))

    gallery, (rows, images, scores) = _pseudo_query_scores(monkeypatch, database, cache, lite0_backbone)
    assert len(rows) > 100 and out_of_fold(rows, images, scores)
    final = gallery.groups["LionData"].search_index
    assert not np.allclose(scores, np.einsum("ij,ij->i", final.vectors(rows), final.vectors(images)), atol=1e-4)

    honest = adaptation.fold_views

    def leaking_views(part, level, folds, seed):  # every fold scored by the adapter that saw it
        if level == "none":
            return honest(part, level, folds, seed)
        whole = make_adapter(level).fit(part.index.vectors(np.arange(part.size)), part.identities)
        view = adaptation.view_through(part, whole, part.index.vectors(np.arange(part.size)))
        return [(folds == fold, view) for fold in range(int(folds.max()) + 1)]

    monkeypatch.setattr(adaptation, "fold_views", leaking_views)
    _, leaked = _pseudo_query_scores(monkeypatch, database, cache, lite0_backbone)
    assert not out_of_fold(*leaked)


def test_auto_chooses_on_the_database_and_records_it(database, cache, lite0_backbone, tmp_path):
    """'auto' compares none with every level on the same held-out identities, keeps a level only
    where it beats none, says so in a note, and records the figures in the gallery and run.json."""
    from wildreid.evaluate.outputs import write_run

    gallery = Gallery.build(
        database, get_preset("offline").replace(adapt="auto"), backbone=lite0_backbone, cache_dir=cache, progress=False
    )
    record = gallery.groups["LionData"].fit.adaptation
    # auto compares the levels that earned a place (not the head, used only by name)
    assert set(record["validation"]) == {"none", "lda", "whiten"} and "arcface" in adapter_names()
    scores = {level: figures["simulated_score"] for level, figures in record["validation"].items()}
    # The simplest level (none, lda, whiten) within MARGIN of the best is kept.
    order = list(scores)
    best = max(scores.values())
    assert order[0] == "none" and scores[record["chosen"]] >= best - adaptation.MARGIN
    assert all(scores[level] < best - adaptation.MARGIN for level in order[: order.index(record["chosen"])])
    assert any(note.startswith(f"LionData: adaptation {record['chosen']} ") for note in gallery.notes)
    from wildreid.data.dataset import Dataset

    queries = Dataset(database.iloc[:5].assign(split="query"), "lions")
    result = gallery.identify(queries, cache_dir=cache, progress=False)
    write_run(result, tmp_path / "run")
    assert (
        json.loads((tmp_path / "run" / "run.json").read_text())["adaptations"]["LionData"]["chosen"] == record["chosen"]
    )


def test_too_few_individuals_keep_the_vectors_with_a_note(database, cache, lite0_backbone):
    few = database[database["identity"].isin(database["identity"].unique()[:4])]
    gallery = Gallery.build(few, LDA, backbone=lite0_backbone, cache_dir=cache, progress=False)
    part = gallery.groups["LionData"]
    assert part.adapter is None and part.fit.adaptation["chosen"] == "none"
    assert any("no adaptation" in note for note in gallery.notes)


def test_the_head_starts_as_the_whitening_and_learns_only_where_the_labels_leave_something_to_learn(database, vectors):
    """The arcface head is a residual correction of the within-class whitening: untrained it is
    exactly the whitening. Where the whitened photos already separate their individuals (these
    lions) the loss has nothing left to teach and the head stays the whitening; where they do not
    (overlapping synthetic individuals) training moves it, and the seed decides how."""
    from wildreid.describe import adapt_head

    identities = database["identity"].to_numpy()
    whitened = make_adapter("whiten").fit(vectors, identities).transform(vectors)
    original = adapt_head.STEPS
    try:
        adapt_head.STEPS = 0
        untrained = adapt_head.ArcFaceHead().fit(vectors, identities, seed=0).transform(vectors)
    finally:
        adapt_head.STEPS = original
    assert np.allclose(untrained, whitened, atol=1e-6)
    trained = make_adapter("arcface").fit(vectors, identities, seed=0).transform(vectors)
    assert np.allclose(trained, whitened, atol=1e-3)

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 10)
    overlapping = rng.normal(size=(40, 256))[labels] * 0.3 + rng.normal(size=(400, 256))
    plain = make_adapter("whiten").fit(overlapping, labels).transform(overlapping)
    moved = make_adapter("arcface").fit(overlapping, labels, seed=0).transform(overlapping)
    assert np.mean(1 - np.sum(moved * plain, axis=1)) > 0.01
    assert not np.allclose(make_adapter("arcface").fit(overlapping, labels, seed=1).transform(overlapping), moved)


def test_the_backbone_cosine_is_scored_beside_the_adapted_one_only_where_the_group_adapts(
    database, cache, lite0_backbone
):
    """With ``backbone_cosine`` among the fused scores, an adapted group scores each pair by the
    backbone's own cosine as well as the adapted one (the mean keeps both); a group that is not
    adapted has no such score (it would repeat the cosine)."""
    from wildreid.local.pairs import FusionSettings

    settings = FusionSettings(shortlist=5, scores=("cosine", "lnbnn", "inliers", "backbone_cosine"))
    fusion = get_preset("fusion").replace(local_options={"max_keypoints": 128}, fusion=settings, fusion_rule="mean")
    gallery = Gallery.build(
        database, fusion.replace(adapt="whiten"), backbone=lite0_backbone, cache_dir=cache, progress=False
    )
    part = gallery.groups["LionData"]
    rows = np.arange(0, part.size, 3)
    pairs = part.asked_pairs(rows, gallery.preset, gallery.method, {})
    raw = normalize(part.index.vectors(np.arange(part.size)))
    adapted = normalize(part.adapt(raw))
    expected = np.einsum("ij,ij->i", raw[rows[pairs.queries]], raw[pairs.images])
    np.testing.assert_allclose(pairs.raw["backbone_cosine"], expected, atol=1e-5)
    np.testing.assert_allclose(
        pairs.raw["cosine"], np.einsum("ij,ij->i", adapted[rows[pairs.queries]], adapted[pairs.images]), atol=1e-5
    )
    assert not np.allclose(pairs.raw["cosine"], pairs.raw["backbone_cosine"], atol=1e-2)
    assert {"cosine", "backbone_cosine", "lnbnn", "inliers"} <= set(part.fit.calibration.maps)

    plain = Gallery.build(
        database, fusion.replace(adapt="none"), backbone=lite0_backbone, cache_dir=cache, progress=False
    )
    plain_part = plain.groups["LionData"]
    assert "backbone_cosine" not in plain_part.asked_pairs(rows, plain.preset, plain.method, {}).raw
    assert "backbone_cosine" not in plain_part.fit.calibration.maps


def test_each_use_of_the_adapted_vector_can_be_kept_on_the_backbone(database, cache, lite0_backbone):
    """``adapt_uses`` measures each use on its own: without "shortlist" the database photos are
    listed as the unadapted group lists them, while their cosine is still the adapted one; without
    "score" the same photos are listed as with every use, scored by the backbone's cosine."""
    from wildreid.local.pairs import FusionSettings

    settings = FusionSettings(shortlist=5, scores=("cosine", "lnbnn", "inliers", "backbone_cosine"))
    every = get_preset("fusion").replace(
        local_options={"max_keypoints": 128}, fusion=settings, fusion_rule="mean", adapt="whiten"
    )
    gallery = Gallery.build(database, every, backbone=lite0_backbone, cache_dir=cache, progress=False)
    part, method = gallery.groups["LionData"], gallery.method
    rows = np.arange(0, part.size, 3)
    raw = normalize(part.index.vectors(np.arange(part.size)))
    adapted = normalize(part.adapt(raw))

    def asked(*uses):
        pairs = part.asked_pairs(rows, every.replace(adapt_uses=uses), method, {})
        return pairs, set(zip(pairs.queries.tolist(), pairs.images.tolist()))

    def cosine(vectors, pairs):
        return np.einsum("ij,ij->i", vectors[rows[pairs.queries]], vectors[pairs.images])

    all_uses, listed_adapted = asked("shortlist", "score", "grouping")
    not_listed, listed_plain = asked("score", "grouping")
    not_scored, listed_as_all = asked("shortlist", "grouping")
    neither, listed_by_neither = asked("grouping")
    assert listed_plain == listed_by_neither and listed_as_all == listed_adapted
    assert listed_plain != listed_adapted  # the two vectors list different photos
    np.testing.assert_allclose(not_listed.raw["cosine"], cosine(adapted, not_listed), atol=1e-5)
    np.testing.assert_allclose(not_scored.raw["cosine"], cosine(raw, not_scored), atol=1e-5)
    np.testing.assert_allclose(neither.raw["cosine"], cosine(raw, neither), atol=1e-5)
    # the backbone's cosine is a second opinion only beside an adapted one
    assert "backbone_cosine" in all_uses.raw and "backbone_cosine" in not_listed.raw
    assert "backbone_cosine" not in not_scored.raw and "backbone_cosine" not in neither.raw


def test_a_preset_refuses_an_unknown_use_of_the_adapted_vector():
    with pytest.raises(ValueError, match="adapt uses: 'score'; give one or more of shortlist, score, grouping"):
        get_preset("fusion").replace(adapt_uses="score")
    with pytest.raises(ValueError, match=r"adapt uses: \('ranking',\)"):
        get_preset("fusion").replace(adapt_uses=("ranking",))
    with pytest.raises(ValueError, match="for no adaptation at all, set adapt to none"):
        get_preset("fusion").replace(adapt_uses=())
    preset = get_preset("fusion").replace(adapt_uses=["score", "grouping"])
    assert preset.adapt_uses == ("score", "grouping")
    assert type(preset).from_dict(json.loads(json.dumps(preset.to_dict()))) == preset


def test_a_flipped_photo_is_scored_by_its_own_backbone_vector():
    """Mirrored matching: a pair compared after flipping the query gets the flipped photo's
    backbone cosine, the others the photo's as taken."""
    from wildreid.gallery.index import VectorIndex
    from wildreid.gallery.part import Side, with_backbone_cosine
    from wildreid.gallery.shortlist import ScoredPairs
    from wildreid.local.pairs import FusionSettings

    rng = np.random.default_rng(3)
    database, taken, flipped = (normalize(rng.normal(size=(n, 6)).astype(np.float32)) for n in (5, 2, 2))
    pairs = ScoredPairs(
        np.array([0, 0, 1]), np.array([1, 3, 4]), {"cosine": np.zeros(3)}, np.array([False, True, False])
    )
    settings = FusionSettings(scores=("cosine", "backbone_cosine"))
    side = Side(taken * 2.0, backbone=taken)  # vectors: the adapted ones (any other numbers)
    mirrored = Side(flipped * 3.0, backbone=flipped)
    scored = with_backbone_cosine(pairs, settings, side, mirrored, VectorIndex.build(database))
    expected = [taken[0] @ database[1], flipped[0] @ database[3], taken[1] @ database[4]]
    np.testing.assert_allclose(scored.raw["backbone_cosine"], expected, atol=1e-6)
    assert (
        "backbone_cosine"
        not in with_backbone_cosine(pairs, settings, Side(taken), None, VectorIndex.build(database)).raw
    )


def test_auto_judges_the_levels_by_the_adapted_cosine_whatever_the_uses(database, cache, lite0_backbone):
    """With "score" left out of the adapted uses, 'auto' still compares the levels by what they
    make of the cosine (else every level would tie with none, and none would win)."""
    preset = get_preset("offline").replace(adapt="auto")
    every = Gallery.build(database, preset, backbone=lite0_backbone, cache_dir=cache, progress=False)
    some = Gallery.build(
        database, preset.replace(adapt_uses=("grouping",)), backbone=lite0_backbone, cache_dir=cache, progress=False
    )
    chosen = every.groups["LionData"].fit.adaptation
    assert some.groups["LionData"].fit.adaptation["validation"] == chosen["validation"]
    assert some.groups["LionData"].fit.adaptation["chosen"] == chosen["chosen"] != "none"
