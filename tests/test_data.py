"""Loading the three layouts, validation messages, and safe image decoding."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wildreid.data.dataset import DatasetError, load_csv, load_dataset, load_folders, load_query_photos
from wildreid.data.images import ImageReadError, decode_image, read_image


def test_animalclef_metadata_groups_by_dataset(shared_data):
    dataset = load_csv(shared_data / "AnimalCLEF2025" / "metadata.csv", check_files=False)
    assert len(dataset.table) == 15209
    counts = dataset.table.groupby(["dataset", "split"]).size().unstack()
    assert counts.loc["LynxID2025"].tolist() == [2957, 946]
    assert counts.loc["SalamanderID2025"].tolist() == [1388, 689]
    assert counts.loc["SeaTurtleID2022"].tolist() == [8729, 500]
    assert dataset.queries["identity"].isna().all()
    assert dataset.database["identity"].notna().all()
    assert dataset.table["image_id"].iloc[0] == "0"


def test_animalclef_missing_images_are_reported(shared_data):
    with pytest.raises(DatasetError, match="none of the 15209 image files exist"):
        load_dataset(shared_data / "AnimalCLEF2025")


def test_dataset_is_folder_name_without_dataset_column(shared_data):
    dataset = load_dataset(shared_data / "LionData")
    assert set(dataset.table["dataset"]) == {"LionData"}
    assert len(dataset.database) == 592 and len(dataset.queries) == 148
    assert dataset.queries["identity"].notna().all()  # truth kept for evaluation


def _subset_csv(shared_data, tmp_path, rows=12, **renames):
    table = pd.read_csv(shared_data / "NyalaData" / "metadata.csv", dtype=str).head(rows)
    table["path"] = [str(shared_data / "NyalaData" / p) for p in table["path"]]
    table = table.rename(columns=renames)
    path = tmp_path / "mine.csv"
    table.to_csv(path, index=False)
    return path


def _lion_folder(shared_data, folder, rows=6):
    """A small dataset folder of its own: metadata.csv and links to LionData photos in images/."""
    table = pd.read_csv(shared_data / "LionData" / "metadata.csv", dtype=str).head(rows)
    (folder / "images").mkdir(parents=True)
    for path in table["path"]:
        shutil.copy(shared_data / "LionData" / path, folder / path)
    return table


def test_csv_with_custom_column_names(shared_data, tmp_path):
    path = _subset_csv(shared_data, tmp_path, path="file", identity="animal", split="role")
    dataset = load_csv(
        path, path_column="file", identity_column="animal", split_column="role", allow_outside_paths=True
    )
    assert len(dataset.table) == 12
    assert dataset.table["path"].map(lambda p: p.endswith(".jpg")).all()
    assert set(dataset.table["dataset"]) == {tmp_path.name}


def test_missing_columns_named_with_advice(shared_data, tmp_path):
    path = _subset_csv(shared_data, tmp_path, path="file")
    with pytest.raises(DatasetError) as error:
        load_csv(path, allow_outside_paths=True)
    message = str(error.value)
    assert str(path) in message and "'path'" in message and "--path-column" in message


def test_all_problems_reported_at_once(shared_data, tmp_path):
    table = pd.read_csv(_subset_csv(shared_data, tmp_path), dtype=str)
    table.loc[3, "image_id"] = table.loc[2, "image_id"]
    table.loc[5, "path"] = str(tmp_path / "gone1.jpg")
    table.loc[6, "path"] = str(tmp_path / "gone2.jpg")
    table.loc[7, "split"] = "train"
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError) as error:
        load_csv(tmp_path / "bad.csv", allow_outside_paths=True)
    message = str(error.value)
    assert "duplicate image_id" in message and "row 4, row 5" in message  # CSV line numbers
    assert "2 image file(s) not found" in message and "gone1.jpg" in message and "gone2.jpg" in message
    assert "'train'" in message and "row 9" in message


def test_query_dataset_without_database(shared_data, tmp_path):
    table = pd.read_csv(_subset_csv(shared_data, tmp_path), dtype=str)
    table["dataset"] = "A"
    table.loc[table["split"] == "query", "dataset"] = "B"
    table.loc[table.index[:2], "split"] = "query"
    table.loc[table.index[:2], "dataset"] = "B"
    table.to_csv(tmp_path / "groups.csv", index=False)
    with pytest.raises(DatasetError, match="dataset 'B' has .* queries but no database images"):
        load_csv(tmp_path / "groups.csv", allow_outside_paths=True)


def test_folder_per_identity_layout(shared_data, tmp_path):
    source = pd.read_csv(shared_data / "LionData" / "metadata.csv", dtype=str)
    database = source[source["split"] == "database"].groupby("identity").head(2).head(10)
    for row in database.itertuples():
        folder = tmp_path / "db" / row.identity
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / "LionData" / row.path, folder / f"{row.image_id}.jpg")
    (tmp_path / "queries").mkdir()
    query = source[source["split"] == "query"].iloc[0]
    shutil.copy(shared_data / "LionData" / query.path, tmp_path / "queries" / "q1.jpg")
    dataset = load_folders(tmp_path / "db", tmp_path / "queries")
    assert len(dataset.database) == 10 and len(dataset.queries) == 1
    assert set(dataset.database["identity"]) == set(database["identity"])
    assert dataset.queries["identity"].isna().all()
    assert dataset.queries["image_id"].iloc[0] == "query/q1.jpg"
    assert load_dataset(tmp_path / "db", query_dir=tmp_path / "queries").table.equals(dataset.table)


# ---------------------------------------------------------------------------------------------
# Hostile or broken metadata: one message naming the file, the rows and what to do


def test_paths_outside_the_dataset_folder_are_refused(shared_data, tmp_path):
    folder = tmp_path / "mine"
    table = _lion_folder(shared_data, folder)
    (tmp_path / "secret.jpg").write_bytes((folder / table["path"][0]).read_bytes())
    (folder / "images" / "link.jpg").symlink_to(tmp_path / "secret.jpg")  # a link leading out
    table.loc[1, "path"] = "../../../../../../etc/passwd"
    table.loc[2, "path"] = str(tmp_path / "secret.jpg")
    table.loc[3, "path"] = "images/link.jpg"
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(DatasetError) as error:
        load_dataset(folder)
    message = str(error.value)
    assert "3 image(s) lead outside the dataset folder" in message and "--allow-outside-paths" in message
    assert "row 3: ../../../../../../etc/passwd" in message and "row 4:" in message
    assert f"images/link.jpg is a symlink to {tmp_path / 'secret.jpg'}: 1 image(s) through it (row 5)" in message
    assert "row 2:" not in message and "row 6:" not in message
    table.loc[1, "path"] = table.loc[0, "path"]
    table.to_csv(folder / "metadata.csv", index=False)
    allowed = load_dataset(folder, allow_outside_paths=True)  # the user's explicit choice
    assert allowed.table["path"][2] == str(tmp_path / "secret.jpg")

    (tmp_path / "db" / "A").mkdir(parents=True)
    (tmp_path / "queries").mkdir()
    (tmp_path / "db" / "A" / "x.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(DatasetError, match="lead outside"):
        load_folders(tmp_path / "db", tmp_path / "queries")


def test_a_symlinked_images_folder_is_named_once_as_a_symlink(shared_data, tmp_path):
    """images/ is a link to a disk elsewhere: the message names that one link, says "symlink"
    and gives the command-line flag, instead of listing innocent-looking rows."""
    folder = tmp_path / "mine"
    table = _lion_folder(shared_data, folder)
    table.to_csv(folder / "metadata.csv", index=False)
    (folder / "images").rename(tmp_path / "photo-disk")
    (folder / "images").symlink_to(tmp_path / "photo-disk")
    with pytest.raises(DatasetError) as error:
        load_dataset(folder)
    message = str(error.value)
    assert f"images is a symlink to {tmp_path / 'photo-disk'}: {len(table)} image(s) through it" in message
    assert "add --allow-outside-paths to the command" in message and "row " + str(len(table) + 1) not in message
    assert len(load_dataset(folder, allow_outside_paths=True).table) == len(table)


def test_header_only_metadata_is_refused(tmp_path):
    (tmp_path / "metadata.csv").write_text("image_id,identity,path,split\n")
    with pytest.raises(DatasetError, match="metadata.csv: the file has a header but no rows"):
        load_dataset(tmp_path)


def test_semicolons_and_latin1_are_explained(shared_data, tmp_path):
    folder = tmp_path / "mine"
    table = _lion_folder(shared_data, folder)
    table.to_csv(folder / "metadata.csv", index=False, sep=";")
    with pytest.raises(DatasetError) as error:
        load_dataset(folder)
    assert str(folder / "metadata.csv") in str(error.value) and "separated by semicolons" in str(error.value)

    table.loc[3, "identity"] = "Zoé"
    table.to_csv(folder / "metadata.csv", index=False, encoding="latin-1")
    with pytest.raises(DatasetError) as error:
        load_dataset(folder)
    assert str(folder / "metadata.csv") in str(error.value) and "row 5 is not UTF-8" in str(error.value)
    table.to_csv(folder / "metadata.csv", index=False, encoding="utf-8")
    assert "Zoé" in set(load_dataset(folder).table["identity"])


def test_symbolic_link_loops_are_explained(shared_data, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for given in (tmp_path / "a", tmp_path / "a" / "metadata.csv"):
        with pytest.raises(DatasetError, match="symbolic link that loops"):
            load_dataset(given)
    folder = tmp_path / "mine"
    table = _lion_folder(shared_data, folder)
    (folder / "images" / "loop.jpg").symlink_to(folder / "images" / "loop.jpg")
    table.loc[2, "path"] = "images/loop.jpg"
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match="1 image file.s. are symbolic links that loop") as error:
        load_dataset(folder)  # was a RuntimeError, then "image file(s) not found"
    assert "row 4: " + str(folder / "images" / "loop.jpg") in str(error.value)
    assert "not found" not in str(error.value)

    # The folder-per-identity layout and photos given to identify: a loop was dropped in silence.
    (tmp_path / "db" / "A").mkdir(parents=True)
    (tmp_path / "db" / "A" / "x.jpg").write_bytes((folder / table["path"][0]).read_bytes())
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "q.jpg").symlink_to(tmp_path / "queries" / "r.jpg")
    (tmp_path / "queries" / "r.jpg").symlink_to(tmp_path / "queries" / "q.jpg")
    with pytest.raises(DatasetError, match="2 image file.s. are symbolic links that loop") as error:
        load_folders(tmp_path / "db", tmp_path / "queries")
    assert "query/q.jpg: " in str(error.value) and "query/r.jpg: " in str(error.value)
    with pytest.raises(DatasetError, match="2 photo.s. are symbolic links that loop"):
        load_query_photos([tmp_path / "queries"])


def test_identities_with_control_characters_are_refused(shared_data, tmp_path):
    folder = tmp_path / "mine"
    table = _lion_folder(shared_data, folder)
    table.loc[1, "identity"] = "two\nlines"
    table.loc[4, "identity"] = "tab\there"
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match=r"control character .* at row 3, row 6"):
        load_dataset(folder)


# ---------------------------------------------------------------------------------------------
# Images


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_exif_orientation_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(_encode(image, "JPEG", exif=exif))
    assert decoded.size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA", "1"])
def test_modes_become_rgb(mode):
    image = Image.new("RGB", (16, 12), (200, 100, 50)).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    decoded = decode_image(_encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (16, 12)


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode_image(_encode(image, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_scaled_to_eight_bit():
    values = np.full((10, 10), 65535, dtype=np.uint16)
    values[0, 0] = 0
    image = Image.fromarray(values)  # uint16 -> mode I;16
    decoded = np.asarray(decode_image(_encode(image, "PNG")))
    assert decoded.shape == (10, 10, 3) and decoded[5, 5].tolist() == [255, 255, 255] and decoded[0, 0, 0] == 0


def test_decompression_bomb_refused():
    # A tiny PNG that claims 20,000 x 20,000 pixels.
    bomb = _encode(Image.new("1", (20000, 20000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    with pytest.raises(ImageReadError, match="pixel limit|decompression bomb"):
        decode_image(bomb, "bomb.png")


def test_truncated_empty_and_garbage_images(tmp_path, shared_data):
    real = (shared_data / "NyalaData" / "images" / "000000.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(real[: len(real) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image" * 50)
    for name, reason in (
        ("truncated.jpg", "truncated|cannot decode"),
        ("empty.jpg", "empty file"),
        ("garbage.jpg", "cannot decode"),
    ):
        with pytest.raises(ImageReadError, match=reason) as error:
            read_image(tmp_path / name)
        assert name in str(error.value)
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image(tmp_path / "absent.jpg")


def test_unidentified_image_names_the_file_not_a_buffer():
    with pytest.raises(ImageReadError) as error:
        decode_image(b"plain text, no picture" * 20, "notes.jpg")
    assert str(error.value).startswith("notes.jpg: ") and "BytesIO" not in str(error.value)


def test_huge_jpeg_decodes_within_the_memory_bound():
    from wildreid.data.images import MAX_DECODED_PIXELS

    huge = _encode(Image.new("L", (14_000, 14_000), 90), "JPEG", quality=1)  # 196 Mpx, ~2 MB
    decoded = decode_image(huge, "huge.jpg")
    assert decoded.size == (3500, 3500) and decoded.width * decoded.height <= MAX_DECODED_PIXELS
    assert abs(decoded.getpixel((10, 10))[0] - 90) < 12
    drafted = decode_image(huge, "huge.jpg", draft_size=(448, 448))  # the fast path: smaller still
    assert drafted.size == (1750, 1750)
    wide_png = _encode(Image.new("RGB", (12_000, 2_500), "red"), "PNG")  # 30 Mpx, no DCT scaling
    assert decode_image(wide_png, "wide.png").size == (6000, 1250)
    normal = _encode(Image.new("RGB", (6000, 4000), "red"), "JPEG", quality=5)
    assert decode_image(normal, "camera.jpg").size == (6000, 4000)  # ordinary photos stay exact


def test_real_png_named_jpeg_bytes_decode(shared_data):
    # LionData stores JPEG bytes under .png names, as the originals do.
    image = read_image(shared_data / "LionData" / "images" / "000000.png")
    assert image.mode == "RGB" and min(image.size) > 10


def test_two_camera_folders_with_the_same_file_names_get_ids_with_their_folder(tmp_path):
    """camA and camB both hold IMG_0001.JPG: with several folders, ids are paths from their
    common parent, so both photos are identified (one folder alone keeps its own paths)."""
    for camera in ("camA", "camB"):
        (tmp_path / "survey" / camera / "day1").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "survey" / camera / "day1" / "IMG_0001.JPG")
    photos = load_query_photos([tmp_path / "survey" / "camA", tmp_path / "survey" / "camB"])
    assert sorted(photos["image_id"]) == ["camA/day1/IMG_0001.JPG", "camB/day1/IMG_0001.JPG"]
    assert list(load_query_photos([tmp_path / "survey" / "camA"])["image_id"]) == ["day1/IMG_0001.JPG"]
    with pytest.raises(DatasetError, match="give each photo once"):  # one folder given twice
        load_query_photos([tmp_path / "survey" / "camA", tmp_path / "survey" / "camA"])
