"""The gallery: fitted once, saved, loaded, grown; the same answers as building it on the fly."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wildreid.cli.main import app
from wildreid.data.dataset import NEW_INDIVIDUAL
from wildreid.decide.ranking import rank_identities, rank_neighbours
from wildreid.decide.thresholds import Neighbours, choose_threshold
from wildreid.gallery import part as group_module
from wildreid.gallery import query_pairs
from wildreid.gallery.gallery import REFIT_GROWTH, Gallery, GalleryError
from wildreid.gallery.index import VectorIndex, normalize
from wildreid.gallery.pipeline import identify
from wildreid.gallery.queries import ranking_depth, ranking_rows
from wildreid.gallery.query_pairs import PairMemory
from wildreid.local.pairs import FusionSettings
from wildreid.presets import get_preset
from wildreid.review.watch import RESULTS, Watcher

OFFLINE = get_preset("offline")
FUSION = get_preset("fusion").replace(local_options={"max_keypoints": 128}, fusion=FusionSettings(shortlist=5))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gallery-cache")


def _dataset(table):
    from wildreid.data.dataset import Dataset

    return Dataset(table.reset_index(drop=True), "lions")


ADAPTED_SOME_USES = FUSION.replace(
    adapt="whiten",
    adapt_uses=("score", "grouping"),
    fusion=FusionSettings(shortlist=5, scores=("cosine", "lnbnn", "inliers", "backbone_cosine")),
)


@pytest.mark.parametrize(
    "preset", [OFFLINE, FUSION, ADAPTED_SOME_USES], ids=["offline", "fusion", "fusion-some-uses-adapted"]
)
def test_saved_gallery_answers_as_the_batch_run(preset, lions, cache, tmp_path, lite0_backbone):
    """identify(dataset) == Gallery.build -> save -> load -> identify(queries), row for row (a
    preset that adapts some uses only, and fuses the backbone's cosine, too)."""
    batch = identify(_dataset(lions), preset, backbone=lite0_backbone, cache_dir=cache, progress=False)
    built = Gallery.build(_dataset(lions), preset, backbone=lite0_backbone, cache_dir=cache, progress=False)
    built.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g", backbone=lite0_backbone, preset=preset.name)
    assert loaded.groups["LionData"].fit.threshold == pytest.approx(batch.thresholds["LionData"])
    answered = loaded.identify(_dataset(lions), cache_dir=cache, progress=False)
    pd.testing.assert_frame_equal(answered.candidates, batch.candidates)
    assert (answered.prediction == NEW_INDIVIDUAL).any() and (answered.prediction != NEW_INDIVIDUAL).any()
    if preset.local:
        assert loaded.groups["LionData"].fit.calibration.to_json() == batch.calibrations["LionData"].to_json()
    assert loaded.preset.adapt_uses == preset.adapt_uses


@pytest.mark.parametrize(
    "preset",
    [
        OFFLINE,
        FUSION,
        FUSION.replace(views="same", mirror=True, extra_local=("orb",)),
        # adapted, with the backbone's own cosine fused (and flipped photos scored by theirs)
        FUSION.replace(
            views="same",
            mirror=True,
            adapt="whiten",
            fusion_rule="mean",
            fusion=FusionSettings(shortlist=5, scores=("cosine", "lnbnn", "inliers", "backbone_cosine")),
        ),
        # the queries' pairs listed by the backbone's vectors, scored by the adapted ones
        FUSION.replace(adapt="whiten", adapt_uses=("shortlist", "score")),
    ],
    ids=["offline", "fusion", "fusion-mirrored-orb", "fusion-mirrored-backbone-cosine", "fusion-grouping-unadapted"],
)
def test_remembered_pair_comparisons_group_as_afresh(preset, lions, cache, lite0_backbone, monkeypatch):
    """Queries grouped with their comparisons remembered (the review service's waiting photos)
    get the match graph of grouping them afresh, with one photo more (only its pairs are matched)
    and with some photos gone."""
    database, queries = lions[lions["split"] == "database"], lions[lions["split"] == "query"]
    gallery = Gallery.build(database, preset, backbone=lite0_backbone, cache_dir=cache, progress=False)
    photos = gallery.describe(queries, cache_dir=cache, progress=False)
    ranked = gallery.rank(photos, ranking_depth(preset.top_k, preset.grouping))
    memory, compared = PairMemory(), []
    real_counts = query_pairs.pair_counts if preset.local else None

    def counting(method, left, right, rows, columns, *args, **kwargs):
        compared.append(len(rows))
        return real_counts(method, left, right, rows, columns, *args, **kwargs)

    monkeypatch.setattr(query_pairs, "pair_counts", counting)
    earlier, everything = np.arange(len(queries) - 1), np.arange(len(queries))
    remembered, kept = memory.part("LionData"), []
    for rows in (earlier, everything, everything[3:]):  # one photo more, then three fewer (filed)
        afresh = gallery.answer(photos.take(rows), ranking_rows(ranked, rows)).grouping.datasets["LionData"]
        again = gallery.answer(photos.take(rows), ranking_rows(ranked, rows), pairs=memory)
        _assert_same_grouping(again.grouping.datasets["LionData"], afresh)
        kept.append(dict(remembered.scores))
    # The three steps are identify's own (on the same batch, to the last bit).
    _assert_same_grouping(
        gallery.answer(photos, ranked).grouping.datasets["LionData"],
        gallery.identify(queries, cache_dir=cache, progress=False).grouping.datasets["LionData"],
    )
    if preset.local:
        newest = (queries["image_id"].iloc[-1], photos.keys[len(queries) - 1])
        assert compared[0] == len(kept[0]) > 0
        assert compared[1] == len(set(kept[1]) - set(kept[0])) == sum(newest in pair[:2] for pair in kept[1])
    if preset.mirror:
        assert any(flipped for _, _, flipped in kept[1])
    if preset.adapt == "whiten":  # the cases of adapted uses did adapt
        assert gallery.groups["LionData"].adapter is not None
    if "backbone_cosine" in preset.fusion.scores:  # the graphs compared did fuse it
        assert "backbone_cosine" in gallery.groups["LionData"].fit.calibration.maps


def _assert_same_grouping(grouping, expected):
    for name in ("left", "right", "probability", "identities"):
        np.testing.assert_array_equal(getattr(grouping.graph, name), getattr(expected.graph, name))
    np.testing.assert_array_equal(grouping.clustering.labels, expected.clustering.labels)


def test_a_gallery_refuses_another_descriptor_preset_or_format(lions, cache, tmp_path, lite0_backbone):
    built = Gallery.build(
        lions[lions["split"] == "database"], OFFLINE, backbone=lite0_backbone, cache_dir=cache, progress=False
    )
    built.save(tmp_path / "g")
    with pytest.raises(GalleryError, match="built with preset 'offline', not 'fusion'.*--preset offline"):
        Gallery.load(tmp_path / "g", backbone=lite0_backbone, preset="fusion")
    other = type(lite0_backbone)(
        "another-model", lite0_backbone.model, lite0_backbone.preprocess, "other-weights", lite0_backbone.dim
    )
    with pytest.raises(GalleryError, match="built with descriptor efficientnet-lite0.*not be comparable"):
        Gallery.load(tmp_path / "g", backbone=other)
    record = json.loads((tmp_path / "g" / "gallery.json").read_text())
    record["format_version"] = 0
    (tmp_path / "g" / "gallery.json").write_text(json.dumps(record))
    with pytest.raises(GalleryError, match="format 0.*rebuild it with `wildreid gallery build"):
        Gallery.load(tmp_path / "g", backbone=lite0_backbone)
    (tmp_path / "not-a-gallery").mkdir()
    (tmp_path / "not-a-gallery" / "notes.txt").write_text("mine")
    with pytest.raises(GalleryError, match="not a gallery"):
        built.save(tmp_path / "not-a-gallery")
    assert (tmp_path / "not-a-gallery" / "notes.txt").read_text() == "mine"


def test_added_photos_are_matched_without_refitting_until_the_gallery_has_grown(lions, cache, lite0_backbone):
    database = lions[lions["split"] == "database"]
    identities = database["identity"].drop_duplicates().tolist()
    first = database[database["identity"].isin(identities[:9])]
    gallery = Gallery.build(first, OFFLINE, backbone=lite0_backbone, cache_dir=cache, progress=False)
    fit = gallery.groups["LionData"].fit
    newcomer = database[database["identity"] == identities[9]]
    probe, rest = newcomer.iloc[[0]], newcomer  # the probe is one of the photos added
    before = gallery.identify(probe, cache_dir=cache, progress=False)
    assert identities[9] not in set(before.ranking.identities[0])
    added = gallery.add(rest, cache_dir=cache, progress=False)
    assert added["added"] == len(rest) and added["refitted"] == []
    assert gallery.groups["LionData"].fit is fit and gallery.groups["LionData"].index.size == len(first) + len(rest)
    after = gallery.identify(probe, cache_dir=cache, progress=False)
    assert after.ranking.identities[0, 0] == identities[9] and after.ranking.scores[0, 0] > 0.999
    assert gallery.add(rest, cache_dir=cache, progress=False)["skipped_duplicates"] == len(rest)  # same bytes
    # Grown by REFIT_GROWTH since the fit: refitted, and the fit says on how many photos.
    more = database[database["identity"].isin(identities[10:])]
    assert len(first) + len(rest) + len(more) >= (1 + REFIT_GROWTH) * len(first)
    assert gallery.add(more, cache_dir=cache, progress=False)["refitted"] == ["LionData"]
    assert gallery.groups["LionData"].fit.images == gallery.groups["LionData"].size


def test_single_identity_threshold_is_said_not_silent(lions, cache, lite0_backbone):
    database = lions[lions["split"] == "database"]
    one = database[database["identity"] == database["identity"].iloc[0]]
    gallery = Gallery.build(one, OFFLINE, backbone=lite0_backbone, cache_dir=cache, progress=False)
    assert gallery.groups["LionData"].fit.threshold == -np.inf
    assert any(
        "no new_individual threshold could be chosen" in note and "--threshold" in note for note in gallery.notes
    )


def test_ranking_from_the_nearest_photos_equals_ranking_over_all(lions, cache, lite0_backbone, monkeypatch):
    """A shallow neighbour search deepens where it found fewer than k identities."""
    gallery = Gallery.build(lions, OFFLINE, backbone=lite0_backbone, cache_dir=cache, progress=False)
    deep = gallery.identify(lions[lions["split"] == "query"], cache_dir=cache, progress=False)
    monkeypatch.setattr(group_module, "RANKING_DEPTH", 2)
    shallow = gallery.identify(lions[lions["split"] == "query"], cache_dir=cache, progress=False, top_k=5)
    np.testing.assert_array_equal(shallow.ranking.identities, deep.ranking.identities)
    np.testing.assert_allclose(shallow.ranking.scores, deep.ranking.scores)


def test_rank_neighbours_breaks_ties_like_a_full_sort():
    similarity = np.array([[0.5, 0.9, 0.5, 0.1, 0.9]])
    identities = np.array(["c", "b", "a", "a", "c"])
    full = rank_identities(similarity, identities, 3)
    order = np.array([[1, 4, 0, 2, 3]])
    top = rank_neighbours(order, similarity[:, order[0]], identities, 3)
    assert top.identities[0].tolist() == full.identities[0].tolist() == ["b", "c", "a"]
    assert top.best_images[0].tolist() == full.best_images[0].tolist() == [1, 4, 2]


def test_threshold_simulation_through_the_index_equals_the_dense_one():
    rng = np.random.default_rng(0)
    identities = np.repeat([f"i{k}" for k in range(30)], 5)
    centres = rng.normal(size=(30, 32))
    vectors = normalize(np.repeat(centres, 5, axis=0) + 0.8 * rng.normal(size=(150, 32)))
    index = VectorIndex.build(vectors)
    scores, columns = index.search(vectors, len(vectors))
    through_index = choose_threshold(Neighbours(np.arange(150), columns, scores), identities)
    dense = choose_threshold(Neighbours.from_dense(vectors @ vectors.T), identities)
    assert through_index.threshold == pytest.approx(dense.threshold, abs=1e-6)
    assert through_index.simulated_score == pytest.approx(dense.simulated_score)


def test_ivf_index_above_the_exact_limit_finds_the_neighbours_and_grows():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(200, 64))
    vectors = normalize(np.repeat(centres, 20, axis=0) + 0.5 * rng.normal(size=(4000, 64)))
    exact = VectorIndex.build(vectors)
    approximate = VectorIndex.build(vectors, exact_limit=1000)
    assert exact.exact and not approximate.exact
    _, truth = exact.search(vectors[:200], 10)
    _, found = approximate.search(vectors[:200], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    assert recall > 0.9
    np.testing.assert_allclose(approximate.vectors(np.arange(5)), vectors[:5], atol=1e-6)
    small = VectorIndex.build(vectors[:900], exact_limit=1000)
    small.add(vectors[900:1200], exact_limit=1000)  # outgrows the exact limit: rebuilt as IVF once
    assert not small.exact and small.size == 1200
    np.testing.assert_allclose(small.vectors(np.array([1100])), vectors[[1100]], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# command line


def test_cli_build_info_add_and_identify_against_a_gallery(lions, cache, tmp_path):
    database = lions[lions["split"] == "database"]
    identities = database["identity"].drop_duplicates().tolist()
    folder = tmp_path / "data"
    folder.mkdir()
    for name, rows in (
        ("first.csv", database[database["identity"].isin(identities[:10])]),
        ("more.csv", database[~database["identity"].isin(identities[:10])]),
    ):
        rows.assign(path=[os.path.relpath(p, folder) for p in rows["path"]]).to_csv(folder / name, index=False)
    runner, environment = CliRunner(), {"WILDREID_CACHE": str(cache)}
    built = runner.invoke(
        app,
        [
            "gallery",
            "build",
            str(folder / "first.csv"),
            "--out",
            str(tmp_path / "g"),
            "--preset",
            "offline",  # the fast preset (the default is fusion); a fusion query is refused below
            "--allow-outside-paths",
        ],
        env=environment,
    )
    assert built.exit_code == 0, built.output
    added = runner.invoke(
        app,
        [
            "gallery",
            "add",
            str(folder / "more.csv"),
            "--gallery",
            str(tmp_path / "g"),
            "--no-refit",
            "--allow-outside-paths",
        ],
        env=environment,
    )
    assert added.exit_code == 0, added.output
    assert "refitted: nothing" in added.output
    info = runner.invoke(app, ["gallery", "info", str(tmp_path / "g"), "--json"])
    record = json.loads(info.stdout)
    assert record["images"] == len(database) and record["groups"]["LionData"]["fitted_images"] < len(database)
    shown = runner.invoke(app, ["gallery", "info", str(tmp_path / "g")])  # a log is 80 columns wide
    assert max(map(len, shown.stdout.splitlines())) <= 80 and "…" not in shown.stdout
    fitted_at = record["groups"]["LionData"]["fitted_at"]
    assert f"{fitted_at[:10]} {fitted_at[11:16]}" in shown.stdout  # the date and time whole
    queries = tmp_path / "queries"
    queries.mkdir()
    for path in lions[lions["split"] == "query"]["path"].head(4):
        (queries / Path(path).name).write_bytes(Path(path).read_bytes())
    answered = runner.invoke(
        app,
        ["identify", str(queries), "--gallery", str(tmp_path / "g"), "--out", str(tmp_path / "run")],
        env=environment,
    )
    assert answered.exit_code == 0, answered.output
    candidates = pd.read_csv(tmp_path / "run" / "candidates.csv")
    assert len(candidates) == 4 and candidates["identity_1"].notna().all()
    wrong = runner.invoke(
        app,
        [
            "identify",
            str(queries),
            "--gallery",
            str(tmp_path / "g"),
            "--preset",
            "fusion",
            "--out",
            str(tmp_path / "run2"),
        ],
        env=environment,
    )
    said = " ".join(wrong.output.split())  # rich wraps lines at the terminal's width
    assert wrong.exit_code == 2 and "built with preset 'offline'" in said and "Traceback" not in said
    bad = runner.invoke(
        app,
        [
            "identify",
            str(queries),
            "--gallery",
            str(tmp_path / "g"),
            "--threshold",
            "nan",
            "--out",
            str(tmp_path / "run3"),
        ],
        env=environment,
    )
    assert bad.exit_code == 2 and "threshold" in bad.output


# ------------------------------------------------------------------------------------------------
# watch folder


@pytest.fixture(scope="module")
def saved_gallery(lions, cache, tmp_path_factory, lite0_backbone) -> Path:
    folder = tmp_path_factory.mktemp("watch") / "g"
    Gallery.build(
        lions[lions["split"] == "database"], OFFLINE, backbone=lite0_backbone, cache_dir=cache, progress=False
    ).save(folder)
    return folder


def test_watch_reads_settled_photos_once_and_reports_bad_ones(saved_gallery, lions, cache, tmp_path, lite0_backbone):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    photos = [Path(p) for p in lions[lions["split"] == "query"]["path"].head(3)]
    gallery = Gallery.load(saved_gallery, backbone=lite0_backbone)
    lines = []
    watcher = Watcher(incoming, out, gallery, cache_dir=cache, settle_seconds=1.0, report=lines.append)
    (incoming / "a.jpg").write_bytes(photos[0].read_bytes())
    data = photos[1].read_bytes()
    with open(incoming / "b.jpg", "wb") as growing:  # still being copied
        growing.write(data[: len(data) // 2])
        growing.flush()
        assert watcher.poll() == 0  # first sight: nothing is read yet
        time.sleep(0.5)
        assert watcher.poll() == 0  # not settled for a second yet
        growing.write(data[len(data) // 2 :])
    time.sleep(0.6)
    assert watcher.poll() == 1  # a.jpg; b.jpg changed since the last look
    assert watcher.done == {"a.jpg"}
    (incoming / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    deadline = time.time() + 10
    while len(watcher.done) + len(watcher.failed) < 3 and time.time() < deadline:
        watcher.poll()
        time.sleep(0.1)
    results = pd.read_csv(out / RESULTS, dtype=str, keep_default_na=False)
    assert sorted(results["image_id"]) == ["a.jpg", "b.jpg", "broken.jpg"]
    assert results.set_index("image_id").loc["b.jpg", "flags"] == ""  # read whole, not half
    assert results.set_index("image_id").loc["broken.jpg", "flags"] == "unreadable_image"
    assert any(line.startswith("skipped broken.jpg") for line in lines)
    assert list(results.columns[:7]) == [
        "image_id",
        "dataset",
        "prediction",
        "top1_score",
        "threshold",
        "flags",
        "error",
    ]
    assert watcher.poll() == 0 and len(pd.read_csv(out / RESULTS)) == 3  # nothing twice


def test_watch_killed_and_restarted_loses_no_photo_and_repeats_none(saved_gallery, lions, cache, tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    photos = lions[lions["split"] == "query"]["path"].tolist()[:40]
    for number, path in enumerate(photos):
        (incoming / f"{number:03d}.jpg").write_bytes(Path(path).read_bytes())
    old = time.time() - 60
    for file in incoming.iterdir():
        os.utime(file, (old, old))
    command = [
        sys.executable,
        "-m",
        "wildreid",
        "watch",
        str(incoming),
        "--out",
        str(out),
        "--gallery",
        str(saved_gallery),
        "--settle-seconds",
        "0",
        "--poll-seconds",
        "0.1",
        "--cache-dir",
        str(cache),
    ]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        if (out / RESULTS).is_file() and len((out / RESULTS).read_text().splitlines()) > 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    recorded = len((out / RESULTS).read_text().splitlines()) - 1
    assert 0 < recorded < len(photos), "the watcher was not killed mid-way"
    with open(out / RESULTS, "ab") as torn:  # as if killed inside a write
        torn.write(b"999.jpg,LionData,Lion")
    finished = subprocess.run(command + ["--once"], capture_output=True, text=True, env=environment, timeout=300)
    assert finished.returncode == 0, finished.stderr
    results = pd.read_csv(out / RESULTS, dtype=str)
    assert sorted(results["image_id"]) == sorted(f"{n:03d}.jpg" for n in range(len(photos)))


class _CountingGallery:
    """Stands in for a gallery in the watch tests that are about which files are read: every path
    it is asked about is kept; a photo whose bytes start with b"bad" is unreadable."""

    groups = {"LionData": None}

    def __init__(self, unreadable=lambda data: data.startswith(b"bad")):
        self.asked: list[str] = []
        self.unreadable = unreadable

    def identify(self, queries, cache_dir=None, progress=False):
        self.asked += list(queries["path"])
        bad = [self.unreadable(Path(p).read_bytes()) for p in queries["path"]]
        rows = pd.DataFrame(
            {
                "image_id": queries["image_id"].to_numpy(),
                "dataset": "LionData",
                "prediction": [NEW_INDIVIDUAL if b else "Lion7" for b in bad],
                "top1_score": [np.nan if b else 0.9 for b in bad],
                "threshold": 0.5,
                "flags": ["unreadable_image" if b else "" for b in bad],
                "error": [f"{p}: cannot decode image" if b else "" for p, b in zip(queries["path"], bad)],
            }
        )
        return type("Result", (), {"candidates": rows})()


def _aged(*paths: Path) -> None:
    """Written a minute ago: settled as soon as seen twice."""
    old = time.time() - 60
    for path in paths:
        os.utime(path, (old, old), follow_symlinks=False)


def test_watch_refuses_links_leading_out_before_opening_them(tmp_path, monkeypatch):
    incoming, outside, out = tmp_path / "incoming", tmp_path / "elsewhere", tmp_path / "out"
    incoming.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"photo taken elsewhere")
    (incoming / "a.jpg").write_bytes(b"photo a")
    (incoming / "sub").mkdir()
    (incoming / "sub" / "b.jpg").write_bytes(b"photo b")
    (incoming / "inside.jpg").symlink_to(incoming / "sub" / "b.jpg")  # stays inside: read
    (incoming / "out.jpg").symlink_to(outside / "secret.jpg")
    (incoming / "passwd.jpg").symlink_to("/etc/passwd")
    (incoming / "loop.jpg").symlink_to(incoming / "loop.jpg")
    _aged(*incoming.rglob("*"))
    opened: list[str] = []
    real_open = __import__("io").open

    def spying(file, *args, **kwargs):
        opened.append(os.path.realpath(file) if isinstance(file, (str, Path)) else str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("io.open", spying)
    gallery, lines = _CountingGallery(), []
    watcher = Watcher(incoming, out, gallery, settle_seconds=1.0, report=lines.append)
    watcher.run(0, once=True)
    assert not {str(outside / "secret.jpg"), "/etc/passwd"} & set(opened)
    assert sorted(map(os.path.basename, gallery.asked)) == ["a.jpg", "b.jpg"]  # inside.jpg: the same photo
    results = pd.read_csv(out / RESULTS, dtype=str, keep_default_na=False)
    assert sorted(results["image_id"]) == ["a.jpg", "inside.jpg", "sub/b.jpg"]
    refused = [line for line in lines if line.startswith("refused")]
    assert len(refused) == 3, lines  # each once, though seen at every poll
    assert any(line.startswith("refused out.jpg: it leads to " + str(outside / "secret.jpg")) for line in refused)
    assert all("--allow-outside-paths" in line for line in refused if "loop" not in line)
    assert any(line.startswith("refused loop.jpg: a symbolic link that loops") for line in refused)

    # The user's explicit choice, from the command line: the outside photo is read.
    monkeypatch.setattr(Gallery, "load", classmethod(lambda cls, folder, device=None: gallery))
    result = CliRunner().invoke(
        app,
        ["watch", str(incoming), "--out", str(out), "--gallery", str(tmp_path), "--once"]
        + ["--settle-seconds", "0", "--poll-seconds", "0", "--allow-outside-paths"],
    )
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / RESULTS, dtype=str, keep_default_na=False)
    assert sorted(results["image_id"]) == ["a.jpg", "inside.jpg", "out.jpg", "passwd.jpg", "sub/b.jpg"]
    assert gallery.asked[-2:] == [str(outside / "secret.jpg"), "/etc/passwd"]
    said = " ".join(result.output.split())
    assert "loop.jpg: a symbolic link that loops" in said
    assert "identifying what is there, then stopping" in said and "Ctrl-C" not in said  # --once
    assert "2 photo(s) answered in this run, 0 unreadable (retried when they change), 1 refused" in said


def test_watch_retries_a_stalled_copy_once_it_changes(tmp_path):
    """A copy that stalls longer than --settle-seconds is read and fails; it is read again once
    its size or time stamp changes, and not before (also after a restart). No sleeps: the clock
    is the test's."""
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    later = time.time() + 60  # every file is settle_seconds old already
    gallery = _CountingGallery(unreadable=lambda data: not data.endswith(b"END"))
    watcher = Watcher(incoming, out, gallery, settle_seconds=5.0, report=[].append, clock=lambda: later)
    stalled, touched = incoming / "stalled.jpg", incoming / "touched.jpg"
    stalled.write_bytes(b"the first half")  # and then the copy stalls
    touched.write_bytes(b"never whole")
    assert watcher.poll() == 0  # first sight
    assert watcher.poll() == 2  # unchanged since: read, unreadable
    assert set(watcher.failed) == {"stalled.jpg", "touched.jpg"} and not watcher.done
    assert watcher.poll() == 0 and watcher.poll() == 0 and len(gallery.asked) == 2  # not while unchanged
    with open(stalled, "ab") as copy:
        copy.write(b", the second half END")  # the copy goes on
    stamp = touched.stat().st_mtime_ns + 10**9
    os.utime(touched, ns=(stamp, stamp))  # the same size, written again
    assert watcher.poll() == 0  # changed: it must settle again
    assert watcher.poll() == 2
    results = pd.read_csv(out / RESULTS, dtype=str, keep_default_na=False)
    assert list(results["image_id"]) == ["stalled.jpg", "touched.jpg"] * 2
    assert list(results["flags"]) == ["unreadable_image", "unreadable_image", "", "unreadable_image"]
    answered = results.iloc[2:].set_index("image_id")
    assert answered.loc["stalled.jpg", "flags"] == "" and answered.loc["stalled.jpg", "prediction"] == "Lion7"
    assert answered.loc["stalled.jpg", "sha256"] == hashlib.sha256(stalled.read_bytes()).hexdigest()
    assert watcher.done == {"stalled.jpg"} and set(watcher.failed) == {"touched.jpg"}

    # After a restart the failure is known by its bytes: the same bytes are not read again...
    again = Watcher(incoming, out, gallery, settle_seconds=5.0, report=[].append, clock=lambda: later)
    assert again.poll() == 0 and again.poll() == 0 and len(gallery.asked) == 4
    touched.write_bytes(b"whole at last END")  # ...other bytes are
    assert again.poll() == 0 and again.poll() == 1 and again.done == {"stalled.jpg", "touched.jpg"}
    assert len(pd.read_csv(out / RESULTS)) == 5


def test_watch_keys_photos_by_content_a_renamed_photo_is_not_identified_twice(tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    (incoming / "a.jpg").write_bytes(b"photo a")
    _aged(incoming / "a.jpg")
    gallery, lines = _CountingGallery(), []
    watcher = Watcher(incoming, out, gallery, settle_seconds=1.0, report=lines.append)
    watcher.run(0, once=True)
    (incoming / "a.jpg").rename(incoming / "renamed.jpg")
    (incoming / "c1.jpg").write_bytes(b"photo c")  # two copies of one photo in one batch
    (incoming / "c2.jpg").write_bytes(b"photo c")
    _aged(*incoming.iterdir())
    watcher.run(0, once=True)
    assert sorted(map(os.path.basename, gallery.asked)) == ["a.jpg", "c1.jpg"]
    results = pd.read_csv(out / RESULTS, dtype=str, keep_default_na=False).set_index("image_id")
    assert list(results.columns[-2:]) == ["sha256", "same_photo"]
    assert list(results.index) == ["a.jpg", "c1.jpg", "c2.jpg", "renamed.jpg"]
    assert results.loc["renamed.jpg", "same_photo"] == "a.jpg" and results.loc["c2.jpg", "same_photo"] == "c1.jpg"
    assert results.loc["a.jpg", "same_photo"] == "" and results.loc["c1.jpg", "same_photo"] == ""
    assert (
        results.loc["renamed.jpg", "sha256"] == results.loc["a.jpg", "sha256"] == hashlib.sha256(b"photo a").hexdigest()
    )
    assert results.loc["renamed.jpg", "prediction"] == results.loc["a.jpg", "prediction"] == "Lion7"
    assert "renamed.jpg: the same photo as a.jpg (Lion7)" in lines

    # After a restart the answered photos are known by their bytes too.
    (incoming / "copy.jpg").write_bytes(b"photo a")
    _aged(incoming / "copy.jpg")
    Watcher(incoming, out, gallery, settle_seconds=1.0, report=lines.append).run(0, once=True)
    assert len(gallery.asked) == 2
    assert pd.read_csv(out / RESULTS, dtype=str).iloc[-1][["image_id", "same_photo"]].tolist() == ["copy.jpg", "a.jpg"]

    # A results.csv of an earlier wildreid (no sha256 column) is refused, not extended.
    old = tmp_path / "old"
    old.mkdir()
    (old / RESULTS).write_text(
        "image_id,dataset,prediction,top1_score,threshold,flags,error\nx.jpg,L,Lion1,0.9,0.5,,\n"
    )
    before = (old / RESULTS).read_bytes()
    with pytest.raises(ValueError, match="written by an earlier wildreid, without the 'sha256' column"):
        Watcher(incoming, old, gallery, settle_seconds=1.0, report=lines.append)
    assert (old / RESULTS).read_bytes() == before


def test_watch_refuses_a_results_file_not_its_own_and_an_out_that_is_a_file(tmp_path, monkeypatch):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    (incoming / "a.jpg").write_bytes(b"photo a")
    _aged(incoming / "a.jpg")
    gallery = _CountingGallery()
    monkeypatch.setattr(Gallery, "load", classmethod(lambda cls, folder, device=None: gallery))

    def watch(destination):
        command = ["watch", str(incoming), "--out", str(destination), "--gallery", str(tmp_path), "--once"]
        result = CliRunner().invoke(app, command + ["--settle-seconds", "0", "--poll-seconds", "0"])
        return result.exit_code, " ".join(result.output.split())

    out.mkdir()
    (out / RESULTS).write_text("name,score\nx,1")  # someone else's file, without a last newline
    code, message = watch(out)  # was "error: image_id", after cutting off the last line
    assert code == 2 and f"{out / RESULTS}: not a results file of `wildreid watch`" in message
    assert "Give another --out" in message and "Traceback" not in message
    assert (out / RESULTS).read_text() == "name,score\nx,1" and not gallery.asked  # refused first

    # Ours in form, but written with other settings: no line of another width is appended.
    header = "image_id,dataset,prediction,top1_score,threshold,flags,error,identity_2,sha256,same_photo\n"
    (out / RESULTS).write_text(header)
    code, message = watch(out)
    assert code == 2 and "its columns are not the ones this run writes" in message and str(out / RESULTS) in message
    assert (out / RESULTS).read_text() == header

    (tmp_path / "notes.txt").write_text("mine")
    code, message = watch(tmp_path / "notes.txt")  # was "...: File exists"
    assert code == 2 and f"{tmp_path / 'notes.txt'}: is a file, not a folder" in message
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------
# two writers


def test_a_second_writer_of_a_gallery_is_refused_at_once_with_the_holder_named(
    saved_gallery, lions, tmp_path, monkeypatch
):
    """add, refit and build onto a gallery that another run is writing: refused before any work,
    with that run's pid and host, and the gallery left as it was."""
    import socket

    from wildreid.util.lock import exclusive

    def no_work(*args, **kwargs):
        raise AssertionError("the gallery was read or described while another run was writing it")

    monkeypatch.setattr(Gallery, "load", no_work)
    monkeypatch.setattr(Gallery, "build", no_work)
    photos = tmp_path / "photos.csv"
    lions[lions["split"] == "database"].head(3).to_csv(photos, index=False)
    before = (saved_gallery / "gallery.json").read_bytes()
    runner = CliRunner()
    commands = [
        ["gallery", "add", str(photos), "--gallery", str(saved_gallery), "--allow-outside-paths"],
        ["gallery", "refit", str(saved_gallery)],
        ["gallery", "build", str(photos), "--out", str(saved_gallery), "--preset", "offline", "--allow-outside-paths"],
    ]
    with exclusive(saved_gallery, "the gallery"):  # as another `gallery add` holds it
        for command in commands:
            refused = runner.invoke(app, command)
            said = " ".join(refused.output.split())
            assert refused.exit_code != 0 and "Traceback" not in said, (command, refused.output)
            assert f"is being written by pid {os.getpid()} on {socket.gethostname()}" in said, command
    assert (saved_gallery / "gallery.json").read_bytes() == before


# ------------------------------------------------------------------------------------------------
# damaged and hand-edited galleries


def _copy(gallery: Path, where: Path, *, checksums: bool = True) -> Path:
    """A copy of a saved gallery; without ``checksums``, as an earlier wildreid saved it."""
    import shutil

    copy = where / "g"
    shutil.copytree(gallery, copy)
    if not checksums:
        record = json.loads((copy / "gallery.json").read_text())
        del record["files"], record["record_sha256"]
        (copy / "gallery.json").write_text(json.dumps(record, indent=2))
    return copy


def _edit_record(folder: Path, change) -> None:
    record = json.loads((folder / "gallery.json").read_text())
    change(record)
    (folder / "gallery.json").write_text(json.dumps(record, indent=2))


def _resort(folder: Path) -> None:
    """images.csv sorted by identity, as a spreadsheet would save it: the same rows, bytes apart."""
    table = pd.read_csv(folder / "images.csv", dtype=str, keep_default_na=False)
    table.sort_values(["identity", "image_id"], ascending=False).to_csv(folder / "images.csv", index=False)


def test_a_gallery_whose_images_csv_was_resorted_is_refused_not_answered_differently(
    saved_gallery, lions, cache, tmp_path, lite0_backbone
):
    folder = _copy(saved_gallery, tmp_path)
    assert set(json.loads((folder / "gallery.json").read_text())["files"]) >= {
        "images.csv",
        "failures.csv",
        "group-0/vectors.faiss",
        "group-0/askable.npy",
    }
    _resort(folder)
    with pytest.raises(GalleryError, match=r"images\.csv: changed since the gallery was saved.*gallery build"):
        Gallery.load(folder, backbone=lite0_backbone)
    # re-indenting gallery.json (an editor's "format document") changes nothing it says
    fresh = _copy(saved_gallery, tmp_path / "other")
    (fresh / "gallery.json").write_text(json.dumps(json.loads((fresh / "gallery.json").read_text()), indent=4))
    assert Gallery.load(fresh, backbone=lite0_backbone).file_notes == []


def test_a_gallery_saved_before_checksums_is_read_with_a_note_and_gets_them_when_saved(
    saved_gallery, tmp_path, lite0_backbone
):
    folder = _copy(saved_gallery, tmp_path, checksums=False)
    gallery = Gallery.load(folder, backbone=lite0_backbone)
    assert any("did not record checksums" in note for note in gallery.notes)
    gallery.save(folder)
    assert gallery.file_notes == []  # what it says about its files no longer holds
    again = Gallery.load(folder, backbone=lite0_backbone)
    assert again.file_notes == [] and "record_sha256" in json.loads((folder / "gallery.json").read_text())


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _delete_group_folder(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder / "group-0")


def _group_folder_as_a_file(folder: Path) -> None:
    _delete_group_folder(folder)
    (folder / "group-0").write_text("not a folder")


DAMAGE = {
    "truncated-vectors": (lambda g: _truncate(g / "group-0" / "vectors.faiss"), "vectors.faiss"),
    "empty-vectors": (lambda g: (g / "group-0" / "vectors.faiss").write_bytes(b""), "vectors.faiss"),
    "deleted-vectors": (lambda g: (g / "group-0" / "vectors.faiss").unlink(), "vectors.faiss"),
    "truncated-askable": (lambda g: _truncate(g / "group-0" / "askable.npy"), "askable.npy"),
    "deleted-group-folder": (_delete_group_folder, "group-0"),
    "group-folder-is-a-file": (_group_folder_as_a_file, "group-0"),
    "deleted-images": (lambda g: (g / "images.csv").unlink(), "images.csv"),
    "empty-images": (lambda g: (g / "images.csv").write_text(""), "images.csv"),
    "resorted-images": (_resort, "images.csv"),
    "fit-null": (lambda g: _edit_record(g, lambda r: r["group_files"]["LionData"].update(fit=None)), "gallery.json"),
    "threshold-banana": (
        lambda g: _edit_record(g, lambda r: r["group_files"]["LionData"]["fit"].update(threshold="banana")),
        "gallery.json",
    ),
    "no-preset-settings": (lambda g: _edit_record(g, lambda r: r.pop("preset_settings")), "gallery.json"),
    "format-2": (lambda g: _edit_record(g, lambda r: r.update(format_version=2)), "format 2"),
    "not-json": (lambda g: (g / "gallery.json").write_text("{ half"), "gallery.json"),
}


# A gallery saved without checksums cannot tell a re-sorted images.csv (it says so when loaded).
DAMAGED = [(damage, True) for damage in DAMAGE] + [(damage, False) for damage in DAMAGE if damage != "resorted-images"]


@pytest.mark.parametrize(
    ("damage", "checksums"), DAMAGED, ids=[f"{d}-{'saved-now' if c else 'before-checksums'}" for d, c in DAMAGED]
)
def test_a_damaged_gallery_is_one_message_from_load_info_and_check(
    damage, checksums, saved_gallery, tmp_path, lite0_backbone
):
    from wildreid.gallery.errors import UnreadableGallery

    folder = _copy(saved_gallery, tmp_path, checksums=checksums)
    harm, named = DAMAGE[damage]
    harm(folder)
    with pytest.raises(UnreadableGallery) as refused:
        Gallery.load(folder, backbone=lite0_backbone)
    message = str(refused.value)
    assert named in message and ("gallery build" in message or "Upgrade wildreid" in message), message
    runner = CliRunner()
    for command in (["gallery", "info", str(folder)], ["gallery", "check", str(folder)]):
        said = runner.invoke(app, command)
        assert said.exit_code != 0 and isinstance(said.exception, SystemExit), (command, said.output)
        text = "".join(said.output.split())  # rich wraps lines at the terminal's width
        assert "Traceback" not in text and named.replace(" ", "") in text, (command, said.output)
        assert text.count("error:") + text.count("damaged:") == 1, (command, said.output)


# ------------------------------------------------------------------------------------------------
# edge cases of building, growing and querying


def test_the_same_photo_under_another_identity_is_a_said_label_conflict(lions, cache, lite0_backbone):
    database = lions[lions["split"] == "database"]
    gallery = Gallery.build(database.head(12), OFFLINE, backbone=lite0_backbone, cache_dir=cache, progress=False)
    photo = database.iloc[[0]]
    again = photo.assign(image_id="copy.jpg", identity="SomeoneElse")
    counts = gallery.add(again, cache_dir=cache, progress=False)
    assert counts["added"] == 0 and counts["skipped_duplicates"] == 1
    [conflict] = counts["label_conflicts"]
    assert "copy.jpg" in conflict and "SomeoneElse" in conflict
    assert photo["image_id"].iloc[0] in conflict and photo["identity"].iloc[0] in conflict
    assert gallery.add(photo, cache_dir=cache, progress=False)["label_conflicts"] == []  # same label: no word


def test_build_refuses_a_file_or_another_folder_as_out_before_describing_anything(lions, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("photos were described before --out was checked")

    monkeypatch.setattr(Gallery, "build", no_work)
    photos = tmp_path / "photos.csv"
    lions[lions["split"] == "database"].head(3).to_csv(photos, index=False)
    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-folder" / "notes.txt").write_text("mine")
    for out, said in ((tmp_path / "a-file", "is a file"), (tmp_path / "a-folder", "is not a gallery")):
        command = ["gallery", "build", str(photos), "--out", str(out), "--preset", "offline", "--allow-outside-paths"]
        refused = CliRunner().invoke(app, command)
        assert refused.exit_code == 2 and isinstance(refused.exception, SystemExit), refused.output
        assert said in " ".join(refused.output.split())
    assert (tmp_path / "a-file").read_text() == "mine" and (tmp_path / "a-folder" / "notes.txt").read_text() == "mine"


def test_identify_refuses_options_the_gallery_fixed_and_accepts_its_own(saved_gallery, lions, cache, tmp_path):
    queries = tmp_path / "queries"
    queries.mkdir()
    for path in lions[lions["split"] == "query"]["path"].head(2):
        (queries / Path(path).name).write_bytes(Path(path).read_bytes())
    runner, environment = CliRunner(), {"WILDREID_CACHE": str(cache)}
    base = ["identify", str(queries), "--gallery", str(saved_gallery)]
    for option, said in (
        (["--backbone", "megadescriptor-t-224"], "--backbone megadescriptor-t-224: the gallery"),
        (["--all-datasets"], "--all-datasets: the gallery"),
        (["--precision", "bf16"], "fixes how photos are described"),
    ):
        refused = runner.invoke(app, [*base, *option, "--out", str(tmp_path / "refused")], env=environment)
        text = " ".join(refused.output.split())
        assert refused.exit_code == 2 and said in text and "Traceback" not in text, (option, refused.output)
    accepted = runner.invoke(
        app,
        [*base, "--backbone", "efficientnet-lite0", "--batch-size", "4", "--out", str(tmp_path / "run")],
        env=environment,
    )
    assert accepted.exit_code == 0, accepted.output
    assert len(pd.read_csv(tmp_path / "run" / "candidates.csv")) == 2
