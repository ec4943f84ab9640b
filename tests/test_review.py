"""Review that learns, in the catalogue (wildreid.catalog.changes): a group confirmed in one
action, merges, splits, pair answers, the history of every change and undo that takes a change
back exactly (nothing lost, nothing left behind)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from wildreid.catalog.camtrap import CamtrapSettings, sightings
from wildreid.catalog.changes import (
    AlreadyAnswered,
    answer_counts,
    answer_pair,
    confirm_group,
    entry_details,
    merge_individuals,
    merged_into,
    pair_answers,
    split_group,
    split_individual,
    undo_last,
)
from wildreid.catalog.importer import import_dataset
from wildreid.catalog.schema import migrate
from wildreid.catalog.store import AlreadyDecided, Catalog, CatalogError
from wildreid.data.dataset import load_dataset

INDIVIDUALS = ["NyalaData_32", "NyalaData_41", "NyalaData_7"]
TABLES = ("individuals", "images", "descriptors", "queries", "decisions", "pair_answers")


@pytest.fixture(scope="module")
def nyala(shared_data):
    return load_dataset(shared_data / "NyalaData")


@pytest.fixture
def catalog(tmp_path, nyala):
    """Three individuals with three photos each, and six uploaded photos waiting (of animals not
    in the catalogue), as the web app's jobs leave them."""
    database = nyala.database
    chosen = database[database["identity"].isin(INDIVIDUALS)].groupby("identity").head(3)
    with Catalog(tmp_path / "c.sqlite") as catalog:
        import_dataset(catalog, nyala.subset(nyala.table["image_id"].isin(chosen["image_id"])))
        strangers = nyala.table[~nyala.table["identity"].isin(INDIVIDUALS)].head(6)
        for path in strangers["path"]:
            query = catalog.add_query(Path(path).read_bytes(), "jpg", dataset="NyalaData", original_name="x.jpg")
            catalog.set_query_result(
                query["id"],
                {
                    "prediction": "new_individual",
                    "threshold": 0.7,
                    "preset": "offline",
                    "candidates": [{"rank": 1, "individual_id": "NyalaData_41", "score": 0.5}],
                },
            )
        yield catalog


def dump(catalog: Catalog) -> dict:
    """Every row of every table a reviewer's change touches (history aside)."""
    return {
        table: [tuple(row) for row in catalog.db.execute(f"SELECT * FROM {table} ORDER BY 1, 2")] for table in TABLES
    }


def waiting(catalog: Catalog) -> list[int]:
    return [q["id"] for q in catalog.queries(status=["ready", "skipped"])]


def test_a_group_confirmed_as_new_then_undone_leaves_the_catalogue_as_it_was(catalog):
    first, second, third = waiting(catalog)[:3]
    before = dump(catalog)
    entry = confirm_group(catalog, [first, second, third], reviewer="alice", preset="offline", name="Torn Ear")
    created = entry["individual_id"]
    assert created == "NyalaData_new0001" and catalog.individual(created)["name"] == "Torn Ear"
    photos = catalog.images(created)
    assert len(photos) == 3 and {p["source_image_id"] for p in photos} == {f"query-{q}" for q in (first, second, third)}
    decisions = [d for d in catalog.decisions() if d["individual_id"] == created]
    assert [(d["outcome"], d["reviewer"]) for d in decisions] == [("new", "alice")] * 3
    assert {catalog.query(q)["status"] for q in (first, second, third)} == {"new"}
    assert entry["action"] == "confirm_group" and entry["reviewer"] == "alice" and "3 photos" in entry["summary"]
    assert entry_details(catalog.history_entry(entry["id"]))["individual_id"] == created
    # the camtrap export counts them as a reviewer's classifications
    rows = {r["media_id"]: r for r in sightings(catalog, CamtrapSettings())}
    assert {(rows[f"image-{p['id']}"]["method"], rows[f"image-{p['id']}"]["by"]) for p in photos} == {
        ("human", "alice")
    }

    signature = catalog.images_signature()
    undone = undo_last(catalog, reviewer="bob", expected=entry["id"])
    assert undone["id"] == entry["id"] and undone["undone_by"] == "bob" and undone["undone_at"]
    assert dump(catalog) == before  # photos waiting again, the individual gone, nothing else changed
    assert catalog.individual(created) is None and set(waiting(catalog)) >= {first, second, third}
    assert catalog.images_signature()[2] > signature[2]  # a gallery in memory sees that photos left
    assert catalog.check().ok
    assert catalog.history()[0]["undone_by"] == "bob"  # the record stays
    with pytest.raises(CatalogError, match="Nothing to undo"):
        undo_last(catalog, reviewer="bob")


