"""MegaDetector results: reading the file (errors included), matching its paths to the dataset's
photos, one row per animal with ids that name the detection, photos without an animal reported
(in the outputs and on the console), and the command line end to end."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from wildreid.cli.main import app
from wildreid.data.dataset import DatasetError
from wildreid.data.detections import match_rows, read_detections, split_by_detections

runner = CliRunner()
CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}


def _write(path, images, categories=CATEGORIES, **extra):
    path.write_text(
        json.dumps({"info": {"format_version": "1.4"}, "detection_categories": categories, "images": images, **extra})
    )
    return path


def _animal(conf, bbox=(0.1, 0.2, 0.5, 0.4), category="1"):
    return {"category": category, "conf": conf, "bbox": list(bbox)}


def test_reads_the_megadetector_format(tmp_path):
    file = _write(
        tmp_path / "md.json",
        [
            {"file": "a.jpg", "detections": [_animal(0.9), _animal(0.1, category="2")]},
            {"file": "b.jpg", "detections": []},
            {"file": "c.jpg", "failure": "Failure image access", "detections": None},
        ],
    )
    read = read_detections(file)
    assert read.animal_categories == {"1"}
    assert [d["k"] for d in read.entries["a.jpg"]] == [1, 2] and read.entries["b.jpg"] == []
    assert "Failure image access" in read.entries["c.jpg"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not JSON"),
        ('{"images": {}}', "expected an object with an 'images' list"),
        ('{"images": [], "detection_categories": {"1": "person"}}', "no detection category is named 'animal'"),
        ('{"images": []}', "no 'detection_categories'"),
    ],
)
def test_a_broken_file_is_one_clear_message(tmp_path, content, message):
    (tmp_path / "md.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_detections(tmp_path / "md.json")


def test_malformed_detections_are_listed(tmp_path):
    file = _write(
        tmp_path / "md.json",
        [
            {"file": "a.jpg", "detections": [_animal(0.9, bbox=(10, 20, 300, 200))]},  # pixels, not fractions
            {"file": "b.jpg", "detections": [_animal(1.5)]},
            {"detections": []},
        ],
    )
    with pytest.raises(DatasetError) as raised:
        read_detections(file)
    message = str(raised.value)
    assert "3 malformed entries" in message
    assert (
        "images[0] (a.jpg), detection 1: 'bbox' [10, 20, 300, 200] is not [x, y, width, height] as fractions" in message
    )
    assert "images[1] (b.jpg), detection 1: 'conf' 1.5" in message and "images[2]: no 'file' path" in message
    with pytest.raises(DatasetError, match="detections file not found"):
        read_detections(tmp_path / "missing.json")


def test_paths_match_whatever_the_separator_and_root(tmp_path):
    file = _write(
        tmp_path / "md.json",
        [
            {"file": "site1\\IMG_0001.JPG", "detections": []},  # AddaxAI on Windows
            {"file": "./site2/IMG_0001.JPG", "detections": []},
            {"file": "/mnt/cams/site3/x/IMG_0002.JPG", "detections": []},  # absolute
        ],
    )
    read = read_detections(file)
    paths = ["/data/cams/site1/IMG_0001.JPG", "/data/cams/site2/IMG_0001.JPG", "/d/x/IMG_0002.JPG", "/d/other.jpg"]
    assert match_rows(read, paths) == [
        "site1\\IMG_0001.JPG",
        "./site2/IMG_0001.JPG",
        "/mnt/cams/site3/x/IMG_0002.JPG",
        None,
    ]


def test_ambiguous_and_unmatched_files_are_errors(tmp_path):
    read = read_detections(_write(tmp_path / "md.json", [{"file": "IMG_0001.JPG", "detections": []}]))
    with pytest.raises(DatasetError) as raised:
        match_rows(read, ["/cams/site1/IMG_0001.JPG", "/cams/site2/IMG_0001.JPG"])
    assert "'IMG_0001.JPG' names 2 photos" in str(raised.value) and "sub-folders" in str(raised.value)
    with pytest.raises(DatasetError) as raised:
        match_rows(read, ["/cams/site1/IMG_0002.JPG"])
    assert "none of its 1 entries (e.g. 'IMG_0001.JPG') names a photo of the dataset" in str(raised.value)


def _photos(tmp_path, names, size=(400, 200)):
    from PIL import Image

    (tmp_path / "cams").mkdir(exist_ok=True)
    for name in names:
        Image.new("RGB", size, (90, 120, 60)).save(tmp_path / "cams" / name)
    return [str(tmp_path / "cams" / name) for name in names]


def test_one_row_per_animal_and_photos_without_one_reported(tmp_path):
    paths = _photos(tmp_path, ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    file = _write(
        tmp_path / "md.json",
        [
            {
                "file": "cams/a.jpg",
                "detections": [_animal(0.95), _animal(0.6, category="2"), _animal(0.3, (0.5, 0, 0.5, 1))],
            },
            {"file": "cams/b.jpg", "detections": [_animal(0.15), _animal(0.9, category="2")]},
            {"file": "cams/c.jpg", "detections": []},
            {"file": "cams/d.jpg", "failure": "Failure image access"},
        ],
    )
    table = pd.DataFrame(
        {
            "image_id": ["A", "B", "C", "D", "E"],
            "identity": ["x"] * 5,
            "path": paths,
            "split": ["database", "query", "query", "query", "database"],
        }
    )
    rows, no_animal = split_by_detections(table, read_detections(file), threshold=0.2)
    assert rows["image_id"].tolist() == ["A#1", "A#3"]  # the person (#2) never becomes a row
    assert rows["bbox"].tolist() == ["[40, 40, 200, 80]", "[200, 0, 200, 200]"]  # fractions of 400 x 200
    assert rows["region_source"].eq("megadetector").all() and rows["detection_conf"].tolist() == [0.95, 0.3]
    assert rows["identity"].eq("x").all() and rows["split"].eq("database").all()
    reasons = dict(zip(no_animal["image_id"], no_animal["reason"]))
    assert reasons == {
        "B": "no animal detection at or above 0.2 (best 0.150)",
        "C": "no animal detection at or above 0.2 (none at all)",
        "D": "MegaDetector could not process it (Failure image access)",
        "E": "not in md.json",
    }
    assert no_animal.set_index("image_id")["split"]["E"] == "database"
    # a lower threshold keeps the detection: its id does not change
    rows, _ = split_by_detections(table, read_detections(file), threshold=0.1)
    assert rows["image_id"].tolist() == ["A#1", "A#3", "B#1"]


def _small_dataset(shared_data, folder, per_split=8):
    table = pd.read_csv(shared_data / "NyalaData" / "metadata.csv", dtype=str)
    table = pd.concat([table[table["split"] == "database"].head(per_split), table[table["split"] == "query"].head(3)])
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for path in table["path"]:
        shutil.copy(shared_data / "NyalaData" / path, folder / path)
    table.drop(columns=["original_path"]).to_csv(folder / "metadata.csv", index=False)
    return table


def test_identify_with_detections_end_to_end(shared_data, tmp_path):
    table = _small_dataset(shared_data, tmp_path / "data")
    query_paths = table.loc[table["split"] == "query", "path"].tolist()
    images = [
        {"file": path.replace("/", "\\"), "detections": [_animal(0.9, (0.05, 0.05, 0.9, 0.9))]}
        for path in table.loc[table["split"] == "database", "path"]
    ]
    images += [
        {"file": query_paths[0], "detections": [_animal(0.9, (0, 0, 0.5, 1)), _animal(0.8, (0.5, 0, 0.5, 1))]},
        {"file": query_paths[1], "detections": [_animal(0.05)]},
    ]  # the third query is not in the file
    _write(tmp_path / "md.json", images)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "identify",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--detections",
            str(tmp_path / "md.json"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--threshold",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "2 photo(s) without one are left out" in text and "no animal" in text
    assert "2 photo(s) without an animal were left out" in text
    first = table.loc[table["split"] == "query", "image_id"].iloc[0]
    submission = pd.read_csv(out / "submission.csv", dtype=str)
    assert submission["image_id"].tolist() == [f"{first}#1", f"{first}#2"]
    candidates = pd.read_csv(out / "candidates.csv", dtype=str)
    assert candidates["region_source"].eq("megadetector").all() and candidates["bbox"].notna().all()
    no_animal = pd.read_csv(out / "no_animal.csv", dtype=str)
    assert len(no_animal) == 2 and no_animal["reason"].str.contains("best 0.050").any()
    assert no_animal["reason"].str.contains("not in md.json").any()
    assert json.loads((out / "run.json").read_text())["photos_without_animal"] == 2
    assert "Photos without an animal (2)" in (out / "report.html").read_text()


def test_detection_options_refused_when_they_make_no_sense(shared_data, tmp_path):
    _small_dataset(shared_data, tmp_path / "data", per_split=2)
    base = ["identify", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--no-cache"]
    result = runner.invoke(app, base + ["--detection-threshold", "0.5"])
    assert result.exit_code == 2 and "give them with --detections" in " ".join(result.output.split())
    _write(tmp_path / "md.json", [{"file": "elsewhere/x.jpg", "detections": []}])
    result = runner.invoke(app, base + ["--detections", str(tmp_path / "md.json")])
    assert result.exit_code == 2 and "names a photo of the dataset" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
