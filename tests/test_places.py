"""Time and place from the photo: EXIF capture time and GPS read on every way in (import,
upload, watch, identify), typed values over them, sites, the offline map, the Camtrap DP
coordinates and the capture history for mark-recapture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from wildreid.catalog.importer import import_dataset
from wildreid.catalog.schema import SCHEMA_VERSION
from wildreid.catalog.store import Catalog
from wildreid.data.dataset import load_dataset
from wildreid.data.images import PhotoPlace, read_photo_place
from wildreid.data.places import with_places, with_typed

EXIF_IFD, GPS_IFD = 0x8769, 0x8825


def exif_jpeg(
    when: str | None = None,
    offset: str | None = None,
    position: tuple[float, float] | None = None,
    altitude: float | None = None,
    colour: tuple[int, int, int] = (120, 80, 40),
) -> bytes:
    """A real JPEG whose EXIF carries DateTimeOriginal ('YYYY:MM:DD HH:MM:SS'), OffsetTimeOriginal
    and a GPS position, as a camera writes them (degrees, minutes, seconds and a hemisphere)."""
    exif = Image.Exif()
    if when or offset:
        details = exif.get_ifd(EXIF_IFD)
        if when:
            details[0x9003] = when
        if offset:
            details[0x9011] = offset
    if position:
        gps = exif.get_ifd(GPS_IFD)
        for (ref, value), sides in zip(((1, 2), (3, 4)), ("NS", "EW")):
            number = position[0] if ref == 1 else position[1]
            whole = abs(number)
            degrees, minutes = int(whole), int(whole * 60) % 60
            seconds = round((whole * 3600) % 60, 4)
            gps[ref] = sides[0] if number >= 0 else sides[1]
            gps[value] = (float(degrees), float(minutes), seconds)
        if altitude is not None:
            gps[5] = b"\x00" if altitude >= 0 else b"\x01"
            gps[6] = abs(altitude)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------
# reading the EXIF


def test_exif_capture_time_offset_and_gps_are_read_and_bad_exif_gives_nothing():
    place = read_photo_place(exif_jpeg("2025:07:14 06:31:02", "+02:00", (-24.5, 31.26), 412.5))
    assert place == PhotoPlace("2025-07-14 06:31:02+02:00", -24.5, 31.26, 412.5)
    assert read_photo_place(exif_jpeg("2025:07:14 06:31:02")).capture_time == "2025-07-14 06:31:02"
    assert read_photo_place(exif_jpeg(position=(1.25, -70.5))) == PhotoPlace(None, 1.25, -70.5, None)
    # absent, unset (a camera whose clock was never set), impossible, or no picture at all
    assert read_photo_place(exif_jpeg()) == PhotoPlace()
    assert read_photo_place(exif_jpeg("0000:00:00 00:00:00")) == PhotoPlace()
    assert read_photo_place(exif_jpeg("2025:13:45 99:00:00")) == PhotoPlace()
    assert read_photo_place(b"\xff\xd8\xff not really a jpeg") == PhotoPlace()
    assert read_photo_place(b"") == PhotoPlace()


def test_a_typed_value_overrides_the_exif():
    exif = PhotoPlace("2025-07-14 06:31:02+02:00", -24.5, 31.26, 412.5)
    assert with_typed(exif, date="2025-08-01").capture_time == "2025-08-01"
    # the same day, said less precisely: the camera's time of day is kept
    assert with_typed(exif, date="2025-07-14").capture_time == "2025-07-14 06:31:02+02:00"
    moved = with_typed(exif, latitude="-25.0", longitude=" 30.5")
    assert (moved.latitude, moved.longitude, moved.altitude) == (-25.0, 30.5, None)
    assert with_typed(exif, latitude=float("nan"), longitude=30.5, date=float("nan")) == exif
    assert with_typed(exif, latitude=95, longitude=30.5) == exif  # off the globe: not a position


def _dataset_folder(root: Path, typed: dict[str, dict] | None = None) -> Path:
    """Three photos of two individuals: one dated and placed by its EXIF, one with a broken EXIF
    block, one without EXIF; ``typed`` adds metadata columns per image id."""
    root.mkdir(parents=True, exist_ok=True)
    photos = {
        "a1": exif_jpeg("2025:07:14 06:31:02", "+02:00", (-24.5, 31.26), 412.5, colour=(10, 200, 30)),
        "b1": exif_jpeg(colour=(30, 10, 200)),
    }
    # a2: an EXIF block whose first directory lies far outside the file
    good = exif_jpeg("2025:07:15 07:00:00", colour=(200, 10, 30))
    photos["a2"] = good.replace(b"Exif\x00\x00MM\x00*\x00\x00\x00\x08", b"Exif\x00\x00MM\x00*\x7f\xff\xff\x00", 1)
    assert photos["a2"] != good
    rows = []
    for image_id, data in photos.items():
        (root / f"{image_id}.jpg").write_bytes(data)
        rows.append(
            {
                "image_id": image_id,
                "identity": image_id[0].upper(),
                "path": f"{image_id}.jpg",
                "split": "database",
                "dataset": "Nyala",
                **(typed or {}).get(image_id, {}),
            }
        )
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_import_reads_exif_per_photo_and_typed_columns_win(tmp_path):
    folder = _dataset_folder(tmp_path / "data", {"b1": {"date": "2024-01-02", "latitude": -1.5, "longitude": 36.8}})
    with Catalog(tmp_path / "c.sqlite") as catalog:
        report = import_dataset(catalog, load_dataset(folder))
        assert report.added == 3 and not report.unreadable  # a broken EXIF costs no photo
        photos = {image["source_image_id"]: image for image in catalog.images()}
        assert catalog.schema_version == SCHEMA_VERSION
    a1, a2, b1 = photos["a1"], photos["a2"], photos["b1"]
    assert (a1["sighting_date"], a1["latitude"], a1["longitude"], a1["altitude"]) == (
        "2025-07-14 06:31:02+02:00",
        -24.5,
        31.26,
        412.5,
    )
    assert a2["sighting_date"] is None and a2["latitude"] is None
    assert (b1["sighting_date"], b1["latitude"], b1["longitude"]) == ("2024-01-02", -1.5, 36.8)

    # exported and imported again, the positions travel as typed columns
    from wildreid.catalog.export import export_metadata

    with Catalog(tmp_path / "c.sqlite") as catalog:
        metadata = export_metadata(catalog, tmp_path / "exported")
    with Catalog(tmp_path / "again.sqlite") as again:
        import_dataset(again, load_dataset(metadata, allow_outside_paths=True))
        positions = sorted((image["latitude"], image["longitude"]) for image in again.images() if image["latitude"])
    assert positions == [(-24.5, 31.26), (-1.5, 36.8)]


def _result(queries: pd.DataFrame):
    from wildreid.gallery.result import IdentifyResult, Ranking
    from wildreid.presets import get_preset

    count = len(queries)
    return IdentifyResult(
        dataset=None,
        preset=get_preset("offline"),
        queries=queries,
        prediction=np.array(["A"] * count, dtype=object),
        ranking=Ranking.empty(count, 1),
        query_thresholds=np.full(count, np.nan),
        errors=[""] * count,
        thresholds={},
        threshold_choices={},
        failures=pd.DataFrame(),
    )


def test_identify_candidates_carry_each_photos_capture_time_and_position(tmp_path):
    folder = _dataset_folder(tmp_path / "data")
    queries = pd.DataFrame(
        {
            "image_id": ["a1", "a2", "b1", "gone"],
            "dataset": "Nyala",
            "path": [str(folder / "a1.jpg"), str(folder / "a2.jpg"), str(folder / "b1.jpg"), str(folder / "gone.jpg")],
            "date": [None, None, "2024-01-02", None],  # a typed column wins over the EXIF
        },
        index=[5, 6, 7, 8],  # a table cut out of a larger one
    )
    candidates = _result(with_places(queries)).candidates
    assert list(candidates[["capture_time", "latitude", "longitude"]].itertuples(index=False, name=None))[0] == (
        "2025-07-14 06:31:02+02:00",
        -24.5,
        31.26,
    )
    assert candidates["capture_time"].fillna("").tolist()[1:] == ["", "2024-01-02", ""]
    assert candidates["latitude"].isna().tolist() == [False, True, True, True]
    assert list(candidates["prediction"]) == ["A"] * 4  # the rows stay aligned


def test_watch_writes_places_and_goes_on_with_a_results_file_begun_without_them(tmp_path):
    from wildreid.review.watch import RESULTS, Watcher

    class Gallery:
        groups = {"Nyala": None}

        def identify(self, queries, cache_dir=None, progress=False):
            return _result(with_places(queries.assign(dataset="Nyala")))

    incoming, out, old = tmp_path / "incoming", tmp_path / "out", tmp_path / "old"
    incoming.mkdir()
    (incoming / "a.jpg").write_bytes(exif_jpeg("2025:07:14 06:31:02", "+02:00", (-24.5, 31.26)))
    watcher = Watcher(incoming, out, Gallery(), settle_seconds=0.0, report=[].append, clock=lambda: 1e12)
    watcher.poll()
    watcher.poll()
    row = pd.read_csv(out / RESULTS, dtype=str).iloc[0]
    assert (row["capture_time"], row["latitude"], row["longitude"]) == ("2025-07-14 06:31:02+02:00", "-24.5", "31.26")

    # a results.csv an earlier wildreid began, without the place columns: appended to as it is
    old.mkdir()
    header = (
        "image_id,dataset,prediction,top1_score,threshold,flags,error,identity_1,score_1,match_1,sha256,same_photo\n"
    )
    (old / RESULTS).write_text(header)
    again = Watcher(incoming, old, Gallery(), settle_seconds=0.0, report=[].append, clock=lambda: 1e12)
    again.poll()
    again.poll()
    lines = (old / RESULTS).read_text().splitlines()
    assert lines[0] + "\n" == header and len(lines) == 2 and lines[1].startswith("a.jpg,Nyala,A,")


# ------------------------------------------------------------------------------------------------
# the review app


def _app(tmp_path, backbone, **options):
    from test_web import make_app

    folder = _dataset_folder(tmp_path / "data")
    path = tmp_path / "catalog.sqlite"
    from live_web import PASSWORD, USERS

    from wildreid.catalog import users

    with Catalog(path) as catalog:
        import_dataset(catalog, load_dataset(folder))
        catalog.set_site("waterhole 3", -24.9, 31.6)
        for name, (role, token) in USERS.items():  # the review app's accounts (alice: a reviewer)
            users.add_user(catalog, name, role, PASSWORD, api_token=token)
    return make_app(path, backbone, tmp_path / "cache", **options), path


def test_upload_takes_each_photos_exif_and_the_typed_date_and_place_only_for_the_others(tmp_path, lite0_backbone):
    from fastapi.testclient import TestClient
    from test_web import SIGNED, upload, wait_for_job

    app, path = _app(tmp_path, lite0_backbone)
    camera = exif_jpeg("2025:07:14 06:31:02", "+02:00", (-24.5, 31.26), colour=(90, 90, 30))
    plain = exif_jpeg(colour=(30, 90, 90))
    with TestClient(app, headers=SIGNED) as client:
        form = client.get("/", headers=SIGNED).text
        assert "only for photos" in form and '<option value="waterhole 3">' in form
        response = upload(
            client, [("camera.jpg", camera), ("plain.jpg", plain)], sighting_date="2025-08-01", location="waterhole 3"
        )
        assert response.status_code == 303, response.text
        wait_for_job(client, response.headers["location"])
        with Catalog(path) as catalog:
            queries = {query["original_name"]: query for query in catalog.queries()}
        first, second = queries["camera.jpg"], queries["plain.jpg"]
        assert (first["sighting_date"], first["location"], first["latitude"], first["longitude"]) == (
            "2025-07-14 06:31:02+02:00",
            None,
            -24.5,
            31.26,
        )
        assert (second["sighting_date"], second["location"], second["latitude"]) == ("2025-08-01", "waterhole 3", None)
        page = client.get(f"/review/{first['id']}").text
        assert "seen 2025-07-14 06:31" in page
    with Catalog(path) as catalog:  # confirmed, the photo keeps its time and position
        decision = catalog.decide(first["id"], "match", individual_id="A", reviewer="alice", preset="offline")
        image = catalog.image(decision["image_id"])
    assert (image["sighting_date"], image["latitude"], image["longitude"]) == (
        "2025-07-14 06:31:02+02:00",
        -24.5,
        31.26,
    )


# ------------------------------------------------------------------------------------------------
# sites, and the Camtrap DP export from the catalogue's times and places


def _placed_catalogue(tmp_path: Path) -> Path:
    """a1 dated and placed by its EXIF; b1 typed at the site 'waterhole 3' (no GPS); a2 undated."""
    from typer.testing import CliRunner

    from wildreid.cli.main import app

    folder = _dataset_folder(
        tmp_path / "data", {"b1": {"date": "2025-07-16 08:00:00+02:00", "location": "waterhole 3"}}
    )
    path = tmp_path / "catalog.sqlite"
    runner = CliRunner()
    assert runner.invoke(app, ["catalog", "import", str(folder), "--catalog", str(path)]).exit_code == 0
    sites = tmp_path / "sites.csv"
    sites.write_text("location,latitude,longitude,coordinateUncertainty\nwaterhole 3,-24.9,31.6,30\n")
    result = runner.invoke(app, ["catalog", "sites", str(sites), "--catalog", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 site(s) added" in result.output and "waterhole 3" in result.output
    return path


def _camtrap_rows(folder: Path, table: str) -> list[dict]:
    return pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False).to_dict("records")


def test_camtrap_export_takes_times_and_coordinates_from_the_catalogue(tmp_path):
    from typer.testing import CliRunner

    from wildreid.cli.main import app

    path = _placed_catalogue(tmp_path)
    base = ["catalog", "export", "--catalog", str(path), "--format", "camtrap-dp", "--sampling-design"]
    base += ["opportunistic", "--capture-method", "activityDetection", "--contact", "Jane Doe <jane@example.org>"]
    base += ["--scientific-name", "Nyala=Tragelaphus angasii", "--skip-undated"]
    result = CliRunner().invoke(app, [*base, str(tmp_path / "package")])  # no coordinates, no timezone by hand
    assert result.exit_code == 0, result.output
    deployments = {row["deploymentID"]: row for row in _camtrap_rows(tmp_path / "package", "deployments")}
    assert set(deployments) == {"Nyala@-24.5000,31.2600", "Nyala:waterhole 3"}
    gps, site = deployments["Nyala@-24.5000,31.2600"], deployments["Nyala:waterhole 3"]
    assert (float(gps["latitude"]), float(gps["longitude"])) == (-24.5, 31.26)
    assert (float(site["latitude"]), float(site["longitude"]), site["coordinateUncertainty"]) == (-24.9, 31.6, "30")
    media = {row["deploymentID"]: row["timestamp"] for row in _camtrap_rows(tmp_path / "package", "media")}
    assert media == {
        "Nyala@-24.5000,31.2600": "2025-07-14T06:31:02+02:00",
        "Nyala:waterhole 3": "2025-07-16T08:00:00+02:00",
    }

    # the options by hand still win: --locations over the catalogue's site
    places = tmp_path / "places.csv"
    places.write_text("location,latitude,longitude\nwaterhole 3,-20.0,30.0\n")
    result = CliRunner().invoke(app, [*base, "--locations", str(places), str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    moved = {row["deploymentID"]: row for row in _camtrap_rows(tmp_path / "again", "deployments")}
    assert (float(moved["Nyala:waterhole 3"]["latitude"]), moved["Nyala:waterhole 3"]["coordinateUncertainty"]) == (
        -20.0,
        "",
    )


# ------------------------------------------------------------------------------------------------
# the map of an individual's sightings


def test_the_map_is_an_offline_svg_with_a_point_per_sighting_a_scale_and_a_graticule():
    import re

    from wildreid.web.maps import MapPoint, sightings_svg

    points = [MapPoint(-24.5, 31.26, "a <1>"), MapPoint(-24.52, 31.30, "b"), MapPoint(-24.9, 31.6, "c")]
    svg = sightings_svg(points, width=640, height=360)
    assert svg.startswith("<svg") and svg.count('class="sighting"') == 3
    assert "a &lt;1&gt;" in svg  # labels are escaped
    # 0.2 degree steps over this area: three round longitudes and two latitudes, labelled
    assert re.findall(r">(\d+\.\d°[EW])<", svg) == ["31.0°E", "31.2°E", "31.4°E", "31.6°E", "31.8°E"]
    assert re.findall(r">(\d+\.\d°[NS])<", svg) == ["24.8°S", "24.6°S"]
    assert re.search(r'class="scale-bar".*>20 km</text>', svg, re.S)
    assert "<image" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    # one sighting: a square kilometre or so around it, a scale in metres
    alone = sightings_svg([MapPoint(0.0, 0.0, "x")])
    assert alone.count('class="sighting"') == 1 and re.search(r">(100|200|500) m</text>", alone)
    assert sightings_svg([]) == ""
    tiled = sightings_svg(points, tiles="https://tiles.example.org/{z}/{x}/{y}.png")
    assert 0 < tiled.count("<image") <= 64 and "https://tiles.example.org/" in tiled


def test_an_individuals_page_maps_its_sightings_and_tiles_only_when_configured(tmp_path, lite0_backbone):
    from fastapi.testclient import TestClient
    from test_web import SIGNED

    app, path = _app(tmp_path, lite0_backbone)
    with Catalog(path) as catalog:
        catalog.db.execute("UPDATE images SET location = 'waterhole 3' WHERE source_image_id = 'a2'")
    with TestClient(app, headers=SIGNED) as client:
        page = client.get("/individuals/A")
        assert page.status_code == 200
        # a1 by its GPS, a2 at its site: two points, no tiles, nothing from another server
        assert page.text.count('class="sighting"') == 2 and "<image" not in page.text
        assert "(-24.50000, 31.26000)" in page.text  # the position in the sighting history
        assert "img-src 'self' blob: data:;" in page.headers["content-security-policy"]
        other = client.get("/individuals/B")
        assert other.status_code == 200 and other.text.count('class="sighting"') == 0
    import pytest

    from wildreid.web.config import WebConfig

    with pytest.raises(ValueError, match="--map-tiles 'tiles.example.org': give a tile server's URL template"):
        WebConfig(path, map_tiles="tiles.example.org")
    tiled, _ = _app(tmp_path / "tiled", lite0_backbone, map_tiles="https://tiles.example.org/{z}/{x}/{y}.png")
    with TestClient(tiled, headers=SIGNED) as client:
        page = client.get("/individuals/A")
        assert "<image" in page.text and "https://tiles.example.org" in page.headers["content-security-policy"]


# ------------------------------------------------------------------------------------------------
# the capture history for mark-recapture

SIGHTINGS = [  # individual, sighting date, location
    ("A", "2025-07-01 06:00:00+02:00", "north"),
    ("A", "2025:07:03 21:10:00", "south"),  # as EXIF writes it
    ("B", "2025-07-02", "north"),
    ("B", "2025-07-02 18:00:00", "south"),  # twice on one day: one capture
    ("B", "2025-07-09", "north"),
    ("C", "2025-07-09 05:00:00", "south"),
    ("C", None, "north"),  # undated: left out
    ("D", None, "north"),  # only undated: no history at all
]


def _history_catalogue(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite"
    with Catalog(path) as catalog:
        for number, (individual, date, location) in enumerate(SIGHTINGS):
            catalog.add_individual(individual, "Lions", name=f"lion {individual}")
            data = exif_jpeg(colour=(number * 20, 255 - number * 20, 7))
            catalog.add_image(data, "jpg", individual, sighting_date=date, location=location)
        catalog.add_individual("Z", "Zebras")  # another dataset
        catalog.add_image(exif_jpeg(colour=(1, 2, 3)), "jpg", "Z", sighting_date="2025-07-01")
    return path


def _export_history(path: Path, out: Path, *options: str):
    from typer.testing import CliRunner

    from wildreid.cli.main import app

    command = ["catalog", "export", "--catalog", str(path), "--format", "capture-history", *options, str(out)]
    return CliRunner().invoke(app, command)


def _matrix(out: Path) -> dict[str, str]:
    table = pd.read_csv(out / "capture-history.csv", dtype=str)
    return dict(zip(table["individual"], table["ch"]))


def test_capture_history_by_day_week_and_survey_matches_the_hand_made_matrix(tmp_path):
    path = _history_catalogue(tmp_path)
    refused = _export_history(path, tmp_path / "x")
    assert refused.exit_code != 0 and "give --dataset" in refused.output  # two populations in one catalogue

    by_day = tmp_path / "day"
    result = _export_history(path, by_day, "--dataset", "Lions")
    assert result.exit_code == 0, result.output
    # occasions: the days with a sighting, 07-01, 07-02, 07-03, 07-09
    assert _matrix(by_day) == {"A": "1010", "B": "0101", "C": "0001"}
    assert (by_day / "capture-history.inp").read_text().splitlines()[1:] == [
        "/* A */ 1010 1;",
        "/* B */ 0101 1;",
        "/* C */ 0001 1;",
    ]
    table = pd.read_csv(by_day / "capture-history.csv", dtype=str)
    assert list(table.columns) == ["individual", "name", "ch", "2025-07-01", "2025-07-02", "2025-07-03", "2025-07-09"]
    assert table.loc[0, "name"] == "lion A" and list(table.iloc[1, 3:]) == ["0", "1", "0", "1"]
    captures = pd.read_csv(by_day / "captures.csv", dtype=str)
    assert captures.values.tolist() == [
        ["Lions", "A", "1", "north"],
        ["Lions", "A", "3", "south"],
        ["Lions", "B", "2", "north"],
        ["Lions", "B", "4", "north"],
        ["Lions", "C", "4", "south"],
    ]
    occasions = pd.read_csv(by_day / "occasions.csv", dtype=str)
    assert occasions["sightings"].tolist() == ["1", "2", "1", "2"]
    assert "left out: 2 photo(s) without a sighting date" in result.output

    # every day from the first sighting to the last, sighted or not
    assert _export_history(path, tmp_path / "all", "--dataset", "Lions", "--empty-occasions").exit_code == 0
    assert _matrix(tmp_path / "all") == {"A": "101000000", "B": "010000001", "C": "000000001"}

    # seven-day blocks from 07-01: 07-01..07-07, 07-08..07-14
    assert _export_history(path, tmp_path / "week", "--dataset", "Lions", "--occasion", "week").exit_code == 0
    assert _matrix(tmp_path / "week") == {"A": "10", "B": "11", "C": "01"}

    # named surveys: s1 and s3 at one site only; s2 at both
    surveys = tmp_path / "surveys.csv"
    surveys.write_text(
        "survey,start,end,site\n"
        "s1,2025-07-01,2025-07-02,north\n"
        "s2,2025-07-03,2025-07-05,\n"
        "s3,2025-07-09,2025-07-09,north\n"
    )
    out = tmp_path / "survey"
    result = _export_history(path, out, "--dataset", "Lions", "--occasion", "survey", "--surveys", str(surveys))
    assert result.exit_code == 0, result.output
    # B's 07-02 south and C's 07-09 south fall in no survey; C is never captured
    assert _matrix(out) == {"A": "110", "B": "101"}
    assert "left out: 2 dated photo(s) in none of the surveys" in result.output

    wrong = _export_history(path, tmp_path / "w", "--occasion", "survey", "--dataset", "Lions")
    assert wrong.exit_code != 0 and "needs --surveys" in wrong.output
    from typer.testing import CliRunner

    from wildreid.cli.main import app

    other = CliRunner().invoke(app, ["catalog", "export", "--catalog", str(path), "--occasion", "week", str(tmp_path)])
    assert other.exit_code != 0 and "only for --format capture-history" in other.output


def test_a_catalogue_from_before_places_is_upgraded_with_no_positions_and_takes_sites(tmp_path):
    import sqlite3

    from wildreid.catalog.schema import _PLACES, MIGRATIONS, migrate

    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate(connection, target=MIGRATIONS.index(_PLACES))  # the version just before this one
    connection.execute("INSERT INTO individuals (id, dataset, created_at) VALUES ('a', 'd', 'now')")
    connection.execute(
        "INSERT INTO images (sha256, stored_path, individual_id, location, added_at) "
        "VALUES (?, 'x.jpg', 'a', 'north', 'now')",
        ("0" * 64,),
    )
    connection.close()
    with Catalog(path) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        [image] = catalog.images()
        assert image["latitude"] is None and image["site_latitude"] is None
        assert catalog.set_site("north", -24.5, 31.25, uncertainty=20) is True
        assert catalog.set_site("north", -24.6, 31.25) is False  # moved
        [image] = catalog.images()
        assert (image["site_latitude"], image["site_longitude"], image["site_uncertainty"]) == (-24.6, 31.25, None)
        import pytest

        from wildreid.catalog.store import CatalogError

        with pytest.raises(CatalogError, match="site 'south': latitude and longitude must be decimal degrees"):
            catalog.set_site("south", 95, 31)