def test_a_group_confirmed_as_a_known_individual(catalog):
    group = waiting(catalog)[:2]
    photos_before = len(catalog.images("NyalaData_41"))
    confirm_group(catalog, group, reviewer="alice", preset="offline", individual_id="NyalaData_41")
    assert len(catalog.images("NyalaData_41")) == photos_before + 2
    assert [d["outcome"] for d in catalog.decisions() if d["query_id"] in group] == ["match", "match"]
    before = dump(catalog)
    with pytest.raises(AlreadyDecided):  # one of them filed already: nothing of the group is filed
        confirm_group(catalog, [waiting(catalog)[0], group[0]], reviewer="bob", preset="offline")
    catalog.add_individual("elsewhere", "OtherStudy")
    with pytest.raises(CatalogError, match="belongs to dataset 'OtherStudy'"):
        confirm_group(catalog, waiting(catalog)[:2], reviewer="bob", preset="offline", individual_id="elsewhere")
    with pytest.raises(CatalogError, match="does not exist"):
        confirm_group(catalog, waiting(catalog)[:2], reviewer="bob", preset="offline", individual_id="nobody")
    with pytest.raises(CatalogError, match="individual 'None' does not exist"):
        catalog.decide(waiting(catalog)[0], "match", reviewer="bob", preset="offline")
    assert dump(catalog)["images"] == before["images"] and dump(catalog)["decisions"] == before["decisions"]


def test_merge_then_undo_gives_both_individuals_back_with_their_own_photos(catalog):
    query = waiting(catalog)[0]
    catalog.decide(query, "match", reviewer="alice", preset="offline", individual_id="NyalaData_7")
    catalog.update_individual("NyalaData_7", name="Scar", reviewer="alice")
    before = dump(catalog)
    own = {p["id"] for p in catalog.images("NyalaData_7")}
    entry = merge_individuals(catalog, "NyalaData_32", "NyalaData_7", reviewer="bob")
    assert catalog.individual("NyalaData_7") is None
    assert own <= {p["id"] for p in catalog.images("NyalaData_32")}
    assert catalog.decisions(query_id=query)[0]["individual_id"] == "NyalaData_32"
    assert "NyalaData_7 (“Scar”) merged into NyalaData_32: 4 photos moved" == entry["summary"]
    assert merged_into(catalog, "NyalaData_7")["into"] == "NyalaData_32"
    assert catalog.check().ok

    undo_last(catalog, reviewer="bob", expected=entry["id"])
    assert dump(catalog) == before
    assert {p["id"] for p in catalog.images("NyalaData_7")} == own and catalog.individual("NyalaData_7")[
        "name"
    ] == "Scar"
    assert merged_into(catalog, "NyalaData_7") is None
    # the edit before it is the next to undo, then the decision
    assert undo_last(catalog, reviewer="bob")["action"] == "edit" and catalog.individual("NyalaData_7")["name"] == ""
    assert undo_last(catalog, reviewer="bob")["action"] == "decide" and catalog.query(query)["status"] == "ready"

    catalog.add_individual("elsewhere", "OtherStudy")
    with pytest.raises(CatalogError, match="only individuals of one dataset"):
        merge_individuals(catalog, "NyalaData_32", "elsewhere", reviewer="bob")
    with pytest.raises(CatalogError, match="twice"):
        merge_individuals(catalog, "NyalaData_32", "NyalaData_32", reviewer="bob")


