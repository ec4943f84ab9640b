"""The catalogue's gallery learns from the reviewers' answers: the waiting photos "same" answers
tie together (review/learning.py), a refit on a copy of the gallery (ReviewService.learn), and the
web app's background refit every so many answers (JobRunner.maybe_learn)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wildreid.catalog.changes import answer_pair
from wildreid.catalog.importer import import_dataset
from wildreid.catalog.store import Catalog
from wildreid.data.dataset import load_dataset
from wildreid.presets import get_preset
from wildreid.review.identify import catalog_gallery_folder
from wildreid.review.learning import answered_waiting_photos
from wildreid.review.service import ReviewService

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WHITEN = get_preset("offline").replace(adapt="whiten")


@pytest.fixture
def catalog(tmp_path, shared_data):
    """12 NyalaData individuals with three photos each; six waiting uploads of three other animals
    (two photos each), answered: photos 1-2 same, 3-4 same, 5 is a known individual, 1-3 different."""
    nyala = load_dataset(shared_data / "NyalaData")
    database = nyala.database
    counts = database["identity"].value_counts()
    known = sorted(counts[counts >= 3].index)[:12]
    chosen = database[database["identity"].isin(known)].groupby("identity").head(3)
    others = database[~database["identity"].isin(known) & database["identity"].map(counts).ge(2)]
    strangers = others.groupby("identity").head(2).head(6)
    with Catalog(tmp_path / "c.sqlite") as catalog:
        import_dataset(catalog, nyala.subset(nyala.table["image_id"].isin(chosen["image_id"])))
        ids = []
        for path in strangers["path"]:
            query = catalog.add_query(Path(path).read_bytes(), "jpg", dataset="NyalaData", original_name="x.jpg")
            catalog.set_query_result(query["id"], {"prediction": "new_individual", "candidates": []})
            ids.append(query["id"])
        answers = [
            {"query_id": ids[0], "other_query_id": ids[1], "answer": "same"},
            {"query_id": ids[2], "other_query_id": ids[3], "answer": "same"},
            {"query_id": ids[4], "individual_id": known[0], "answer": "same"},
            {"query_id": ids[0], "other_query_id": ids[2], "answer": "different"},
        ]
        for answer in answers:
            answer_pair(catalog, dataset="NyalaData", reviewer="alice", **answer)
        catalog.test_ids = ids  # type: ignore[attr-defined]
        catalog.test_known = known  # type: ignore[attr-defined]
        yield catalog


def test_the_waiting_photos_tied_by_same_answers_are_labelled(catalog):
    ids, known = catalog.test_ids, catalog.test_known
    photos = answered_waiting_photos(catalog)
    labels = dict(zip(photos["image_id"], photos["identity"]))
    assert labels == {
        f"upload-{ids[0]}": "answered-1@NyalaData",
        f"upload-{ids[1]}": "answered-1@NyalaData",
        f"upload-{ids[2]}": "answered-2@NyalaData",
        f"upload-{ids[3]}": "answered-2@NyalaData",
        f"upload-{ids[4]}": known[0],
    }
    assert all(Path(path).is_file() for path in photos["path"]) and set(photos["dataset"]) == {"NyalaData"}


def test_learning_refits_a_copy_saves_it_and_installs_it(catalog, tmp_path, lite0_backbone):
    cache = tmp_path / "cache"
    service = ReviewService(WHITEN, backbone=lite0_backbone, cache_dir=cache)
    before = service.sync(catalog)
    projection = before.groups["NyalaData"].adapter.state()["projection"].copy()
    learned = service.learn(catalog)
    assert learned is not before and service.gallery is before  # uploads went on with the old one
    part = learned.groups["NyalaData"]
    assert part.taught.size == 5 and part.fit.adaptation["taught"]["photos"] == 5
    assert not np.allclose(part.adapter.state()["projection"], projection)
    assert np.allclose(before.groups["NyalaData"].adapter.state()["projection"], projection)  # untouched
    assert learned.learned_answers == 4
    saved = json.loads((catalog_gallery_folder(cache, WHITEN) / "gallery.json").read_text())
    assert saved["learned_answers"] == 4
    service.install(learned)
    assert service.gallery is learned
    # The installed gallery is brought up to date with the catalogue like any other.
    assert service.sync(catalog) is learned


def test_the_web_app_learns_in_the_background_every_so_many_answers(catalog, tmp_path, lite0_backbone):
    from wildreid.web.config import WebConfig
    from wildreid.web.jobs import JobRunner

    cache = tmp_path / "cache"
    config = WebConfig(catalog.path, preset="offline", cache_dir=cache, refit_after=5)
    runner = JobRunner(config, backbone=lite0_backbone)
    assert not runner.maybe_learn()  # no gallery loaded yet: nothing to learn into
    runner.service = ReviewService(WHITEN, backbone=lite0_backbone, cache_dir=cache)
    runner.service.sync(catalog)
    assert not runner.maybe_learn()  # 4 answers so far, fewer than 5
    answer_pair(
        catalog,
        dataset="NyalaData",
        reviewer="bob",
        query_id=catalog.test_ids[4],
        other_query_id=catalog.test_ids[5],
        answer="same",
    )
    assert runner.maybe_learn()
    runner.learning.join(300)
    assert runner.gallery.learned_answers == 5 and runner.gallery.groups["NyalaData"].taught.size == 6
    assert not runner.maybe_learn()  # nothing new since

    never = JobRunner(WebConfig(catalog.path, preset="offline", cache_dir=cache, refit_after=0))
    never.service = runner.service
    assert not never.maybe_learn()
    with pytest.raises(ValueError, match="refit_after"):
        WebConfig(catalog.path, refit_after=-1)
