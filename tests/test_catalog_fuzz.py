"""A seeded fuzz test of a saved catalogue: truncations and byte edits of its SQLite file, edits
of its rows (as someone with the sqlite3 shell would make them) and of its photos. After each,
`catalog check`, `catalog check --quick`, `catalog info` and `catalog export` run through the
command line. Each must either fail with one message and a non-zero exit, or give the right
answer; never a traceback.

The right answer: after damage (a truncated or edited file, changed photos) the answer of the
intact catalogue, unless `catalog check` reports the damage; after a row edit, what the rows now
say, read here with sqlite3. SQLite keeps no checksums, so a byte changed inside a text cell (a
name, a date) gives another valid catalogue that no check can tell from an edit: an answer that
differs only in such values, with the same rows and counts, is accepted without check finding
it (whether a seed hits one depends on where the SQLite version lays out the pages). Rows lost,
added or renumbered must be found.

Bounded by its number of cases (about 10 s on a quiet machine), not by a clock.
"""

from __future__ import annotations

import csv
import io
import random
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from wildreid.catalog.importer import import_dataset
from wildreid.catalog.store import Catalog
from wildreid.cli.main import app
from wildreid.data.dataset import load_dataset

SEED = 22
CASES = {"truncate": 8, "flip": 16, "photo": 6}  # plus every row edit of ROW_EDITS once
FIXED = "2026-01-01T00:00:00+00:00"
runner = CliRunner()