def test_split_an_individual_then_undo(catalog):
    query = waiting(catalog)[0]
    catalog.decide(query, "match", reviewer="alice", preset="offline", individual_id="NyalaData_41")
    moved = [p["id"] for p in catalog.images("NyalaData_41") if p["source"] == "review"]
    before = dump(catalog)
    entry = split_individual(catalog, "NyalaData_41", moved, reviewer="carol", name="the stranger")
    assert [p["id"] for p in catalog.images(entry["individual_id"])] == moved
    assert catalog.decisions(query_id=query)[0]["individual_id"] == entry["individual_id"]  # its decision follows
    assert len(catalog.images("NyalaData_41")) == 3
    undo_last(catalog, reviewer="carol")
    assert dump(catalog) == before
    everything = [p["id"] for p in catalog.images("NyalaData_41")]
    for chosen in ([], everything, [10_000]):
        with pytest.raises(CatalogError, match="split"):
            split_individual(catalog, "NyalaData_41", chosen, reviewer="carol")


def test_a_pair_is_answered_once(catalog):
    a, b, c, d = waiting(catalog)[:4]
    first = answer_pair(catalog, dataset="NyalaData", query_id=a, other_query_id=b, answer="same", reviewer="alice")
    assert first["repeated"] is False
    before = dump(catalog)
    for answer in ("same", "cant_tell"):  # the same again, either way round, or no opinion: nothing stored
        again = answer_pair(catalog, dataset="NyalaData", query_id=b, other_query_id=a, answer=answer, reviewer="bob")
        assert again["repeated"] is True and again["id"] == first["id"] and again["reviewer"] == "alice"
    with pytest.raises(AlreadyAnswered, match=r"already answered \"same animal\" by alice .*undo that change first"):
        answer_pair(catalog, dataset="NyalaData", query_id=a, other_query_id=b, answer="different", reviewer="carol")
    assert dump(catalog) == before
    # a known individual's pair, and a split's "different", count the same way
    answer_pair(catalog, dataset="NyalaData", query_id=c, individual_id="NyalaData_7", answer="different", reviewer="x")
    with pytest.raises(AlreadyAnswered):
        answer_pair(catalog, dataset="NyalaData", query_id=c, individual_id="NyalaData_7", answer="same", reviewer="y")
    split_group(catalog, dataset="NyalaData", moved=[d], kept=[a], reviewer="x")
    with pytest.raises(AlreadyAnswered, match="moved out"):
        answer_pair(catalog, dataset="NyalaData", query_id=a, other_query_id=d, answer="same", reviewer="y")
    # "can't tell" decides nothing: a reviewer who can tell may still answer
    answer_pair(catalog, dataset="NyalaData", query_id=b, other_query_id=c, answer="cant_tell", reviewer="x")
    tells = answer_pair(catalog, dataset="NyalaData", query_id=c, other_query_id=b, answer="same", reviewer="y")
    assert tells["repeated"] is False
    with pytest.raises(AlreadyAnswered):
        answer_pair(catalog, dataset="NyalaData", query_id=b, other_query_id=c, answer="different", reviewer="z")


