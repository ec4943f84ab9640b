"""Learning from reviewers' answers: labels from "same" answers (decide/answers.py), the answers
file (data/answers_file.py), and the gallery's adapter refitted with them (Gallery.teach)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wildreid.cli.main import app
from wildreid.data.answers_file import read_answers
from wildreid.data.dataset import DatasetError
from wildreid.decide.answers import answered_labels, answered_photos
from wildreid.gallery import adaptation
from wildreid.gallery.gallery import Gallery
from wildreid.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WHITEN = get_preset("offline").replace(adapt="whiten")


def test_same_answers_tie_photos_into_animals_named_after_the_known_one():
    known = {"K1": "lion-1", "K2": "lion-2"}
    pairs = [("a", "b"), ("c", "b"), ("d", "K1"), ("d", "e"), ("g", "h")]
    labels = answered_labels(pairs, known)
    assert labels["a"] == labels["b"] == labels["c"] == "answered-1"  # a new animal, named in order
    assert labels["g"] == labels["h"] == "answered-2"
    assert labels["d"] == labels["e"] == "lion-1"
    assert set(labels) == {"a", "b", "c", "d", "e", "g", "h"}  # photos only, never K1
    assert answered_labels(list(reversed(pairs)), known) == labels


def test_a_set_tied_to_two_known_individuals_teaches_nothing():
    labels = answered_labels([("x", "K1"), ("x", "K2"), ("y", "x")], {"K1": "a", "K2": "b"})
    assert labels == {}
    assert answered_labels([("lonely", "lonely")], {}) == {}  # one photo alone is no animal yet


def write_answers(tmp_path, rows, header="photo,other,individual,answer"):
    path = tmp_path / "answers.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (["a.jpg,,,same"], "photo,other,answer", "no column individual"),
        (["a.jpg,b.jpg,lion-1,same"], None, "line 2: give either 'other'"),
        (["a.jpg,b.jpg,,yes"], None, "line 2: answer 'yes'; give one of same, different, cant_tell"),
        (["a.jpg,b.jpg,,same", ",b.jpg,,same"], None, "line 3: 'photo' is empty"),
    ],
)
def test_a_bad_answers_file_is_refused_naming_the_line(tmp_path, rows, header, message):
    path = write_answers(tmp_path, rows, *([header] if header else []))
    with pytest.raises(DatasetError, match=message):
        read_answers(path)


def test_answers_file_gives_labelled_photos_with_absolute_paths(tmp_path):
    path = write_answers(
        tmp_path, ["a.jpg,b.jpg,,same", "b.jpg,,lion-1,same", "c.jpg,d.jpg,,different", "e.jpg,f.jpg,,same"]
    )
    photos = answered_photos(read_answers(path))
    assert list(photos.columns) == ["image_id", "path", "identity"]
    labels = dict(zip(photos["path"], photos["identity"]))
    assert labels == {
        str(tmp_path / "a.jpg"): "lion-1",
        str(tmp_path / "b.jpg"): "lion-1",
        str(tmp_path / "e.jpg"): "answered-1",
        str(tmp_path / "f.jpg"): "answered-1",
    }


def truth_answers(queries: pd.DataFrame, database_identities: set) -> list[str]:
    """A reviewer who answers right: each query photo tied to the next of its animal, or to its
    known individual; a few 'different' answers besides."""
    rows = []
    for identity, photos in queries.groupby("identity"):
        paths = photos["path"].tolist()
        if identity in database_identities:
            rows += [f"{p},,{identity},same" for p in paths]
        else:
            rows += [f"{a},{b},,same" for a, b in zip(paths, paths[1:])]
    first = queries.drop_duplicates("identity")["path"].tolist()
    rows += [f"{a},{b},,different" for a, b in zip(first, first[1:])]
    return rows


def test_refit_with_answers_teaches_the_adapter_saves_what_it_learned_and_keeps_folds_honest(
    lions, lite0_backbone, tmp_path
):
    database = lions[lions["split"] == "database"].reset_index(drop=True)
    queries = lions[lions["split"] == "query"].reset_index(drop=True)
    cache = tmp_path / "cache"
    gallery = Gallery.build(database, WHITEN, backbone=lite0_backbone, cache_dir=cache, progress=False)
    before = gallery.groups["LionData"].adapter.state()["projection"].copy()
    answers = write_answers(tmp_path, truth_answers(queries, set(database["identity"])))
    photos = answered_photos(read_answers(answers))
    assert gallery.teach(photos, cache_dir=cache) == ({"LionData": len(photos)}, {})
    gallery.refit()
    part = gallery.groups["LionData"]
    assert part.fit.adaptation["taught"] == {
        "photos": len(photos),
        "labels": photos["identity"].nunique(),
    }
    assert not np.allclose(part.adapter.state()["projection"], before)  # it learned from them
    assert any("also learned from" in note for note in gallery.notes)

    # A fold's adapter never sees a held-out individual, not even through answered photos.
    raw = part.index.vectors(np.arange(part.size))
    held_identity = part.identities[0]
    keep = part.identities != held_identity
    vectors, labels = adaptation.training_set(part, raw, keep)
    assert held_identity not in set(labels.tolist())
    provisional = {label for label in part.taught.labels if label.startswith("answered-")}
    assert provisional and provisional <= set(labels.tolist())
    assert len(vectors) == keep.sum() + np.sum(part.taught.labels != held_identity)

    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g", backbone=lite0_backbone)
    again = loaded.groups["LionData"]
    assert np.array_equal(again.taught.vectors, part.taught.vectors)
    assert list(again.taught.labels) == list(part.taught.labels)
    loaded.refit()  # the same photos, answers and seed: the same adapter
    assert np.allclose(again.adapter.state()["projection"], part.adapter.state()["projection"])


def test_gallery_refit_command_learns_from_an_answers_file(lions, lite0_backbone, tmp_path):
    database = lions[lions["split"] == "database"].reset_index(drop=True)
    queries = lions[lions["split"] == "query"].reset_index(drop=True)
    cache = tmp_path / "cache"
    Gallery.build(database, WHITEN, backbone=lite0_backbone, cache_dir=cache, progress=False).save(tmp_path / "g")
    answers = write_answers(tmp_path, truth_answers(queries, set(database["identity"])))
    result = CliRunner().invoke(
        app, ["gallery", "refit", str(tmp_path / "g"), "--answers", str(answers), "--cache-dir", str(cache)]
    )
    assert result.exit_code == 0, result.output
    assert "photo(s) labelled by the answers; learned from: LionData" in result.output
    record = json.loads((tmp_path / "g" / "gallery.json").read_text())
    assert any(name.endswith("/taught.npz") for name in record["files"])  # saved, with its checksum
    # A photo that cannot be read is left out, by name; the others still teach.
    rows = truth_answers(queries, set(database["identity"])) + [f"{tmp_path / 'gone.jpg'},{queries['path'][0]},,same"]
    partly = CliRunner().invoke(
        app,
        [
            "gallery",
            "refit",
            str(tmp_path / "g"),
            "--answers",
            str(write_answers(tmp_path, rows)),
            "--cache-dir",
            str(cache),
        ],
    )
    said = " ".join(partly.output.split())
    assert partly.exit_code == 0 and f"left out, unreadable: {tmp_path / 'gone.jpg'}" in said, partly.output
    bad = write_answers(tmp_path, ["a.jpg,b.jpg,,maybe"])
    refused = CliRunner().invoke(app, ["gallery", "refit", str(tmp_path / "g"), "--answers", str(bad)])
    assert refused.exit_code == 2 and "line 2: answer 'maybe'" in " ".join(refused.output.split())
    assert "Traceback" not in refused.output