# Row edits: (SQL, whether `catalog check` must call the catalogue inconsistent, what it names).
ROW_EDITS = [
    ("UPDATE individuals SET name = CAST(X'61FF62' AS TEXT) WHERE id = 'ind1'", True, "not UTF-8"),
    ("UPDATE images SET location = CAST(X'C3' AS TEXT) WHERE id = 2", True, "not UTF-8"),
    ("UPDATE individuals SET dataset = CAST(X'FE' AS TEXT) WHERE id = 'ind0'", True, "not UTF-8"),
    ("DELETE FROM individuals WHERE id = 'ind2'", True, "foreign key violations: 2"),
    ("UPDATE images SET individual_id = 'nobody' WHERE id = 1", True, "foreign key violations: 1"),
    ("UPDATE images SET stored_path = '../../../etc/passwd' WHERE id = 3", True, "bad path"),
    ("UPDATE images SET sha256 = '" + "0" * 64 + "' WHERE id = 4", True, "images 4"),
    ("DROP TRIGGER images_deleted", True, "trigger images_deleted: missing"),
    ("DROP INDEX images_individual", True, "index images_individual: missing"),
    ("PRAGMA user_version = 99", None, "newer than this wildreid"),
    ("PRAGMA user_version = 0", None, "schema version (PRAGMA user_version) is 0"),
    ("DELETE FROM images WHERE id = 5", False, ""),  # an edit, not damage: its photo is left over
    ("UPDATE individuals SET name = 'Torn Ear' WHERE id = 'ind0'", False, ""),
    ("UPDATE images SET sighting_date = '" + "x" * 300 + "' WHERE id = 6", False, ""),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A catalogue of six small photos of three individuals, its file made byte-for-byte the same
    on every run (fixed times and source, vacuumed), so that the seeded edits hit the same bytes."""
    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(SEED)
    (folder / "data" / "images").mkdir(parents=True)
    rows = []
    for i in range(6):
        pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "data" / "images" / f"{i}.jpg", quality=80)
        rows.append((str(i), f"ind{i % 3}", f"images/{i}.jpg", "database", "herd", f"2023-04-0{i + 1}", "waterhole"))
    columns = ["image_id", "identity", "path", "split", "dataset", "date", "location"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "data" / "metadata.csv", index=False)
    catalogue = folder / "catalogue" / "c.sqlite"
    with Catalog(catalogue) as catalog:
        assert import_dataset(catalog, load_dataset(folder / "data")).added == 6
    connection = sqlite3.connect(catalogue, isolation_level=None)
    connection.execute("UPDATE images SET source = 'metadata.csv', added_at = ?", (FIXED,))
    connection.execute("UPDATE individuals SET created_at = ?", (FIXED,))
    connection.execute("UPDATE image_changes SET count = 0")
    connection.execute("VACUUM")
    connection.close()
    return catalogue.parent


def run(folder: Path, *arguments: str):
    return runner.invoke(app, ["catalog", *arguments, "--catalog", str(folder / "c.sqlite")])


def answers(folder: Path) -> dict:
    """Exit code and answer of each command: check's verdict lines, info's counts and datasets,
    export's metadata.csv rows."""
    found = {}
    for name, arguments in (
        ("check", ["check"]),
        ("quick", ["check", "--quick"]),
        ("info", ["info"]),
        ("export", ["export", str(folder / "exported")]),
    ):
        result = run(folder, *arguments)
        text = result.output
        assert "Traceback" not in text, (name, text)
        assert result.exception is None or isinstance(result.exception, SystemExit), (name, repr(result.exception))
        if result.exit_code == 0:
            assert "error:" not in text, (name, text)
        else:  # one message: check's findings and verdict, or one error line
            assert result.exit_code in (1, 2), (name, result.exit_code, text)
            assert text.count("error:") == 1 or (name in ("check", "quick") and "inconsistent" in text), (name, text)
        answer = text
        if name == "info" and result.exit_code == 0:
            counts = dict(re.findall(r"│ (\w+)\s+│ (\d+)", text))
            answer = (counts, re.search(r"datasets: (.*)", text)[1].strip())
        if name == "export" and result.exit_code == 0:
            answer = list(csv.DictReader(io.StringIO((folder / "exported" / "metadata.csv").read_text())))
        found[name] = (result.exit_code, answer)
    return found


def rows_say(folder: Path) -> tuple[dict, list[str]]:
    """The counts info should print and the image ids export should list, read with sqlite3."""
    connection = sqlite3.connect(folder / "c.sqlite")
    try:
        counts = {
            table: str(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("individuals", "images", "descriptors", "queries", "decisions", "history")
        }
        images = sorted(str(row[0]) for row in connection.execute("SELECT id FROM images"))
    finally:
        connection.close()
    return counts, images


def fresh(pristine: Path, folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(pristine, folder)
    return folder / "c.sqlite"


def test_a_damaged_or_edited_catalogue_gives_one_message_or_the_right_answer(pristine, tmp_path):
    reference = answers(pristine)
    assert {name: code for name, (code, _) in reference.items()} == {"check": 0, "quick": 0, "info": 0, "export": 0}
    assert len(reference["export"][1]) == 6
    choose = random.Random(SEED)
    folder = tmp_path / "case"
    seen = {"detected": 0, "refused": 0, "undetectable": 0}

    def shape(name: str, answer) -> object:
        """What a changed byte in a cell's value leaves alone: the counts, the photos' ids."""
        return answer[0] if name == "info" else [row["image_id"] for row in answer]

    def unchanged_unless_detected(found: dict, what: str) -> None:
        """Damage: every answer is the intact one, or check reports the damage (see the module's
        docstring for a value changed inside a cell)."""
        for name in ("info", "export"):
            code, answer = found[name]
            if code == 0 and answer != reference[name][1]:
                if found["check"][0] == 0:
                    assert shape(name, answer) == shape(name, reference[name][1]), (what, name, "rows changed unseen")
                    seen["undetectable"] += 1
                else:
                    seen["detected"] += 1
            seen["refused"] += code != 0

    # The SQLite file cut short: check must say so (or it cannot be opened), unless all it lost
    # was zeros at the end of the last page, which SQLite reads back as zeros: nothing lost.
    intact = (pristine / "c.sqlite").read_bytes()
    for cut in [0, 50, 100] + [choose.randrange(101, len(intact)) for _ in range(CASES["truncate"])]:
        database = fresh(pristine, folder)
        database.write_bytes(intact[:cut])
        found = answers(folder)
        if set(intact[cut:]) != {0}:
            assert found["check"][0] != 0, (cut, found["check"])
        unchanged_unless_detected(found, f"truncated to {cut} bytes")

    # Bytes of the SQLite file changed at random.
    for _ in range(CASES["flip"]):
        database = fresh(pristine, folder)
        data = bytearray(database.read_bytes())
        edits = [(choose.randrange(len(data)), choose.randrange(256)) for _ in range(choose.randint(1, 8))]
        for offset, value in edits:
            data[offset] = value
        database.write_bytes(bytes(data))
        unchanged_unless_detected(answers(folder), f"bytes changed: {edits}")

    # Rows edited: check's verdict is known, and every answer is what the rows now say.
    for sql, damaged, named in ROW_EDITS:
        database = fresh(pristine, folder)
        connection = sqlite3.connect(database, isolation_level=None)
        connection.execute(sql)
        connection.close()
        found = answers(folder)
        code, text = found["check"]
        if damaged is None:  # not even opened: one message from every command
            assert all(found[name][0] == 2 for name in found) and named in " ".join(text.split()), (sql, text)
            continue
        assert code == (1 if damaged else 0), (sql, text)
        assert named in " ".join(text.split()), (sql, named, text)
        counts, images = rows_say(folder)
        for name in ("info", "export"):
            code, answer = found[name]
            if code != 0:
                assert damaged, (sql, name, "refused an intact catalogue", answer)
                continue
            if name == "info":
                assert answer[0] == counts, (sql, answer, counts)
            else:  # every photo of the table, none lost on the way
                assert sorted(row["image_id"] for row in answer) == images, (sql, answer)

    # Photos truncated, changed or deleted: check reads them (--quick only sees a deleted one);
    # info and export read no photo and answer as before.
    names = sorted(p.relative_to(pristine).as_posix() for p in pristine.glob("c.sqlite.images/??/*"))
    for _ in range(CASES["photo"]):
        fresh(pristine, folder)
        photo = folder / choose.choice(names)
        data = bytearray(photo.read_bytes())
        how = choose.choice(["truncate", "change", "delete"])
        if how == "truncate":
            photo.write_bytes(bytes(data[: choose.randrange(len(data))]))
        elif how == "change":
            data[choose.randrange(len(data))] ^= 1 + choose.randrange(255)
            photo.write_bytes(bytes(data))
        else:
            photo.unlink()
        found = answers(folder)
        assert found["check"][0] == 1 and photo.name in " ".join(found["check"][1].split()), (how, found["check"])
        assert found["quick"][0] == (1 if how == "delete" else 0), (how, found["quick"])
        assert found["info"] == reference["info"] and found["export"] == reference["export"], how
    # The loop is only worth its time if the damage it made was seen.
    assert seen["refused"] + seen["detected"] > 10, seen