def test_pair_answers_and_group_splits_are_stored_counted_and_undone(catalog):
    a, b, c, d = waiting(catalog)[:4]
    before = dump(catalog)
    same = answer_pair(
        catalog, dataset="NyalaData", query_id=a, other_query_id=b, answer="same", reviewer="alice", settled=3
    )
    answer_pair(
        catalog,
        dataset="NyalaData",
        query_id=c,
        individual_id="NyalaData_7",
        answer="different",
        reviewer="alice",
        probability=0.4,
        settled=1,
    )
    answer_pair(catalog, dataset="NyalaData", query_id=a, other_query_id=d, answer="cant_tell", reviewer="bob")
    split = split_group(catalog, dataset="NyalaData", moved=[c, d], kept=[a, b], reviewer="bob")
    stored = pair_answers(catalog, "NyalaData")
    assert [(r["answer"], r["source"]) for r in stored[:3]] == [
        ("same", "question"),
        ("different", "question"),
        ("cant_tell", "question"),
    ]
    assert {(r["query_id"], r["other_query_id"]) for r in stored[3:]} == {(c, a), (c, b), (d, a), (d, b)}
    assert {r["history_id"] for r in stored[3:]} == {split["id"]}
    assert entry_details(catalog.history_entry(same["id"]))["settled"] == 3
    assert answer_counts(catalog, "NyalaData") == {"answers": 3, "settled_per_answer": 2.0}  # (3 + 1) / 2 known
    assert "same animal" in same["summary"]

    assert undo_last(catalog, reviewer="bob")["action"] == "split_group"
    assert len(pair_answers(catalog, "NyalaData")) == 3
    for _ in range(3):
        undo_last(catalog, reviewer="bob")
    assert dump(catalog) == before

    with pytest.raises(CatalogError, match="not one of"):
        answer_pair(catalog, dataset="NyalaData", query_id=a, other_query_id=b, answer="maybe", reviewer="x")
    with pytest.raises(CatalogError, match="itself"):
        answer_pair(catalog, dataset="NyalaData", query_id=a, other_query_id=a, answer="same", reviewer="x")
    confirm_group(catalog, [b], reviewer="x", preset="offline")
    with pytest.raises(AlreadyDecided):  # a photo filed since cannot be asked about
        answer_pair(catalog, dataset="NyalaData", query_id=a, other_query_id=b, answer="same", reviewer="x")
    with pytest.raises(CatalogError, match="not none or all"):
        split_group(catalog, dataset="NyalaData", moved=[a], kept=[a], reviewer="x")


def test_undo_refuses_what_it_cannot_take_back_exactly(catalog, nyala):
    entry = confirm_group(catalog, waiting(catalog)[:2], reviewer="alice", preset="offline")
    with pytest.raises(CatalogError, match="not the one you saw"):
        undo_last(catalog, reviewer="bob", expected=entry["id"] - 1)
    # A photo imported into the new individual outside the review: undo would orphan it.
    extra = Path(nyala.table[~nyala.table["identity"].isin(INDIVIDUALS)]["path"].iloc[-1])  # not uploaded
    assert catalog.add_image(extra.read_bytes(), "jpg", entry["individual_id"], source="import")[1]
    before = dump(catalog)
    with pytest.raises(CatalogError, match="Cannot undo .* rows added since refer to"):
        undo_last(catalog, reviewer="bob")
    assert dump(catalog) == before and catalog.last_change()["id"] == entry["id"]
    # A row changed by hand since: reported, nothing undone.
    catalog.db.execute("UPDATE individuals SET notes = 'edited by hand' WHERE id = ?", (entry["individual_id"],))
    with pytest.raises(CatalogError, match="individual NyalaData_new0001 was changed since"):
        undo_last(catalog, reviewer="bob")


def test_the_history_tables_arrive_with_the_schema_upgrade(tmp_path):
    path = tmp_path / "v3.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate(connection, target=3)
    connection.execute("INSERT INTO individuals (id, dataset, created_at) VALUES ('a', 'd', 'now')")
    connection.execute(
        "INSERT INTO images (sha256, stored_path, individual_id, added_at) VALUES (?, 'x.jpg', 'a', 'now')", ("0" * 64,)
    )
    connection.close()
    with Catalog(path) as catalog:
        assert catalog.history() == [] and catalog.images_signature() == (1, 1, 0)
        catalog.db.execute("UPDATE images SET individual_id = 'a'")  # the triggers count changes
        catalog.db.execute("DELETE FROM images")
        assert catalog.images_signature() == (0, 0, 2)


