"""Tests for the procedural demo data set (wildreid.demo)."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wildreid.data import demo
from wildreid.data.demo import make_demo_dataset, make_individual, render_animal

COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
# A small data set keeps most tests fast; the default size is built once per module.
SMALL = dict(
    n_known=4, n_new=2, database_per_individual=3, queries_per_known=2, queries_per_new=2, image_size=96, seed=7
)


def _pixels(root, rel_path) -> np.ndarray:
    with Image.open(root / rel_path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_default")
    meta = make_demo_dataset(root)
    return root, meta, pd.read_csv(meta)


def test_returns_metadata_path_with_exact_columns(default_set):
    root, meta, df = default_set
    assert meta == root / "metadata.csv"
    assert meta.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert list(df.columns) == COLUMNS
    assert df.image_id.tolist() == list(range(len(df)))


def test_default_counts_and_known_new_split(default_set):
    _, _, df = default_set
    assert len(df) == 16 * 6 + 16 * 2 + 6 * 2
    assert (df.split == "database").sum() == 16 * 6
    assert (df.split == "query").sum() == 16 * 2 + 6 * 2
    assert set(df.split) == {"database", "query"}

    db_ids = set(df.identity[df.split == "database"])
    q_ids = set(df.identity[df.split == "query"])
    known, new = db_ids & q_ids, q_ids - db_ids
    assert len(known) == 16 and len(new) == 6
    assert db_ids == known  # every database identity also has queries
    assert df.identity.nunique() == 22
    per_identity = df.groupby(["identity", "split"]).size()
    for identity in known:
        assert per_identity[(identity, "database")] == 6
        assert per_identity[(identity, "query")] == 2
    for identity in new:
        assert per_identity[(identity, "query")] == 2
        assert (identity, "database") not in per_identity.index


def test_metadata_values(default_set):
    _, _, df = default_set
    assert all(i.startswith("DemoSpots_") and len(i) == len("DemoSpots_000") for i in df.identity)
    assert set(df.species) == {"spotted demo animal"}
    assert set(df.dataset) == {"DemoSpots"}
    assert set(df.orientation) <= {"left", "right"}
    assert df.groupby("identity").orientation.nunique().max() == 1  # a fixed head direction
    assert df.path.tolist() == [f"images/{i}.jpg" for i in df.image_id]
    dates = [dt.date.fromisoformat(d) for d in df.date]
    assert all(d.year == 2026 for d in dates)
    # Rows are shuffled: database and query rows are interleaved, not in blocks.
    changes = (df.split != df.split.shift()).sum() - 1
    assert changes > 10


def test_images_are_rgb_jpegs_of_the_requested_size(default_set):
    root, _, df = default_set
    assert len(list((root / "images").iterdir())) == len(df)
    for rel in df.path:
        with Image.open(root / rel) as im:
            assert im.format == "JPEG"
            assert im.mode == "RGB"
            assert im.size == (256, 256)


def test_query_photos_differ_from_database_photos(default_set):
    root, _, df = default_set
    identity = df.identity[df.split == "database"].iloc[0]
    rows = df[df.identity == identity]
    photos = [_pixels(root, p).astype(np.int16) for p in rows.path]
    for a, b in itertools.combinations(photos, 2):
        assert np.abs(a - b).mean() > 5  # different pose, light, background


def test_same_arguments_give_identical_output(tmp_path):
    meta_a = make_demo_dataset(tmp_path / "a", **SMALL)
    meta_b = make_demo_dataset(tmp_path / "b", **SMALL)
    assert meta_a.read_bytes() == meta_b.read_bytes()
    df = pd.read_csv(meta_a)
    for rel in df.path:
        assert np.array_equal(_pixels(tmp_path / "a", rel), _pixels(tmp_path / "b", rel))
    assert (tmp_path / "a" / "demo_params.json").read_bytes() == (tmp_path / "b" / "demo_params.json").read_bytes()


def test_other_seed_gives_other_data(tmp_path):
    meta_a = make_demo_dataset(tmp_path / "a", **SMALL)
    meta_b = make_demo_dataset(tmp_path / "b", **{**SMALL, "seed": 8})
    assert meta_a.read_bytes() != meta_b.read_bytes()
    assert not np.array_equal(_pixels(tmp_path / "a", "images/0.jpg"), _pixels(tmp_path / "b", "images/0.jpg"))


def test_small_counts_and_names(tmp_path):
    df = pd.read_csv(make_demo_dataset(tmp_path, **{**SMALL, "dataset_name": "Toy"}))
    assert len(df) == 4 * 3 + 4 * 2 + 2 * 2
    assert set(df.dataset) == {"Toy"}
    assert all(i.startswith("Toy_") for i in df.identity)
    with Image.open(tmp_path / df.path[0]) as im:
        assert im.size == (96, 96)


def test_individual_patterns_differ():
    individuals = [make_individual(0, k) for k in range(8)]
    canon = [render_animal(ind, 128) for ind in individuals]
    for (rgb_a, alpha_a), (rgb_b, alpha_b) in itertools.combinations(canon, 2):
        both = (alpha_a > 0.9) & (alpha_b > 0.9)
        assert both.sum() > 1000  # the bodies overlap enough to compare coats
        diff = np.abs(rgb_a[both] - rgb_b[both]).mean()
        assert diff > 15, diff
    # Several pattern families are in use, not one pattern recoloured.
    kinds = {make_individual(0, k).kind for k in range(22)}
    assert len(kinds) >= 3


def test_individual_rendering_is_deterministic():
    ind = make_individual(3, 5)
    assert ind == make_individual(3, 5)
    assert ind != make_individual(3, 6)
    rgb_a, alpha_a = render_animal(ind, 64)
    rgb_b, alpha_b = render_animal(ind, 64)
    assert np.array_equal(rgb_a, rgb_b) and np.array_equal(alpha_a, alpha_b)
    assert rgb_a.shape == (64, 64, 3) and alpha_a.shape == (64, 64)
    assert 0.1 < alpha_a.mean() < 0.6  # an animal, not an empty or full frame


def test_second_call_is_a_no_op(tmp_path):
    meta = make_demo_dataset(tmp_path, **SMALL)
    first_image = tmp_path / "images" / "0.jpg"
    before = (
        meta.stat().st_mtime_ns,
        first_image.stat().st_mtime_ns,
        (tmp_path / "demo_params.json").stat().st_mtime_ns,
    )
    assert make_demo_dataset(tmp_path, **SMALL) == meta
    after = (
        meta.stat().st_mtime_ns,
        first_image.stat().st_mtime_ns,
        (tmp_path / "demo_params.json").stat().st_mtime_ns,
    )
    assert before == after


def test_changed_parameters_regenerate(tmp_path):
    meta = make_demo_dataset(tmp_path, **SMALL)
    old_bytes = meta.read_bytes()
    smaller = {**SMALL, "n_known": 2, "n_new": 1, "seed": 1}
    make_demo_dataset(tmp_path, **smaller)
    assert meta.read_bytes() != old_bytes
    df = pd.read_csv(meta)
    assert len(df) == 2 * 3 + 2 * 2 + 1 * 2
    # Old images beyond the new count are gone, and no temporary folder is left.
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(f"{i}.jpg" for i in df.image_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_params.json", "images", "metadata.csv"]
    params = json.loads((tmp_path / "demo_params.json").read_text())
    assert params["seed"] == 1 and params["n_known"] == 2


def test_missing_image_triggers_regeneration(tmp_path):
    make_demo_dataset(tmp_path, **SMALL)
    (tmp_path / "images" / "3.jpg").unlink()
    make_demo_dataset(tmp_path, **SMALL)
    assert (tmp_path / "images" / "3.jpg").is_file()


def test_interrupted_run_leaves_a_consistent_data_set(tmp_path, monkeypatch):
    meta = make_demo_dataset(tmp_path, **SMALL)
    old_bytes = meta.read_bytes()
    calls = []
    real_render = demo.render_photo

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        return real_render(*args, **kwargs)

    monkeypatch.setattr(demo, "render_photo", failing_render)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(tmp_path, **{**SMALL, "seed": 99})
    # The old, complete data set is still there; no temporary files are left.
    assert meta.read_bytes() == old_bytes
    assert all((tmp_path / rel).is_file() for rel in pd.read_csv(meta).path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    monkeypatch.setattr(demo, "render_photo", real_render)
    make_demo_dataset(tmp_path, **{**SMALL, "seed": 99})
    assert meta.read_bytes() != old_bytes


def test_fresh_run_that_fails_leaves_no_metadata(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "render_photo", boom)
    with pytest.raises(RuntimeError):
        make_demo_dataset(tmp_path / "fresh", **SMALL)
    assert not (tmp_path / "fresh" / "metadata.csv").exists()


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, n_known=0, n_new=0)
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, database_per_individual=0)
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, image_size=8)
