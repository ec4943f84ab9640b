"""A saved gallery damaged at random (seeded): truncations, byte edits, re-sorted and deleted rows,
deleted files. `gallery info`, `gallery check` and `identify --gallery` must either refuse it with
one message and a non-zero exit (never a traceback), or answer exactly as the undamaged gallery
did: never a silently different answer."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from wildreid.cli.main import app
from wildreid.gallery import gallery as gallery_module
from wildreid.gallery.gallery import Gallery
from wildreid.presets import get_preset

TRIALS = 40  # about 15-20 s on two busy cores; the seed makes every run throw the same damage
SEED = 22


@pytest.fixture(scope="module")
def small_gallery(lions, tmp_path_factory, lite0_backbone):
    """A gallery of 5 identities, the query photos to ask it and the cache that describes them."""
    where = tmp_path_factory.mktemp("fuzz")
    database = lions[lions["split"] == "database"]
    chosen = database[database["identity"].isin(database["identity"].drop_duplicates().head(5))]
    Gallery.build(
        chosen, get_preset("offline"), backbone=lite0_backbone, cache_dir=where / "cache", progress=False
    ).save(where / "g")
    queries = where / "queries"
    queries.mkdir()
    for path in lions[lions["split"] == "query"]["path"].head(3):
        (queries / Path(path).name).write_bytes(Path(path).read_bytes())
    return where


def _identify(runner, folder: Path, queries: Path, out: Path, cache: Path):
    command = ["identify", str(queries), "--gallery", str(folder), "--out", str(out), "--no-report"]
    return runner.invoke(app, command + ["--cache-dir", str(cache)])


def _damage(rng: random.Random, folder: Path) -> str:
    """One random change to one of the gallery's files; says which."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    target = rng.choice(files)
    name = target.relative_to(folder).as_posix()
    data = target.read_bytes()
    kind = rng.choice(["truncate", "byte", "bytes", "delete", "shuffle", "drop-row", "reindent"])
    if kind == "truncate":
        target.write_bytes(data[: rng.randrange(len(data) + 1)])
    elif kind in ("byte", "bytes") and data:
        edited = bytearray(data)
        for _ in range(1 if kind == "byte" else rng.randint(2, 16)):
            edited[rng.randrange(len(edited))] = rng.randrange(256)
        target.write_bytes(bytes(edited))
    elif kind == "delete":
        target.unlink()
    elif kind in ("shuffle", "drop-row") and target.suffix == ".csv":
        header, *rows = data.decode().splitlines(keepends=True)
        if kind == "shuffle":
            rng.shuffle(rows)
        elif rows:
            rows.pop(rng.randrange(len(rows)))
        target.write_text(header + "".join(rows))
    elif kind == "reindent" and target.name == "gallery.json":  # the same content, laid out again
        target.write_text(target.read_text().replace("\n  ", "\n    "))
    else:
        kind = "nothing"
    return f"{kind} {name}"


def _one_message(result, context: str) -> None:
    assert result.exit_code != 0, context
    assert isinstance(result.exception, SystemExit), f"{context}: {result.exception!r}\n{result.output}"
    text = result.output
    assert "Traceback" not in text and text.count("error:") + text.count("damaged:") == 1, f"{context}\n{text}"


def test_a_randomly_damaged_gallery_is_refused_or_answers_as_before(small_gallery, lite0_backbone, monkeypatch):
    # The model is loaded once (the gallery names it; loading it per run would be most of the time).
    monkeypatch.setattr(gallery_module, "load_backbone", lambda *args, **kwargs: lite0_backbone)
    runner, cache, queries = CliRunner(), small_gallery / "cache", small_gallery / "queries"
    before = _identify(runner, small_gallery / "g", queries, small_gallery / "before", cache)
    assert before.exit_code == 0, before.output
    whole = runner.invoke(app, ["gallery", "check", str(small_gallery / "g")])
    assert whole.exit_code == 0 and "OK" in whole.output, whole.output
    expected = pd.read_csv(small_gallery / "before" / "candidates.csv")
    rng = random.Random(SEED)
    outcomes = {"refused": 0, "same": 0}
    for trial in range(TRIALS):
        folder = small_gallery / f"trial-{trial}"
        shutil.copytree(small_gallery / "g", folder)
        what = f"trial {trial}: {_damage(rng, folder)}"
        for command in (["gallery", "info", str(folder)], ["gallery", "check", str(folder)]):
            said = runner.invoke(app, command)
            if said.exit_code != 0:
                _one_message(said, f"{what}, {' '.join(command[:2])}")
        answered = _identify(runner, folder, queries, folder.with_name(f"out-{trial}"), cache)
        if answered.exit_code == 0:
            got = pd.read_csv(folder.with_name(f"out-{trial}") / "candidates.csv")
            pd.testing.assert_frame_equal(got, expected, obj=what)
            outcomes["same"] += 1
        else:
            _one_message(answered, f"{what}, identify")
            outcomes["refused"] += 1
        shutil.rmtree(folder)
    assert outcomes["refused"] > TRIALS // 2, outcomes  # the damage was real, not mostly no-ops