def test_proposed_groups_read_each_edge_once_and_say_what_reading_them_per_group_said():
    """PendingGrouping.groups() against the plain per-group reading of the match graph."""
    from wildreid.decide.graph import MatchGraph
    from wildreid.decide.grouping import DatasetGrouping
    from wildreid.review.pending import ALONE, KNOWN, NEW, PendingGrouping

    rng = np.random.default_rng(0)
    queries, identities = 40, np.array([f"animal_{n}" for n in range(6)], dtype=object)
    left, right = rng.integers(0, queries, 300), rng.integers(0, queries, 300)
    linked = rng.integers(0, queries, 80)
    graph = MatchGraph.build(
        queries,
        (left, right, rng.beta(0.5, 0.5, 300)),
        (linked, identities[rng.integers(0, len(identities), 80)], rng.beta(0.5, 0.5, 80)),
    )
    grouping = DatasetGrouping.fit(
        "d", np.arange(queries), np.arange(queries), graph, method="average", link_threshold=0.5, known_threshold=0.7
    )
    pending = PendingGrouping("d", list(range(100, 100 + queries)), list(range(100, 100 + queries)), grouping)
    pending.apply_answers([{"query_id": 100, "other_query_id": 101, "individual_id": None, "answer": "same"}])
    labels, anchors, expected = grouping.clustering.labels[:queries], grouping.clustering.anchors, []
    for label in dict.fromkeys(labels.tolist()):
        members = np.flatnonzero(labels == label)
        anchor = anchors.get(label)
        inside = np.isin(graph.left, members) & np.isin(graph.right, members)
        pairs = len(members) * (len(members) - 1) / 2
        towards = np.isin(graph.left, members) & (graph.right == queries + (anchor if anchor is not None else -queries))
        expected.append(
            (
                sorted(100 + m for m in members),
                KNOWN if anchor is not None else NEW if len(members) > 1 else ALONE,
                None if anchor is None else str(graph.identities[anchor]),
                float(graph.probability[inside].sum() / pairs) if pairs else None,
                float(graph.probability[towards].max()) if anchor is not None and towards.any() else None,
            )
        )
    expected.sort(key=lambda g: (g[1] == ALONE, -len(g[0]), g[0][0]))
    found = [(g.query_ids, g.kind, g.individual_id, g.cohesion, g.individual_probability) for g in pending.groups()]
    assert found == expected  # to the last bit
    assert {g.kind for g in pending.groups()} == {KNOWN, NEW, ALONE}
    assert sum(g.settled for g in pending.groups()) == 2


def test_the_catalogue_gallery_waits_for_another_process_writing_it(catalog, tmp_path, lite0_backbone, monkeypatch):
    """Two processes on one catalogue (the web app and `watch --catalog`): the second waits, saying
    for whom, until the first has written the catalogue's gallery, instead of saving its own
    version over it (or failing an upload)."""
    import threading

    from wildreid.presets import get_preset
    from wildreid.review import identify as review_identify
    from wildreid.util.lock import exclusive

    preset = get_preset("offline")
    folder = tmp_path / "cache" / f"gallery-{preset.name}"
    said, waiting, synced = [], threading.Event(), {}

    def warning(message, *args):
        said.append(message)
        waiting.set()

    def sync():
        cache = tmp_path / "cache"
        synced["gallery"] = review_identify.catalog_gallery(catalog, preset, backbone=lite0_backbone, cache_dir=cache)

    monkeypatch.setattr(review_identify.log, "warning", warning)
    with exclusive(folder, "the catalogue's gallery"):  # as the other process holds it
        worker = threading.Thread(target=sync)
        worker.start()
        assert waiting.wait(30), "the second writer neither waited nor said so"
        assert not folder.exists() and worker.is_alive()
    worker.join(120)
    assert "the catalogue's gallery is being written by pid" in said[0] and "waiting" in said[0]
    assert len(synced["gallery"].table) == 9 and (folder / "gallery.json").is_file()


def test_a_catalogue_gallery_saved_before_checksums_gets_them_at_the_next_sync(catalog, tmp_path, lite0_backbone):
    import json

    from wildreid.presets import get_preset
    from wildreid.review.identify import catalog_gallery

    preset, cache = get_preset("offline"), tmp_path / "cache"
    catalog_gallery(catalog, preset, backbone=lite0_backbone, cache_dir=cache)
    record_path = cache / f"gallery-{preset.name}" / "gallery.json"
    record = json.loads(record_path.read_text())
    del record["files"], record["record_sha256"]  # as an earlier wildreid saved it
    record_path.write_text(json.dumps(record))
    again = catalog_gallery(catalog, preset, backbone=lite0_backbone, cache_dir=cache)
    assert again.file_notes == [] and "record_sha256" in json.loads(record_path.read_text())
