"""The automatic foreground (class-activation box of the offline ImageNet classifier): it keeps a
real animal pasted on a site's texture and drops most of the texture; its boxes are cached; a run
with it describes every photo by its box, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from wildreid.cli.main import app
from wildreid.data.regions import Region, mask_pixels, parse_bbox, region_picture
from wildreid.describe.foreground import add_foreground, cam_boxes, settings_key
from wildreid.presets import get_preset

runner = CliRunner()
CANVAS = (640, 480)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _site(shared_data) -> Image.Image:
    """A site without an animal: the bottom strip of a NyalaData photo (soil and rocks, below the
    nyala's hooves) tiled over the canvas."""
    photo = Image.open(shared_data / "NyalaData" / "images" / "000001.jpg").convert("RGB")
    strip = photo.crop((0, int(photo.height * 0.82), photo.width, photo.height))
    tile = strip.resize((CANVAS[0], round(CANVAS[0] * strip.height / strip.width)))
    canvas = Image.new("RGB", CANVAS)
    for y in range(0, CANVAS[1], tile.height):
        canvas.paste(tile, (0, y))
    return canvas


@pytest.fixture(scope="module")
def pasted_lions(shared_data, tmp_path_factory):
    """Lion faces from LionData pasted at different places on the site: (paths, true boxes)."""
    table = pd.read_csv(shared_data / "LionData" / "metadata.csv", dtype=str)
    faces = table[table["viewpoint"].isin(["portrait", "left_face", "right_face"])]["path"].iloc[::40][:4]
    folder = tmp_path_factory.mktemp("pasted")
    site = _site(shared_data)
    paths, truth = [], []
    for number, (path, place) in enumerate(zip(faces, [(60, 40), (380, 60), (120, 250), (400, 260)])):
        lion = Image.open(shared_data / "LionData" / path).convert("RGB")
        scale = 200 / max(lion.size)
        lion = lion.resize((round(lion.width * scale), round(lion.height * scale)), Image.BICUBIC)
        canvas = site.copy()
        canvas.paste(lion, place)
        canvas.save(folder / f"{number}.png")
        paths.append(str(folder / f"{number}.png"))
        truth.append((*place, lion.width, lion.height))
    return paths, truth


def _inside(animal, box) -> float:
    """The fraction of ``animal`` (x, y, w, h) that ``box`` covers."""
    width = max(0.0, min(animal[0] + animal[2], box[0] + box[2]) - max(animal[0], box[0]))
    height = max(0.0, min(animal[1] + animal[3], box[1] + box[3]) - max(animal[1], box[1]))
    return width * height / (animal[2] * animal[3])


def test_keeps_the_animal_and_drops_the_site(pasted_lions, tmp_path):
    paths, truth = pasted_lions
    boxes, record = cam_boxes(paths, cache_dir=tmp_path, device="cpu")
    assert record.computed == len(paths) and record.cached == 0
    for animal, box in zip(truth, boxes):
        assert _inside(animal, box) >= 0.9, (animal, box)  # the lion is kept...
        assert box[2] * box[3] <= 0.5 * CANVAS[0] * CANVAS[1], (animal, box)  # ...and most of the site dropped
    again, record = cam_boxes(paths, cache_dir=tmp_path, device="cpu")
    assert record.cached == len(paths) and record.computed == 0
    np.testing.assert_allclose(np.array(again), np.array(boxes), atol=0.01)
    assert (tmp_path / settings_key()).is_dir()


def test_mask_keeps_the_animal_and_blackens_the_site(pasted_lions, tmp_path):
    paths, truth = pasted_lions
    table, record = add_foreground(pd.DataFrame({"path": paths}), "cam-mask", cache_dir=tmp_path, device="cpu")
    assert record.computed == len(paths) and table["region_source"].eq("foreground-cam-mask").all()
    for path, animal, box, outline in zip(paths, truth, table["bbox"], table["segmentation"]):
        mask = mask_pixels(outline, CANVAS[1], CANVAS[0])
        x, y, w, h = animal
        assert mask[y : y + h, x : x + w].mean() >= 0.8, animal  # the lion is kept...
        assert mask.mean() <= 0.4, animal  # ...and most of the site dropped
        data = Path(path).read_bytes()
        picture = np.asarray(region_picture(data, path, Region(parse_bbox(box), outline, 0.1)))
        assert (picture.sum(axis=2) == 0).mean() > 0.2  # the site inside the box is black
    # the maps are shared with 'cam': its boxes cost nothing more
    _, record = add_foreground(pd.DataFrame({"path": paths}), "cam", cache_dir=tmp_path, device="cpu")
    assert record.cached == len(paths) and record.computed == 0


def test_only_rows_without_a_region_get_one(pasted_lions, tmp_path):
    paths, _ = pasted_lions
    table = pd.DataFrame({"path": paths[:2], "bbox": ["[1, 2, 30, 40]", None]})
    filled, record = add_foreground(table, "cam", cache_dir=tmp_path, device="cpu")
    assert filled["bbox"].iloc[0] == "[1, 2, 30, 40]" and pd.isna(filled["region_source"].iloc[0])
    assert filled["region_source"].iloc[1] == "foreground-cam" and filled["bbox"].iloc[1] != table["bbox"].iloc[0]
    assert record.computed == 1
    with pytest.raises(ValueError, match="foreground method 'sam'"):
        add_foreground(table, "sam")
    with pytest.raises(ValueError, match="foreground method 'grabcut'"):
        get_preset("offline").replace(foreground="grabcut")
    with pytest.raises(ValueError, match="region margin -0.1"):
        get_preset("offline").replace(region_margin=-0.1)
    assert get_preset("offline").replace(foreground="none").foreground is None


def test_identify_with_the_foreground_end_to_end(shared_data, tmp_path):
    table = pd.read_csv(shared_data / "NyalaData" / "metadata.csv", dtype=str)
    table = pd.concat([table[table["split"] == "database"].head(10), table[table["split"] == "query"].head(3)])
    (tmp_path / "data" / "images").mkdir(parents=True)
    for path in table["path"]:
        shutil.copy(shared_data / "NyalaData" / path, tmp_path / "data" / path)
    table.to_csv(tmp_path / "data" / "metadata.csv", index=False)
    out = tmp_path / "out"
    arguments = [
        "identify",
        str(tmp_path / "data"),
        "--preset",
        "fusion",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--threshold",
        "none",
    ]
    result = runner.invoke(app, arguments + ["--out", str(out), "--foreground", "cam"])
    assert result.exit_code == 0, result.output
    candidates = pd.read_csv(out / "candidates.csv", dtype=str)
    assert candidates["region_source"].eq("foreground-cam").all() and candidates["bbox"].notna().all()
    assert list((out / "plots").glob("matches_*.png"))  # match pictures drawn from the regions
    # every photo's descriptor is its box's, never the whole photo's: a second run without the
    # foreground extracts them all again (the cache holds only boxes)
    again = runner.invoke(app, arguments + ["--out", str(tmp_path / "o2")])
    assert again.exit_code == 0, again.output
    record = pd.read_json(tmp_path / "o2" / "run.json", typ="series")
    assert record["timings"]["images_extracted"] == len(table)


def test_saved_gallery_keeps_its_regions_and_gives_queries_theirs(shared_data, tmp_path, lite0_backbone):
    """A gallery built with the foreground saves each photo's box, reloads it, skips a photo added
    twice (same bytes, same region), and describes query photos by their own boxes."""
    from wildreid.gallery.gallery import Gallery

    table = pd.read_csv(shared_data / "NyalaData" / "metadata.csv", dtype=str)
    table["path"] = [str(shared_data / "NyalaData" / p) for p in table["path"]]
    database = table[table["split"] == "database"].head(12).assign(dataset="nyala")
    queries = table[table["split"] == "query"].head(2)[["image_id", "path"]]
    preset = get_preset("offline").replace(foreground="cam", threshold=None)
    built = Gallery.build(database, preset, backbone=lite0_backbone, cache_dir=tmp_path / "cache", progress=False)
    assert built.table["region_source"].eq("foreground-cam").all() and built.table["bbox"].notna().all()
    built.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g", backbone=lite0_backbone)
    assert loaded.table["bbox"].tolist() == built.table["bbox"].tolist() and loaded.preset.foreground == "cam"
    counts = loaded.add(database.head(3), cache_dir=tmp_path / "cache", progress=False)
    assert (counts["added"], counts["skipped_duplicates"]) == (0, 3)
    result = loaded.identify(queries, cache_dir=tmp_path / "cache", progress=False)
    assert result.candidates["region_source"].eq("foreground-cam").all()
    assert result.timings["foreground_computed"] == 2 and result.timings["images_extracted"] == 2


def test_keypoints_of_the_whole_photo_when_the_preset_says_so(shared_data, tmp_path, lite0_backbone):
    from wildreid.gallery.gallery import Gallery, _empty_table

    path = str(sorted((shared_data / "NyalaData" / "images").glob("*.jpg"))[0])
    regions = [Region((10, 10, 200, 150), margin=0.0)]
    found = {}
    for whole in (False, True):
        preset = get_preset("fusion").replace(region_keypoints=not whole)
        gallery = Gallery(preset, lite0_backbone, _empty_table(), {})
        found[whole] = gallery._local_features([path], tmp_path, False, regions)[0]
    plain = Gallery(get_preset("fusion"), lite0_backbone, _empty_table(), {})._local_features([path], None, False, None)
    np.testing.assert_array_equal(found[True].keypoints, plain[0].keypoints)
    assert found[False].image_size != plain[0].image_size
