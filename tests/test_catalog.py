"""The catalogue (wildreid.catalog and `wildreid catalog ...`): import, store, export, identify,
decisions, migrations, and that a killed import loses nothing."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from wildreid.catalog import decisions as decisions_module
from wildreid.catalog.dataset import catalog_to_dataset
from wildreid.catalog.decisions import AlreadyDecided
from wildreid.catalog.export import export_metadata
from wildreid.catalog.importer import import_dataset
from wildreid.catalog.photos import PhotoStore, PhotoStoreError
from wildreid.catalog.schema import SCHEMA_VERSION, migrate
from wildreid.catalog.store import Catalog, CatalogError
from wildreid.cli.main import app
from wildreid.data.dataset import Dataset, DatasetError, load_dataset
from wildreid.describe.extract import EmbeddingCache
from wildreid.gallery.pipeline import identify
from wildreid.presets import get_preset
from wildreid.review.descriptors import prepare_descriptors
from wildreid.review.identify import candidates_of, identify_with_catalog

# Eight NyalaData individuals with five database photos each keep the tests quick.
INDIVIDUALS = [
    "NyalaData_32",
    "NyalaData_41",
    "NyalaData_48",
    "NyalaData_147",
    "NyalaData_144",
    "NyalaData_34",
    "NyalaData_7",
    "NyalaData_18",
]
KNOWN_QUERY = "47"  # a NyalaData query photo of NyalaData_32


@pytest.fixture(scope="module")
def nyala(shared_data):
    return load_dataset(shared_data / "NyalaData")


@pytest.fixture(scope="module")
def small(nyala):
    """The small labelled subset as a Dataset (database rows only)."""
    database = nyala.database
    chosen = database[database["identity"].isin(INDIVIDUALS)].groupby("identity").head(5)
    return nyala.subset(nyala.table["image_id"].isin(chosen["image_id"]))


@pytest.fixture(scope="module")
def embedding_cache(tmp_path_factory) -> Path:
    # One cache for the whole session (test_web*.py use the same folder): each photo's descriptor
    # is computed once however many catalogue copies the tests make.
    return tmp_path_factory.getbasetemp() / "wildreid-embedding-cache"


def write_subset_csv(table: pd.DataFrame, path: Path) -> Path:
    """A metadata CSV of some rows, with absolute paths (the photos stay in ../shared/data)."""
    table[["image_id", "identity", "path", "split", "dataset", "species", "viewpoint"]].to_csv(path, index=False)
    return path


def integrity(catalog_path: Path) -> dict:
    """Everything the crash test demands of a catalogue, checked independently of Catalog.check."""
    connection = sqlite3.connect(catalog_path)
    try:
        found = {
            "integrity": connection.execute("PRAGMA integrity_check").fetchone()[0],
            "foreign_keys": connection.execute("PRAGMA foreign_key_check").fetchall(),
            "individuals_without_photos": connection.execute(
                "SELECT count(*) FROM individuals i WHERE NOT EXISTS "
                "(SELECT 1 FROM images m WHERE m.individual_id = i.id)"
            ).fetchone()[0],
            "images": connection.execute("SELECT count(*) FROM images").fetchone()[0],
            "distinct_sources": connection.execute("SELECT count(DISTINCT source_image_id) FROM images").fetchone()[0],
        }
        paths = [row[0] for row in connection.execute("SELECT stored_path FROM images")]
    finally:
        connection.close()
    store = catalog_path.with_name(catalog_path.name + ".images")
    found["missing_files"] = [p for p in paths if not (store / p).is_file()]
    return found


# ------------------------------------------------------------------------------------------------
# import, store, export


def test_import_copies_photos_into_a_content_addressed_store(tmp_path, small):
    path = tmp_path / "animals.sqlite"
    with Catalog(path) as catalog:
        report = import_dataset(catalog, small)
        assert (report.added, report.individuals_added, report.unreadable) == (40, 8, [])
        assert catalog.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert catalog.schema_version == SCHEMA_VERSION
        images = catalog.images()
        assert len(images) == 40 and {i["individual_id"] for i in images} == set(INDIVIDUALS)
        for image in images:
            stored = catalog.photo_path(image["stored_path"])
            # named by content, inside the store next to the catalogue, bytes identical
            assert stored.parent.parent == tmp_path / "animals.sqlite.images"
            assert stored.stem == image["sha256"] and stored.parent.name == image["sha256"][:2]
            original = small.table.loc[small.table["image_id"] == image["source_image_id"], "path"].item()
            assert stored.read_bytes() == Path(original).read_bytes()
        assert catalog.individual("NyalaData_18")["species"] == "nyala (Tragelaphus angasii)"
        viewpoints = {image["viewpoint"] for image in images}
        assert viewpoints <= {"left", "right"} and viewpoints

        again = import_dataset(catalog, small)  # a second import adds nothing
        assert (again.added, again.already_present) == (0, 40)
        assert catalog.counts()["images"] == 40
        assert catalog.check().ok


def test_import_refuses_names_over_the_length_limits_before_writing_anything(tmp_path, small):
    """An identity over 200 characters imported the photos before its row, then stopped with
    "individual ... does not exist; create it first". The limits are now checked at validation:
    nothing is written, and the message names the rows and the limit."""
    table = small.table.copy().reset_index(drop=True)
    long_identity, long_dataset = "x" * 201, "d" * 101
    table.loc[table["identity"] == table["identity"][10], "identity"] = long_identity
    table.loc[3, "dataset"] = long_dataset
    images = table.loc[table["identity"] == long_identity, "image_id"].tolist()
    csv = write_subset_csv(table, tmp_path / "long.csv")
    path = tmp_path / "c.sqlite"
    result = CliRunner().invoke(app, ["catalog", "import", str(csv), "--catalog", str(path), "--allow-outside-paths"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "nothing was imported" in text and "over the limit of 200" in text and "201 characters" in text
    assert f"image_id '{images[0]}', '{images[1]}'" in text
    assert f"image_id '{table['image_id'][3]}': dataset name" in text and "over the limit of 100" in text
    assert not path.exists()  # not even an empty catalogue

    with Catalog(path) as catalog:  # the library call refuses as well, with the catalogue untouched
        with pytest.raises(CatalogError, match="over the limit of 200"):
            import_dataset(catalog, Dataset(table, small.source))
        assert catalog.counts()["images"] == 0 and catalog.photos.files() == []
        with pytest.raises(CatalogError, match="201 characters, over the limit of 200"):
            catalog.add_individual(long_identity, "NyalaData")  # was silently not created
        with pytest.raises(CatalogError, match="101 characters, over the limit of 100"):
            catalog.add_individual("ok", long_dataset)
        assert catalog.individual(long_identity) is None


def test_import_reads_the_folder_layout_and_skips_unreadable_photos(tmp_path, nyala):
    database = tmp_path / "db"
    rows = nyala.database[nyala.database["identity"].isin(INDIVIDUALS[:2])].groupby("identity").head(2)
    for row in rows.itertuples():
        folder = database / row.identity
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{row.image_id}.jpg").symlink_to(row.path)
    (database / INDIVIDUALS[0] / "broken.jpg").write_text("not a photo")
    queries = tmp_path / "queries"
    queries.mkdir()
    with Catalog(tmp_path / "c.sqlite") as catalog:
        # the photos are links to ../shared/data: outside the folder, so allowed explicitly
        report = import_dataset(catalog, load_dataset(database, query_dir=queries, allow_outside_paths=True))
        assert report.added == 4
        assert [image_id for image_id, _ in report.unreadable] == [f"database/{INDIVIDUALS[0]}/broken.jpg"]
        assert "not a JPEG, PNG" in report.unreadable[0][1]
        assert {i["id"] for i in catalog.individuals()} == set(INDIVIDUALS[:2])


def test_export_writes_an_animalclef_metadata_csv_that_loads_back(tmp_path, small):
    with Catalog(tmp_path / "c.sqlite") as catalog:
        import_dataset(catalog, small)
        for copy in (False, True):
            out = tmp_path / f"export-{copy}"
            metadata = export_metadata(catalog, out, copy_images=copy)
            header = metadata.read_text().splitlines()[0].split(",")
            assert header[:8] == ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
            # every path resolves, every row valid; without copies the paths lead into the catalogue
            loaded = load_dataset(out, allow_outside_paths=not copy)
            assert len(loaded.database) == 40 and len(loaded.queries) == 0
            assert sorted(loaded.table["identity"].unique()) == sorted(INDIVIDUALS)
            assert set(loaded.table["dataset"]) == {"NyalaData"}
            if copy:
                assert all(Path(p).parent == out / "images" for p in loaded.table["path"])


def test_catalog_opening_errors_say_what_to_do(tmp_path):
    with pytest.raises(CatalogError, match="no catalogue here.*catalog import"):
        Catalog(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(CatalogError, match="is a folder"):
        Catalog(tmp_path)
    (tmp_path / "garbage.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="not a readable catalogue"):
        Catalog(tmp_path / "garbage.sqlite")
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE something (x)")
    other.commit()
    other.close()
    with pytest.raises(CatalogError, match="not a wildreid catalogue"):
        Catalog(tmp_path / "other.sqlite")


# ------------------------------------------------------------------------------------------------
# schema versions


def test_old_catalogue_is_migrated_and_newer_one_refused(tmp_path):
    path = tmp_path / "v1.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate(connection, target=1)  # a catalogue written before the review tables existed
    connection.execute("INSERT INTO individuals (id, dataset, created_at) VALUES ('a', 'd', 'now')")
    connection.close()
    with Catalog(path) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        assert catalog.individual("a")["dataset"] == "d"
        assert catalog.queries() == [] and catalog.decisions() == []
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(CatalogError, match="schema version 99, newer .* upgrade wildreid"):
        Catalog(path)


# ------------------------------------------------------------------------------------------------
# decisions


def _ready_query(catalog: Catalog, photo: Path, candidates: list[tuple[str, float]]) -> dict:
    query = catalog.add_query(photo.read_bytes(), "jpg", dataset="NyalaData", original_name="q.jpg")
    catalog.set_query_result(
        query["id"],
        {
            "prediction": candidates[0][0],
            "threshold": 0.7,
            "preset": "offline",
            "candidates": [{"rank": r + 1, "individual_id": i, "score": s} for r, (i, s) in enumerate(candidates)],
        },
    )
    return catalog.query(query["id"])


def test_decisions_are_recorded_and_the_first_final_one_wins(tmp_path, small, nyala):
    photos = nyala.queries["path"].tolist()
    with Catalog(tmp_path / "c.sqlite") as catalog:
        import_dataset(catalog, small)
        first = _ready_query(catalog, Path(photos[0]), [("NyalaData_18", 0.9), ("NyalaData_7", 0.5)])
        decision = catalog.decide(first["id"], "match", reviewer="alice", preset="offline", individual_id="NyalaData_7")
        assert (
            decision["outcome"],
            decision["individual_id"],
            decision["reviewer"],
            decision["score"],
            decision["preset"],
        ) == ("match", "NyalaData_7", "alice", 0.5, "offline")
        image = catalog.image(decision["image_id"])
        assert image["individual_id"] == "NyalaData_7" and image["sha256"] == first["sha256"]
        with pytest.raises(AlreadyDecided, match="already decided by alice"):
            catalog.decide(first["id"], "new", reviewer="bob", preset="offline")

        second = _ready_query(catalog, Path(photos[1]), [("NyalaData_18", 0.6)])
        catalog.decide(second["id"], "skip", reviewer="bob", preset="offline")  # skipping is not final
        assert catalog.query(second["id"])["status"] == "skipped"
        created = catalog.decide(second["id"], "new", reviewer="bob", preset="offline", name="Broken Horn")
        assert created["individual_id"] == "NyalaData_new0001"
        assert catalog.individual("NyalaData_new0001")["name"] == "Broken Horn"
        assert catalog.individuals("broken horn")[0]["id"] == "NyalaData_new0001"
        assert [d["outcome"] for d in catalog.decisions(query_id=second["id"])] == ["skip", "new"]

        third = _ready_query(catalog, Path(photos[2]), [("NyalaData_18", 0.6)])
        with pytest.raises(CatalogError, match="individual 'nobody' does not exist"):
            catalog.decide(third["id"], "match", reviewer="bob", preset="offline", individual_id="nobody")
        with pytest.raises(CatalogError, match="reviewer: empty"):
            catalog.decide(third["id"], "skip", reviewer=" ", preset="offline")
        assert catalog.check().ok


def test_a_photo_already_catalogued_is_not_reported_filed_elsewhere(tmp_path, small):
    with Catalog(tmp_path / "c.sqlite") as catalog:
        import_dataset(catalog, small)
        catalogued = catalog.images("NyalaData_18")[0]  # uploaded again as a query
        photo = catalog.photo_path(catalogued["stored_path"])
        for outcome, chosen in (("match", "NyalaData_7"), ("new", None)):
            query = _ready_query(catalog, photo, [("NyalaData_7", 0.9), ("NyalaData_18", 0.8)])
            before = catalog.counts()
            with pytest.raises(CatalogError) as error:
                catalog.decide(query["id"], outcome, reviewer="alice", preset="offline", individual_id=chosen)
            message = str(error.value)
            assert "already in the catalogue as a photo of 'NyalaData_18'" in message
            assert (
                "'NyalaData_7'" if chosen else "a new individual"
            ) in message and "Confirm 'NyalaData_18'" in message
            assert catalog.counts() == before and catalog.image(catalogued["id"])["individual_id"] == "NyalaData_18"
            assert catalog.query(query["id"])["status"] == "ready"
            confirmed = catalog.decide(
                query["id"], "match", reviewer="alice", preset="offline", individual_id="NyalaData_18"
            )  # the offered choice works
            assert confirmed["image_id"] == catalogued["id"]
        with pytest.raises(CatalogError, match="control characters"):
            catalog.add_individual("two\nlines", "NyalaData")


def test_a_failing_decision_changes_nothing(tmp_path, small, nyala, monkeypatch):
    with Catalog(tmp_path / "c.sqlite") as catalog:
        import_dataset(catalog, small)
        query = _ready_query(catalog, Path(nyala.queries["path"].iloc[0]), [("NyalaData_18", 0.9)])
        before = catalog.counts()

        def broken(*args):
            raise RuntimeError("disk full")  # fails after the individual and image were inserted

        monkeypatch.setattr(decisions_module, "_candidate_score", broken)
        with pytest.raises(RuntimeError):
            catalog.decide(query["id"], "new", reviewer="alice", preset="offline")
        assert catalog.counts() == before  # no individual without photo, no photo without decision
        assert catalog.query(query["id"])["status"] == "ready"


# ------------------------------------------------------------------------------------------------
# identification with the catalogue as database


def test_catalog_is_the_database_of_pipeline_identify(tmp_path, small, nyala, lite0_backbone, embedding_cache):
    query = nyala.table[nyala.table["image_id"] == KNOWN_QUERY].iloc[0]
    with Catalog(tmp_path / "c.sqlite") as catalog:
        import_dataset(catalog, small)
        fresh = tmp_path / "fresh-cache"
        assert prepare_descriptors(catalog, lite0_backbone, fresh) == 40
        assert prepare_descriptors(catalog, lite0_backbone, fresh) == 0  # kept in the embedding cache
        assert len(EmbeddingCache(fresh, lite0_backbone.cache_key).load()) == 40
        assert catalog.counts()["descriptors"] == 0  # their one home: not copied into the catalogue
        prepare_descriptors(catalog, lite0_backbone, embedding_cache)

        dataset = catalog_to_dataset(catalog, [query["path"]], query_ids=["my-query"])
        assert len(dataset.database) == 40 and dataset.queries["image_id"].tolist() == ["my-query"]
        assert dataset.database["path"].map(lambda p: ".images/" in p).all()
        result = identify(
            dataset, get_preset("offline"), backbone=lite0_backbone, cache_dir=embedding_cache, progress=False
        )
        assert result.timings["images_extracted"] <= 1  # catalogue descriptors came from the cache

        answer = candidates_of(
            identify_with_catalog(
                catalog, [query["path"]], get_preset("offline"), backbone=lite0_backbone, cache_dir=embedding_cache
            ),
            catalog,
        )[0]
        assert len(answer["candidates"]) == 5
        assert query["identity"] in [c["individual_id"] for c in answer["candidates"]]
        for candidate in answer["candidates"]:  # the best photo really is a photo of that individual
            assert catalog.image(candidate["image_id"])["individual_id"] == candidate["individual_id"]

        with pytest.raises(CatalogError, match="not in the catalogue"):
            catalog_to_dataset(catalog, [query["path"]], dataset="LionData")
        with pytest.raises(DatasetError):
            catalog_to_dataset(catalog, [tmp_path / "nope.jpg"])


def test_cli_import_identify_export_check(tmp_path, small, nyala, embedding_cache):
    runner = CliRunner()
    path = tmp_path / "c.sqlite"
    csv = write_subset_csv(small.table, tmp_path / "subset.csv")
    result = runner.invoke(app, ["catalog", "import", str(csv), "--catalog", str(path), "--allow-outside-paths"])
    assert result.exit_code == 0, result.output
    assert "40 photo(s) added" in result.output

    queries = tmp_path / "queries"
    queries.mkdir()
    for image_id in (KNOWN_QUERY, "71"):
        source = Path(nyala.table.loc[nyala.table["image_id"] == image_id, "path"].item())
        (queries / f"q{image_id}.jpg").symlink_to(source)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "catalog",
            "identify",
            str(queries),
            "--catalog",
            str(path),
            "--out",
            str(out),
            "--cache-dir",
            str(embedding_cache),
            "--no-report",
        ],
    )
    assert result.exit_code == 0, result.output
    submission = pd.read_csv(out / "submission.csv", dtype=str)
    assert submission["image_id"].tolist() == ["q47.jpg", "q71.jpg"]
    candidates = pd.read_csv(out / "candidates.csv", dtype=str)
    assert candidates["match_1"].str.startswith("catalog:").all()

    result = runner.invoke(app, ["catalog", "export", str(tmp_path / "exported"), "--catalog", str(path)])
    assert result.exit_code == 0 and (tmp_path / "exported" / "metadata.csv").is_file()
    result = runner.invoke(app, ["catalog", "check", "--catalog", str(path)])
    assert result.exit_code == 0 and "consistent" in result.output
    result = runner.invoke(app, ["catalog", "info", "--catalog", str(path)])
    assert result.exit_code == 0 and "NyalaData" in result.output

    result = runner.invoke(
        app, ["catalog", "identify", str(queries), "--catalog", str(tmp_path / "none.sqlite"), "--out", str(out)]
    )
    assert result.exit_code == 2 and "no catalogue here" in " ".join(result.output.split())


# ------------------------------------------------------------------------------------------------
# crash safety


def test_import_killed_half_way_loses_nothing_and_resumes(tmp_path, nyala):
    rows = nyala.database[nyala.database["identity"].isin(INDIVIDUALS + ["NyalaData_2", "NyalaData_26"])]
    rows = rows.head(60)
    csv = write_subset_csv(rows, tmp_path / "subset.csv")
    path = tmp_path / "c.sqlite"
    command = [
        sys.executable,
        "-m",
        "wildreid",
        "catalog",
        "import",
        str(csv),
        "--catalog",
        str(path),
        "--allow-outside-paths",
    ]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}

    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    committed = 0
    deadline = time.monotonic() + 120
    try:
        while committed < 10 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
            if path.is_file():
                try:
                    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as reader:
                        committed = reader.execute("SELECT count(*) FROM images").fetchone()[0]
                except sqlite3.OperationalError:
                    pass  # the schema is not created yet
        process.send_signal(signal.SIGKILL)  # no clean-up, no atexit: like a power cut for the process
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the import finished before it could be killed"

    found = integrity(path)
    assert 10 <= found["images"] < len(rows), "not killed half way"
    assert found["integrity"] == "ok" and found["foreign_keys"] == []
    assert found["missing_files"] == [] and found["individuals_without_photos"] == 0
    with Catalog(path) as catalog:  # opens (WAL recovered) and agrees
        assert catalog.check().ok

    rerun = CliRunner().invoke(app, command[3:])  # the same command, run to the end in-process
    assert rerun.exit_code == 0, rerun.output
    found = integrity(path)
    assert found["images"] == found["distinct_sources"] == len(rows)  # complete, no duplicates
    assert found["integrity"] == "ok" and found["missing_files"] == [] and found["foreign_keys"] == []
    with Catalog(path) as catalog:
        report = catalog.check(repair=True)
        assert report.ok and catalog.check().unreferenced_files == [] and catalog.check().leftover_files == []
        assert len(catalog.photos.files()) == len(rows)


def test_photo_store_names_what_is_in_the_way(tmp_path):
    """A file where the store keeps a folder (or a folder where it keeps a photo) is named, with
    what to do; it was "...: File exists" or "...: Is a directory" naming a temporary file."""
    data = b"\xff\xd8\xff a photo"
    digest = hashlib.sha256(data).hexdigest()
    store = PhotoStore(tmp_path / "store")
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(PhotoStoreError, match=f"^{tmp_path / 'store'}: a file is where .* keeps a folder"):
        store.put(data, "jpg")
    (tmp_path / "store").unlink()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / digest[:2]).write_text("not a folder")
    with pytest.raises(PhotoStoreError, match=f"^{tmp_path / 'store' / digest[:2]}: a file .* Move it away"):
        store.put(data, "jpg")
    (tmp_path / "store" / digest[:2]).unlink()
    (tmp_path / "store" / digest[:2] / f"{digest}.jpg").mkdir(parents=True)
    with pytest.raises(PhotoStoreError, match=f"{digest}.jpg: a folder is where .* keeps a photo"):
        store.put(data, "jpg")
    (tmp_path / "store" / digest[:2] / f"{digest}.jpg").rmdir()
    assert store.put(data, "jpg") == (digest, f"{digest[:2]}/{digest}.jpg")
