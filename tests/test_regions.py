"""Regions of photos: reading bbox and segmentation cells (errors included), cutting regions out
(EXIF orientation, margin, masks), and cache keys that keep a crop apart from its whole photo
(descriptors, keypoints, Ray rows)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco

from wildreid.data.dataset import DatasetError, load_csv, load_query_photos
from wildreid.data.images import ImageReadError, content_hash, decode_image
from wildreid.data.regions import (
    Region,
    format_bbox,
    parse_bbox,
    parse_segmentation,
    read_region,
    region_key,
    region_picture,
    regions_of,
    upright_size,
)
from wildreid.describe.backbones import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_backbone
from wildreid.describe.extract import EmbeddingCache, extract_embeddings
from wildreid.describe.foreground import table_regions
from wildreid.local.base import get_method
from wildreid.local.cache import local_features, missing_digests

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _quadrants(width=200, height=100) -> Image.Image:
    """Four flat colours, one per quadrant: a crop says by its colours where it was cut."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (255, 0, 0)
    pixels[: height // 2, width // 2 :] = (0, 255, 0)
    pixels[height // 2 :, : width // 2] = (0, 0, 255)
    pixels[height // 2 :, width // 2 :] = (255, 255, 0)
    return Image.fromarray(pixels)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _dataset(folder, rows, photo=None):
    """A metadata.csv with one photo (or ``photo``) per row and the given extra cells."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "a.png").write_bytes(_png(photo or _quadrants()))
    table = pd.DataFrame(
        [
            {"image_id": str(i), "identity": f"id{i % 2}", "path": "images/a.png", "split": "database", **cells}
            for i, cells in enumerate(rows)
        ]
    )
    table.to_csv(folder / "metadata.csv", index=False)
    return folder / "metadata.csv"


# --------------------------------------------------------------------------------------------
# Cells


def test_bbox_cells_in_wildlife_datasets_form():
    assert parse_bbox("[10, 20, 100, 80]") == (10.0, 20.0, 100.0, 80.0)
    assert parse_bbox("(10.5, 20, 100, 80)") == (10.5, 20.0, 100.0, 80.0)  # Python literal, as str() writes
    assert parse_bbox([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)
    assert format_bbox((10.0, 20.0, 100.0, 80.5)) == "[10, 20, 100, 80.5]"
    for bad, reason in (
        ("[10, 20, 100]", "four numbers"),
        ("[10, 20, 0, 80]", "must both be positive"),
        ("[10, 20, -5, 80]", "must both be positive"),
        ("[10, 20, nan, 80]", "not a list"),
        ('["a", 20, 5, 80]', "four finite numbers"),
        ("10 20 100 80", "not a list"),
        ("__import__('os')", "not a list"),  # a literal only: never evaluated as code
    ):
        with pytest.raises(ValueError, match=reason):
            parse_bbox(bad)


def test_segmentation_cells_rle_and_polygons():
    mask = np.zeros((100, 200), np.uint8, order="F")
    mask[10:40, 20:90] = 1
    compressed = coco.encode(mask)
    compressed = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    assert parse_segmentation(json.dumps(compressed)) == compressed
    assert parse_segmentation(str(compressed))["counts"] == compressed["counts"]  # str() of the dict
    runs = {"size": [2, 3], "counts": [1, 4, 1]}
    assert parse_segmentation(json.dumps(runs)) == runs
    assert parse_segmentation("[1, 1, 5, 1, 5, 3]") == [[1.0, 1.0, 5.0, 1.0, 5.0, 3.0]]
    assert len(parse_segmentation("[[1, 1, 5, 1, 5, 3], [0, 0, 2, 0, 2, 2]]")) == 2
    for bad, reason in (
        ('{"size": [2, 3], "counts": [1, 4]}', "add up to 5, not height x width = 6"),
        ('{"size": [2], "counts": "abc"}', "'size': \\[height, width\\]"),
        ("[1, 2, 3, 4]", "at least three x, y pixel pairs"),
        ("masks/0001.png", "mask image files are not read"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_segmentation(bad)


def test_bad_bbox_names_file_row_field_and_what_to_do(tmp_path):
    csv = _dataset(tmp_path, [{"bbox": "[10, 20, 100, 80]"}, {"bbox": ""}, {"bbox": "[10, 20, 0, 80]"}])
    with pytest.raises(DatasetError) as raised:
        load_csv(csv)
    message = str(raised.value)
    assert "metadata.csv" in message and "row 4, field 'bbox': '[10, 20, 0, 80]'" in message
    assert "[x, y, width, height] in pixels" in message and "leave the cell empty" in message
    assert "row 2" not in message and "row 3" not in message


def test_box_outside_the_photo_is_found_at_load(tmp_path):
    # [x1, y1, x2, y2] written where [x, y, w, h] is meant runs past a 200 x 100 photo
    csv = _dataset(tmp_path, [{"bbox": "[150, 60, 190, 95]"}, {"bbox": "[300, 20, 10, 10]"}])
    with pytest.raises(DatasetError) as raised:
        load_csv(csv)
    message = str(raised.value)
    assert "row 2, field 'bbox': [150, 60, 190, 95] runs past the photo's edge (200x100 pixels)" in message
    assert "row 3, field 'bbox': [300, 20, 10, 10] lies outside the photo" in message
    assert "[x1, y1, x2, y2]" in message
    # a box that only touches the edge (detectors round) is fine, and is kept in canonical form
    csv = _dataset(tmp_path, [{"bbox": "[100.0, 50, 101, 51]"}])
    assert load_csv(csv).table["bbox"].tolist() == ["[100, 50, 101, 51]"]


def test_bad_segmentation_is_reported_with_its_row(tmp_path):
    csv = _dataset(tmp_path, [{"segmentation": '{"size": [100, 200], "counts": [5]}'}])
    with pytest.raises(DatasetError, match=r"row 2, field 'segmentation': .* add up to 5"):
        load_csv(csv)
    other = coco.encode(np.ones((10, 10), np.uint8, order="F"))
    csv = _dataset(tmp_path, [{"segmentation": json.dumps({"size": [10, 10], "counts": other["counts"].decode()})}])
    with pytest.raises(DatasetError, match=r"the mask is 10x10 pixels, the photo 200x100"):
        load_csv(csv)


def test_query_photos_csv_keeps_and_checks_regions(tmp_path):
    (tmp_path / "q.png").write_bytes(_png(_quadrants()))
    pd.DataFrame({"path": ["q.png"], "bbox": ["[0, 0, 50, 0]"]}).to_csv(tmp_path / "q.csv", index=False)
    with pytest.raises(DatasetError, match=r"photo q.png, field 'bbox'.*must both be positive"):
        load_query_photos([tmp_path / "q.csv"])
    pd.DataFrame({"path": ["q.png"], "bbox": ["[0, 0, 50, 40]"]}).to_csv(tmp_path / "q.csv", index=False)
    assert load_query_photos([tmp_path / "q.csv"])["bbox"].tolist() == ["[0, 0, 50, 40]"]


# --------------------------------------------------------------------------------------------
# Pixels


def test_region_is_cut_with_its_margin_and_clipped():
    photo = _quadrants()
    data = _png(photo)
    picture, mask = read_region(photo, data, Region((10, 10, 60, 30), margin=0.0))
    assert picture.size == (60, 30) and mask is None
    assert set(map(tuple, np.asarray(picture).reshape(-1, 3))) == {(255, 0, 0)}  # top-left quadrant only
    grown, _ = read_region(photo, data, Region((10, 10, 60, 30), margin=0.5))
    assert grown.size == (100, 55)  # 30 px left and right, 15 above and below, clipped at 0 on the left and top
    with pytest.raises(ImageReadError, match=r"bbox \[500, 10, 60, 30\] leaves nothing of the 200x100 photo"):
        read_region(photo, data, Region((500, 10, 60, 30), margin=0.0), "a.png")


def test_box_is_on_the_photo_as_displayed(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6: the box is on the upright picture (as
    MegaDetector and wildlife-datasets read it), not on the stored pixels."""
    upright = _quadrants(200, 100)
    stored = upright.transpose(Image.ROTATE_90)  # orientation 6 turns it back clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    data = buffer.getvalue()
    assert upright_size(data) == (200, 100)
    picture, _ = read_region(decode_image(data), data, Region((110, 60, 80, 30), margin=0.0))
    assert picture.size == (80, 30)
    assert np.abs(np.asarray(picture, np.int16).mean((0, 1)) - (255, 255, 0)).max() < 12  # bottom right: yellow


def test_segmentation_crops_to_the_mask_and_blackens_the_rest():
    photo = _quadrants()
    mask = np.zeros((100, 200), np.uint8, order="F")
    mask[20:40, 30:50] = 1  # a 20 x 20 square in the red quadrant
    mask[30, 50:70] = 1  # and a thin line into the green one
    rle = coco.encode(mask)
    region = Region(None, json.dumps({"size": [100, 200], "counts": rle["counts"].decode()}), margin=0.0)
    picture, cut = read_region(photo, _png(photo), region)
    assert picture.size == (40, 20) and cut.shape == (20, 40) and cut.sum() == mask.sum()
    shown = np.asarray(region_picture(_png(photo), "a.png", region))
    assert (shown[~cut] == 0).all() and (shown[cut].max(axis=1) == 255).all()
    polygon = Region(None, json.dumps([[30, 20, 50, 20, 50, 40, 30, 40]]), margin=0.0)
    assert read_region(photo, _png(photo), polygon)[0].size[0] in (20, 21)


# --------------------------------------------------------------------------------------------
# Cache keys


def test_region_keys_differ_from_the_photo_and_from_each_other():
    digest = "ab" * 32
    one = Region((10, 10, 50, 50))
    keys = {
        digest,
        region_key(digest, one),
        region_key(digest, Region((10, 10, 50, 51))),
        region_key(digest, Region((10, 10, 50, 50), margin=0.2)),
        region_key(digest, Region((10, 10, 50, 50), json.dumps([[0, 0, 5, 0, 5, 5]]))),
    }
    assert len(keys) == 5
    assert region_key(digest, None) == digest
    assert region_key(digest, one) == region_key(digest, Region.from_json(one.to_json()))
    assert len(region_key(digest, one)) == 64 and int(region_key(digest, one), 16) >= 0  # a hex digest too


@pytest.fixture(scope="module")
def tiny_backbone():
    torch.manual_seed(0)
    backbone = load_backbone("random:resnet18")
    backbone.preprocess = Preprocess((64, 64), IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    return backbone


@pytest.mark.parametrize("decode", ["exact", "device"])
def test_descriptor_cache_never_gives_a_crop_the_whole_photo(tmp_path, tiny_backbone, decode):
    path = tmp_path / "a.jpg"
    _quadrants().save(path, "JPEG", quality=95)
    paths = [str(path)] * 3
    regions = [None, Region((0, 0, 100, 50), margin=0.0), Region((100, 50, 100, 50), margin=0.0)]
    cache = tmp_path / "cache"
    first = extract_embeddings(paths, tiny_backbone, cache_dir=cache, regions=regions, decode=decode, progress=False)
    assert first.extracted == 3 and first.hashes[0] == first.hashes[1] == first.hashes[2]
    assert len(set(first.keys)) == 3 and first.keys[0] == first.hashes[0]
    vectors = first.embeddings
    assert not np.allclose(vectors[0], vectors[1]) and not np.allclose(vectors[1], vectors[2])
    # the crop's vector is the vector of the cropped picture itself
    crop = tmp_path / "crop.png"
    decode_image(path.read_bytes()).crop((0, 0, 100, 50)).save(crop)
    alone = extract_embeddings([str(crop)], tiny_backbone, progress=False)
    np.testing.assert_allclose(vectors[1], alone.embeddings[0], rtol=1e-3, atol=1e-3)
    # a second run reads all three from the cache, each under its own key
    folder = next(p for p in cache.iterdir() if p.is_dir()).name
    assert set(EmbeddingCache(cache, folder).hashes()) == set(first.keys)
    again = extract_embeddings(paths, tiny_backbone, cache_dir=cache, regions=regions, decode=decode, progress=False)
    assert again.extracted == 0 and np.array_equal(again.embeddings, vectors)


def test_keypoint_cache_keys_and_mask(tmp_path, shared_data):
    photo = sorted((shared_data / "NyalaData" / "images").glob("*.jpg"))[0]
    data = photo.read_bytes()
    width, height = upright_size(data)
    method = get_method("rootsift")
    box = Region((width * 0.25, height * 0.25, width * 0.5, height * 0.5), margin=0.0)
    # a mask keeping the left half of the box only
    mask = np.zeros((height, width), np.uint8, order="F")
    mask[int(height * 0.25) : int(height * 0.75), int(width * 0.25) : int(width * 0.5)] = 1
    rle = coco.encode(mask)
    masked = Region(box.box, json.dumps({"size": [height, width], "counts": rle["counts"].decode()}), margin=0.0)
    paths = [str(photo)] * 3
    found = local_features(paths, method, cache_dir=tmp_path, regions=[None, box, masked], progress=False)
    whole, cut, half = found
    assert len(whole) and len(cut) and len(half)
    assert cut.image_size != whole.image_size
    # keypoints of the masked region lie on the left half of the box's picture
    assert (half.keypoints[:, 0] / half.scale <= width * 0.25 + 1).all()
    assert len(half) < len(cut)
    digest = content_hash(data)
    keys = [digest, region_key(digest, box), region_key(digest, masked)]
    assert missing_digests(keys, method, tmp_path) == []
    assert missing_digests([region_key(digest, Region(box.box, margin=0.3))], method, tmp_path) != []
    again = local_features(paths, method, cache_dir=tmp_path, regions=[None, box, masked], progress=False)
    for first, second in zip(found, again):
        np.testing.assert_array_equal(first.keypoints, second.keypoints)


def test_table_regions_take_metadata_first_then_the_foreground(tmp_path):
    table = pd.DataFrame({"path": ["a", "b"], "bbox": ["[0, 0, 5, 5]", None]})
    filled, regions, record = table_regions(table, 0.25)
    assert filled["region_source"].tolist() == ["metadata", None] and record is None
    assert regions[0] == Region((0.0, 0.0, 5.0, 5.0), None, 0.25) and regions[1] is None
    assert regions_of(pd.DataFrame({"path": ["a"]})) is None
    with pytest.raises(ValueError, match="region margin -0.1"):
        Region((0, 0, 5, 5), margin=-0.1)
