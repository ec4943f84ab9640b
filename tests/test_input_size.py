"""The size pictures are read at: chosen from the database photos' size, never enlarged, kept by a
saved gallery for its queries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wildreid.data.dataset import load_dataset
from wildreid.data.regions import Region
from wildreid.describe.backbones import load_backbone
from wildreid.describe.extract import extract_embeddings
from wildreid.describe.input_size import INPUT_SIZES, read_at_input_size, size_for_photos
from wildreid.gallery.gallery import Gallery
from wildreid.presets import Preset, get_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def photos(folder, sizes) -> list[str]:
    paths = []
    for number, (width, height) in enumerate(sizes):
        path = folder / f"{number}.jpg"
        Image.new("RGB", (width, height), (90, 120, 60)).save(path)
        paths.append(str(path))
    return paths


def test_the_size_follows_the_photos_median_short_side_and_never_enlarges(tmp_path):
    assert size_for_photos([], 224) == 224  # nothing to read
    (tmp_path / "crops").mkdir()
    (tmp_path / "mid").mkdir()
    (tmp_path / "large").mkdir()
    crops = photos(tmp_path / "crops", [(130, 150), (100, 185), (140, 120)])
    mid = photos(tmp_path / "mid", [(400, 330), (350, 500), (900, 340)])
    large = photos(tmp_path / "large", [(1373, 1169), (1600, 1200), (90, 80)])
    assert size_for_photos(crops, 224) == 224  # small crops are not enlarged
    assert size_for_photos(mid, 224) == 320
    assert size_for_photos(large, 224) == max(INPUT_SIZES)  # the median, not the one small photo
    assert size_for_photos(crops, 288) == 288  # never below the backbone's own size
    # an unreadable file is left out (extraction reports it), not a reason to fail
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    assert size_for_photos([*large, str(broken), str(broken)], 224) == max(INPUT_SIZES)
    assert size_for_photos([str(broken)], 224) == 224
    # a region is what is read: a 120-pixel box in a large photo is a small picture
    boxes = [Region((10.0, 10.0, 120.0, 150.0)) for _ in large]
    assert size_for_photos(large, 224, boxes) == 224


def test_auto_resizes_only_a_network_that_reads_any_size(tmp_path):
    (tmp_path / "large").mkdir()
    large = pd.DataFrame({"path": photos(tmp_path / "large", [(1373, 1169), (1600, 1200)]), "split": "database"})
    small_queries = pd.DataFrame({"path": photos(tmp_path, [(100, 120)] * 3), "split": "query"})
    backbone = load_backbone("random:tf_efficientnet_lite0")
    before = backbone.cache_key
    read_at_input_size(backbone, None, large, 0.0)
    assert backbone.preprocess.size == (224, 224)
    # the size follows the database photos (the queries are not known when a gallery is fitted)
    read_at_input_size(backbone, "auto", pd.concat([large, small_queries]), 0.0)
    assert backbone.preprocess.size == (384, 384) and backbone.cache_key != before
    read_at_input_size(backbone, 256, large, 0.0)  # a number is that size
    assert backbone.preprocess.size == (256, 256)
    fixed = load_backbone("random:tf_efficientnet_lite0")
    fixed.model.pretrained_cfg = {**fixed.model.pretrained_cfg, "fixed_input_size": True}  # as a Swin says
    read_at_input_size(fixed, "auto", large, 0.0)
    assert fixed.preprocess.size == (224, 224)
    with pytest.raises(ValueError, match="input size"):
        get_preset("offline").replace(input_size="large")


def test_a_gallery_of_large_photos_reads_them_larger_and_its_queries_alike(shared_data, tmp_path):
    """NyalaData's full photos are read at 384 where a preset asks for it, LionData's crops at 224;
    the saved gallery describes a new photo at its own size, as its database was."""
    assert get_preset("fusion").input_size == "auto" and get_preset("offline").input_size is None
    offline: Preset = get_preset("offline").replace(adapt="none", input_size="auto")  # no keypoints: quicker
    nyala = load_dataset(shared_data / "NyalaData").table
    database = nyala[nyala["split"] == "database"].head(6).reset_index(drop=True)
    query = nyala[nyala["split"] == "query"].head(1).reset_index(drop=True)
    gallery = Gallery.build(database, offline, cache_dir=tmp_path / "cache", progress=False)
    assert gallery.preset.preprocess is not None and gallery.preset.preprocess.size == (384, 384)
    gallery.save(tmp_path / "gallery")
    loaded = Gallery.load(tmp_path / "gallery")
    assert loaded.backbone.preprocess.size == (384, 384) and loaded.backbone.cache_key == gallery.backbone.cache_key
    at_384 = load_backbone(offline.backbone)
    read_at_input_size(at_384, 384, query, 0.0)
    expected = extract_embeddings(query["path"].tolist(), at_384, progress=False).embeddings
    described = extract_embeddings(query["path"].tolist(), loaded.backbone, progress=False).embeddings
    np.testing.assert_allclose(described, expected, rtol=0, atol=1e-6)

    lions = load_dataset(shared_data / "LionData").table
    crops = lions[lions["split"] == "database"].head(6).reset_index(drop=True)
    small = Gallery.build(crops, offline, cache_dir=tmp_path / "cache", progress=False)
    assert small.preset.preprocess.size == (224, 224)


def test_a_catalogue_gallery_reads_its_photos_at_their_size_and_keeps_it(
    shared_data, tmp_path, lite0_backbone, monkeypatch
):
    """The web app, `catalog identify` and `watch --catalog` share one model loaded at its own
    size: the catalogue's gallery chooses its size from the catalogue's photos when it is built,
    keeps it as photos are added and when a restarted server loads it, and leaves the shared
    model as it was."""
    from wildreid.catalog.importer import import_dataset
    from wildreid.catalog.store import Catalog
    from wildreid.review.service import ReviewService

    preset = get_preset("offline").replace(adapt="none", input_size="auto")  # no keypoints: quicker
    nyala = load_dataset(shared_data / "NyalaData")
    database = nyala.database
    first = database.groupby("identity").head(2).head(6)
    later = database[~database["image_id"].isin(first["image_id"])].head(1)
    assert lite0_backbone.preprocess.size == (224, 224)
    with Catalog(tmp_path / "c.sqlite") as catalog:
        import_dataset(catalog, nyala.subset(nyala.table["image_id"].isin(first["image_id"])))
        service = ReviewService(preset, backbone=lite0_backbone, cache_dir=tmp_path / "cache")
        gallery = service.sync(catalog)
        assert gallery.backbone.preprocess.size == (384, 384)  # NyalaData's full photos
        assert gallery.backbone.model is lite0_backbone.model and lite0_backbone.preprocess.size == (224, 224)

        import_dataset(catalog, nyala.subset(nyala.table["image_id"].isin(later["image_id"])))
        grown = service.sync(catalog)
        assert grown is gallery and len(grown.table) == 7  # added to, not rebuilt
        at_384 = load_backbone("efficientnet-lite0")
        read_at_input_size(at_384, 384, later, 0.0)
        expected = extract_embeddings(later["path"].tolist(), at_384, progress=False).embeddings
        part = grown.groups["NyalaData"]
        held = part.index.vectors(np.array([part.size - 1]))
        np.testing.assert_allclose(held, expected / np.linalg.norm(expected), rtol=0, atol=1e-5)

        # A restarted server (a new service, the model at its own size) loads the saved gallery
        # at the size it chose instead of rebuilding it, and so does learning from answers.
        def no_rebuild(*args, **kwargs):
            raise AssertionError("the saved gallery was rebuilt instead of loaded")

        monkeypatch.setattr(Gallery, "build", no_rebuild)
        restarted = ReviewService(preset, backbone=lite0_backbone, cache_dir=tmp_path / "cache")
        reloaded = restarted.sync(catalog)
        assert reloaded.backbone.preprocess.size == (384, 384) and len(reloaded.table) == 7
        assert restarted.learn(catalog).backbone.preprocess.size == (384, 384)
