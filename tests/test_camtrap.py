"""`wildreid catalog export --format camtrap-dp`: the catalogue's sightings as a Camtrap DP 1.0.2
package, validated with frictionless against the standard's table schemas, with who classified
each sighting and how; and the errors when the standard asks for what the catalogue lacks."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from frictionless import Package, Resource, Schema
from typer.testing import CliRunner

from wildreid import __version__
from wildreid.catalog.camtrap import (
    PROFILE,
    SCHEMA_DIR,
    export_camtrap_dp,
    metadata_problems,
    read_places,
    validate_camtrap_dp,
)
from wildreid.catalog.camtrap_tables import CamtrapError, CamtrapSettings, Place, scientific_name, sighting_time
from wildreid.catalog.importer import import_dataset
from wildreid.catalog.schema import migrate
from wildreid.catalog.store import Catalog
from wildreid.cli.main import app
from wildreid.data.dataset import load_dataset

INDIVIDUALS = ["NyalaData_32", "NyalaData_41", "NyalaData_18"]
# Sighting dates and places of the imported photos: a full time without offset, a date alone, an
# ISO time with its own offset; two named places and one photo without a location.
DATES = ["2023-04-01 06:12:00", "2023-04-02", "2023-04-03T18:40:05-01:00"]
PLACES = ["waterhole 3", "north gate", ""]


@pytest.fixture(scope="module")
def nyala(shared_data):
    return load_dataset(shared_data / "NyalaData")


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory, nyala) -> Path:
    """Two database photos of each of three individuals, with dates and locations."""
    database = nyala.database
    chosen = database[database["identity"].isin(INDIVIDUALS)].groupby("identity").head(2).copy()
    chosen["date"] = [DATES[i % 3] for i in range(len(chosen))]
    chosen["location"] = [PLACES[i % 3] for i in range(len(chosen))]
    chosen["dataset"] = "NyalaData"
    path = tmp_path_factory.mktemp("labelled") / "metadata.csv"
    columns = ["image_id", "identity", "path", "split", "dataset", "species", "date", "location"]
    chosen[columns].to_csv(path, index=False)
    return path


def ready_query(
    catalog: Catalog, photo: Path, preset: str, candidates: list[tuple[str, float]], prediction=None, **fields
) -> dict:
    """An uploaded photo with the machine's answer, as the web app's jobs store it."""
    query = catalog.add_query(photo.read_bytes(), "jpg", dataset="NyalaData", original_name=photo.name, **fields)
    catalog.set_query_result(
        query["id"],
        {
            "prediction": prediction or candidates[0][0],
            "threshold": 0.5,
            "preset": preset,
            "candidates": [{"rank": r + 1, "individual_id": i, "score": s} for r, (i, s) in enumerate(candidates)],
        },
    )
    return catalog.query(query["id"])


@pytest.fixture
def reviewed(tmp_path, labelled_csv, nyala) -> Path:
    """A catalogue with imported photos, two reviewers' decisions, two photos awaiting review
    (one ranked by a calibrated preset, one by cosine) and one skipped."""
    path = tmp_path / "herd.sqlite"
    photos = [Path(p) for p in nyala.queries["path"]]
    with Catalog(path) as catalog:
        report = import_dataset(catalog, load_dataset(labelled_csv, allow_outside_paths=True))
        assert report.added == 6 and not report.unreadable
        when = {"sighting_date": "2023-05-01T07:00:00", "location": "waterhole 3"}
        confirmed = ready_query(catalog, photos[0], "offline", [("NyalaData_18", 0.91), ("NyalaData_32", 0.4)], **when)
        catalog.decide(confirmed["id"], "match", reviewer="alice", preset="offline", individual_id="NyalaData_32")
        created = ready_query(catalog, photos[1], "offline", [("NyalaData_18", 0.2)], **when)
        catalog.decide(created["id"], "new", reviewer="bob", preset="offline", name="Torn Ear")
        ready_query(catalog, photos[2], "fusion", [("NyalaData_41", 0.83), ("NyalaData_18", 0.1)], **when)
        ready_query(catalog, photos[3], "offline", [("NyalaData_41", 0.61)], prediction="new_individual", **when)
        skipped = ready_query(catalog, photos[4], "offline", [("NyalaData_18", 0.7)], **when)
        catalog.decide(skipped["id"], "skip", reviewer="alice", preset="offline")
    return path


def settings(tmp_path: Path, **changes) -> CamtrapSettings:
    places = tmp_path / "places.csv"
    places.write_text("location,latitude,longitude,coordinateUncertainty\nwaterhole 3,-24.123,31.456,50\n")
    chosen = dict(
        sampling_design="opportunistic",
        capture_methods=["activityDetection"],
        contacts=["Jane Doe <jane@example.org>"],
        places=read_places(places),
        default_place=Place(-24.2, 31.5),
        timezone="+02:00",
        include_machine=True,
        midnight_for_dates=True,  # the fixture has date-only sightings; without it they stop the export
    )
    chosen.update(changes)
    return CamtrapSettings(**chosen)


def read_rows(folder: Path, table: str) -> list[dict]:
    with open(folder / f"{table}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_export_is_a_valid_package_with_who_classified_each_sighting(tmp_path, reviewed):
    out = tmp_path / "package"
    with Catalog(reviewed) as catalog:
        report = export_camtrap_dp(catalog, out, settings(tmp_path))
        decisions = {d["reviewer"]: d for d in catalog.decisions() if d["outcome"] != "skip"}
        skipped = catalog.queries(status="skipped")
        images = {f"image-{i['id']}": i for i in catalog.images()}
    assert report.validated and report.media == 10 and report.deployments == 3
    assert report.observations == {"human": 2, "machine": 2, "unclassified": 6}
    assert sorted(p.name for p in out.iterdir()) == [
        "datapackage.json",
        "deployments.csv",
        "media",
        "media.csv",
        "observations.csv",
    ]

    # frictionless, against the standard's table schemas: types, required, enums, patterns,
    # ranges, primary and foreign keys
    package = Package(
        resources=[
            Resource(
                path=f"{name}.csv",
                name=name,
                schema=Schema.from_descriptor(json.loads((SCHEMA_DIR / f"{name}-table-schema.json").read_text())),
            )
            for name in ("deployments", "media", "observations")
        ],
        basepath=str(out),
    )
    validation = package.validate()
    assert validation.valid, validation.flatten(["rowNumber", "fieldName", "message"])
    assert validate_camtrap_dp(out) == []

    # the standard's required fields and enumerations, read independently of frictionless
    deployments, media, observations = (read_rows(out, t) for t in ("deployments", "media", "observations"))
    for row in deployments:
        assert all(row[f] for f in ("deploymentID", "latitude", "longitude", "deploymentStart", "deploymentEnd"))
    for row in media:
        assert all(row[f] for f in ("mediaID", "deploymentID", "timestamp", "filePath", "fileMediatype"))
        assert row["filePublic"] == "true" and row["fileMediatype"] == "image/jpeg"
        assert (out / row["filePath"]).is_file()  # the photo is in the package, under media/
    assert {r["deploymentID"] for r in media} <= {r["deploymentID"] for r in deployments}
    for row in observations:
        assert row["observationLevel"] == "media" and row["observationType"] == "animal"
        assert row["classificationMethod"] in ("human", "machine", "")
        assert row["scientificName"] == "Tragelaphus angasii" and row["count"] == "1"
        assert row["mediaID"] in {m["mediaID"] for m in media}
        if row["eventStart"].startswith("2023-04-02"):  # a date alone: the whole day
            assert (row["eventStart"], row["eventEnd"]) == ("2023-04-02T00:00:00+02:00", "2023-04-02T23:59:59+02:00")
        else:
            assert row["eventStart"] == row["eventEnd"]
    by_media = {row["mediaID"]: row for row in observations}

    # a reviewer's confirmation: human, by that reviewer, when decided, no probability
    alice = decisions["alice"]
    human = by_media[f"image-{alice['image_id']}"]
    assert (human["individualID"], human["classificationMethod"], human["classifiedBy"]) == (
        "NyalaData_32",
        "human",
        "alice",
    )
    assert human["classificationTimestamp"] == alice["decided_at"] and human["classificationProbability"] == ""
    bob = by_media[f"image-{decisions['bob']['image_id']}"]
    assert (bob["individualID"], bob["classifiedBy"]) == ("NyalaData_new0001", "bob")

    # awaiting review: the machine's; a probability only from the calibrated preset
    machine = [row for row in observations if row["classificationMethod"] == "machine"]
    fusion = next(row for row in machine if "wildreidPreset:fusion" in row["observationTags"])
    assert fusion["individualID"] == "NyalaData_41" and float(fusion["classificationProbability"]) == 0.83
    assert fusion["classifiedBy"] == f"wildreid {__version__} (preset fusion)" and fusion["classificationTimestamp"]
    cosine = next(row for row in machine if "wildreidPreset:offline" in row["observationTags"])
    assert cosine["individualID"] == "" and cosine["classificationProbability"] == ""
    assert "wildreidScore:0.6100" in cosine["observationTags"] and "threshold" in cosine["observationComments"]
    assert len(skipped) == 1 and f"query-{skipped[0]['id']}" not in by_media  # a reviewer would not confirm it

    # imported labels: who labelled them is not known, so no method is claimed
    imported = [by_media[m] for m, i in images.items() if i["source"] != "review"]
    assert len(imported) == 6 and all(r["classificationMethod"] == "" for r in imported)
    assert {r["individualID"] for r in imported} == set(INDIVIDUALS)
    assert all("labels of the imported dataset NyalaData" in r["observationComments"] for r in imported)

    # times: naive ones in the given zone, a date alone at 00:00 flagged on its deployment
    stamps = {m["timestamp"] for m in media}
    assert {"2023-04-01T06:12:00+02:00", "2023-04-02T00:00:00+02:00", "2023-04-03T18:40:05-01:00"} <= stamps
    flagged = {r["deploymentID"]: r["timestampIssues"] for r in deployments}
    assert flagged == {"NyalaData:waterhole 3": "false", "NyalaData:north gate": "true", "NyalaData": "false"}
    places = {r["deploymentID"]: (r["latitude"], r["longitude"], r["coordinateUncertainty"]) for r in deployments}
    assert places["NyalaData:waterhole 3"] == ("-24.123", "31.456", "50")
    assert places["NyalaData"] == ("-24.2", "31.5", "")

    # the package metadata: the profile's required properties and enumerations
    descriptor = json.loads((out / "datapackage.json").read_text())
    assert metadata_problems(descriptor) == []
    assert (
        descriptor["profile"]
        == PROFILE
        == "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/camtrap-dp-profile.json"
    )
    assert [r["schema"] for r in descriptor["resources"]] == [
        f"https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/{t}-table-schema.json"
        for t in ("deployments", "media", "observations")
    ]
    assert descriptor["project"]["samplingDesign"] == "opportunistic"
    assert descriptor["project"]["captureMethod"] == ["activityDetection"]
    assert descriptor["project"]["individualAnimals"] is True and descriptor["project"]["observationLevel"] == ["media"]
    assert descriptor["temporal"] == {"start": "2023-04-01", "end": "2023-05-01"}
    assert descriptor["taxonomic"] == [{"scientificName": "Tragelaphus angasii", "taxonRank": "species"}]
    assert descriptor["spatial"]["type"] == "Polygon"
    assert descriptor["contributors"] == [
        {"title": "Jane Doe", "role": "contact", "email": "jane@example.org"},
        {"title": "alice", "role": "contributor"},
        {"title": "bob", "role": "contributor"},
    ]
    assert descriptor["created"].endswith("Z")


def test_reviewed_only_by_default_and_an_export_replaces_the_last(tmp_path, reviewed):
    out = tmp_path / "package"
    with Catalog(reviewed) as catalog:
        export_camtrap_dp(catalog, out, settings(tmp_path))
        report = export_camtrap_dp(catalog, out, settings(tmp_path, include_machine=False))
    observations = read_rows(out, "observations")
    assert report.observations == {"human": 2, "unclassified": 6} and len(observations) == 8
    assert not any(r["mediaID"].startswith("query-") for r in observations)
    assert len(list((out / "media").iterdir())) == 8  # the earlier package's photos are gone with it
    assert not list(tmp_path.glob(".wildreid-*"))


def test_validation_finds_what_breaks_the_standard(tmp_path, reviewed):
    out = tmp_path / "package"
    with Catalog(reviewed) as catalog:
        export_camtrap_dp(catalog, out, settings(tmp_path))
    text = (out / "observations.csv").read_text()
    (out / "observations.csv").write_text(text.replace(",human,", ",robot,", 1))
    deployments = (out / "deployments.csv").read_text()
    (out / "deployments.csv").write_text(deployments.replace("-24.123", "-124.123"))
    descriptor = json.loads((out / "datapackage.json").read_text())
    descriptor["project"]["samplingDesign"] = "whatever"
    del descriptor["temporal"]
    (out / "datapackage.json").write_text(json.dumps(descriptor))
    found = validate_camtrap_dp(out)
    assert any("observations.csv row" in p and "robot" in p for p in found)
    assert any("deployments.csv row" in p and "-124.123" in p for p in found)
    assert any("samplingDesign" in p for p in found) and any("'temporal' is required" in p for p in found)


def test_errors_name_what_the_standard_needs(tmp_path, reviewed, labelled_csv):
    out = tmp_path / "package"
    with Catalog(reviewed) as catalog:
        with pytest.raises(CamtrapError) as error:
            export_camtrap_dp(
                catalog,
                out,
                settings(tmp_path, sampling_design=None, capture_methods=[], default_place=None, timezone=None),
            )
        message = str(error.value)
        assert "--sampling-design: give one" in message and "--capture-method: give at least one" in message
        assert "photo(s) have no usable sighting time" in message and "give --timezone" in message
        assert "latitude and longitude" in message and "photos at location 'north gate'" in message
        assert not out.exists()  # nothing written

        with pytest.raises(CamtrapError, match="scientific-name NyalaData='big cat'.*not a scientific"):
            export_camtrap_dp(catalog, out, settings(tmp_path, scientific_names={"NyalaData": "big cat"}))
        with pytest.raises(CamtrapError, match="no such file"):
            read_places(tmp_path / "nowhere.csv")
        with pytest.raises(CamtrapError, match="--dataset LionData: not in the catalogue"):
            export_camtrap_dp(catalog, out, settings(tmp_path, datasets=["LionData"]))
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "thesis.docx").write_text("precious")
        with pytest.raises(CamtrapError, match="holds other files and no Camtrap DP datapackage.json"):
            export_camtrap_dp(catalog, tmp_path / "mine", settings(tmp_path))
        assert (tmp_path / "mine" / "thesis.docx").read_text() == "precious"

    # a species text without a scientific name, photos without dates, no reviewer and no contact
    table = pd.read_csv(labelled_csv)
    table["species"] = "lion"
    table["dataset"] = "lion"
    table.loc[0, "date"] = None
    lion_csv = tmp_path / "lion.csv"
    table.to_csv(lion_csv, index=False)
    with Catalog(tmp_path / "lion.sqlite") as catalog:
        import_dataset(catalog, load_dataset(lion_csv, allow_outside_paths=True))
        with pytest.raises(CamtrapError) as error:
            export_camtrap_dp(catalog, out, settings(tmp_path, contacts=[]))
        message = str(error.value)
        assert "species 'lion' holds no scientific name; give --scientific-name lion='Genus species'" in message
        assert "1 photo(s) have no usable sighting time" in message and "no sighting date" in message
        assert "--skip-undated" in message and "give --contact" in message
        report = export_camtrap_dp(
            catalog,
            out,
            settings(
                tmp_path,
                skip_undated=True,
                midnight_for_dates=False,
                scientific_names={"lion": "Panthera leo"},
                labels_by="Lion survey",
            ),
        )
    # left out: the photo without a date and the two with a date alone (midnight_for_dates not given)
    assert report.skipped_undated == 3 and report.media == 3 and report.observations == {"human": 3}
    observations = read_rows(out, "observations")
    assert {(r["scientificName"], r["classifiedBy"]) for r in observations} == {("Panthera leo", "Lion survey")}


def test_a_date_without_a_time_stops_the_export_unless_the_user_chooses(tmp_path, reviewed):
    """A date-only sighting was exported as midnight, though the export promises to invent no
    value. It now stops the export, listing the photos and the two ways on."""
    out = tmp_path / "package"
    runner = CliRunner()
    arguments = ["catalog", "export", str(out), "--catalog", str(reviewed), "--format", "camtrap-dp"]
    arguments += ["--sampling-design", "opportunistic", "--capture-method", "activityDetection"]
    arguments += ["--contact", "Jane Doe <jane@example.org>", "--latitude", "-24.2", "--longitude", "31.5"]
    arguments += ["--timezone", "+02:00"]
    result = runner.invoke(app, arguments)
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "2 photo(s) have a sighting date without a time of day" in text and "'2023-04-02'" in text
    assert "--skip-undated" in text and "--midnight-for-dates" in text and "timestampIssues" in text
    assert not out.exists()

    result = runner.invoke(app, arguments + ["--midnight-for-dates"])
    assert result.exit_code == 0, result.output
    media = {row["mediaID"]: row for row in read_rows(out, "media")}
    day = [row for row in read_rows(out, "observations") if row["eventStart"].startswith("2023-04-02")]
    assert len(day) == 2
    for row in day:
        assert (row["eventStart"], row["eventEnd"]) == ("2023-04-02T00:00:00+02:00", "2023-04-02T23:59:59+02:00")
        assert media[row["mediaID"]]["timestamp"] == "2023-04-02T00:00:00+02:00"
        assert "without a time of day" in media[row["mediaID"]]["mediaComments"]
    flagged = {row["deploymentID"]: row for row in read_rows(out, "deployments")}
    dated = {media[row["mediaID"]]["deploymentID"] for row in day}
    for deployment_id, row in flagged.items():
        assert row["timestampIssues"] == ("true" if deployment_id in dated else "false")
        if deployment_id in dated:  # the deployment runs to the end of that day at least
            assert row["deploymentEnd"] >= "2023-04-02T23:59:59+02:00"

    result = runner.invoke(app, arguments + ["--skip-undated"])
    assert result.exit_code == 0, result.output
    assert "left out (--skip-undated): 2 photo(s)" in " ".join(result.output.split())
    assert not any(row["timestamp"].startswith("2023-04-02") for row in read_rows(out, "media"))
    assert {row["timestampIssues"] for row in read_rows(out, "deployments")} == {"false"}


def test_parsing_times_and_names():
    import datetime as dt

    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert sighting_time("2023:04:01 06:12:00", plus2)[0].isoformat() == "2023-04-01T06:12:00+02:00"
    assert sighting_time("2023-04-01T06:12:00Z", None)[0].isoformat() == "2023-04-01T06:12:00+00:00"
    assert sighting_time("2023-04-01", plus2) == (dt.datetime(2023, 4, 1, tzinfo=plus2), True)
    for bad, reason in (("01/04/2023", "not ISO 8601"), ("2023-04-01 06:12", "no UTC offset"), ("", "no sighting")):
        with pytest.raises(ValueError, match=reason):
            sighting_time(bad, None)
    assert scientific_name("nyala (Tragelaphus angasii)") == "Tragelaphus angasii"
    assert scientific_name("Panthera leo melanochaita") == "Panthera leo melanochaita"
    assert scientific_name("lion") is None and scientific_name("Holstein") is None and scientific_name("") is None


def test_a_catalogue_from_before_identification_times_still_exports(tmp_path, labelled_csv, nyala):
    """Schema version 2 did not record when and by which wildreid a query was identified: such a
    catalogue is upgraded on opening, and its older machine classifications say only what is known."""
    path = tmp_path / "v2.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate(connection, target=2)
    connection.close()
    with Catalog(path) as catalog:
        import_dataset(catalog, load_dataset(labelled_csv, allow_outside_paths=True))
        photo = Path(nyala.queries["path"].iloc[0])
        query = ready_query(catalog, photo, "offline", [("NyalaData_18", 0.9)], sighting_date="2023-05-01T07:00Z")
        catalog.db.execute("UPDATE queries SET identified_at = NULL, identified_by = NULL WHERE id = ?", (query["id"],))
        query = catalog.query(query["id"])
    assert query["identified_at"] is None  # as a version-2 catalogue had it
    with Catalog(path) as catalog:
        assert catalog.schema_version >= 3  # upgraded past version 2
        export_camtrap_dp(catalog, tmp_path / "package", settings(tmp_path, timezone="UTC"))
    machine = [r for r in read_rows(tmp_path / "package", "observations") if r["classificationMethod"] == "machine"]
    assert [(r["classifiedBy"], r["classificationTimestamp"]) for r in machine] == [("wildreid (preset offline)", "")]


def test_cli_exports_a_camtrap_dp_package(tmp_path, reviewed):
    places = tmp_path / "places.csv"
    places.write_text("location,latitude,longitude\nwaterhole 3,-24.1,31.4\nnorth gate,-24.3,31.6\n")
    runner = CliRunner()
    out = tmp_path / "package"
    base = ["catalog", "export", str(out), "--catalog", str(reviewed), "--format", "camtrap-dp"]
    options = [
        "--sampling-design", "targeted", "--capture-method", "activityDetection", "--capture-method", "timeLapse",
        "--locations", str(places), "--timezone", "Africa/Johannesburg", "--contact", "Jane Doe",
        "--midnight-for-dates",
        "--latitude", "-24.2", "--longitude", "31.5", "--include-machine",
    ]  # fmt: skip
    result = runner.invoke(app, base + options)
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # as rich wrapped it
    assert "3 deployment(s), 10 media file(s), 10 observation(s) (2 human, 2 machine, 6 unclassified)" in printed
    assert "validated against the Camtrap DP table schemas" in printed
    descriptor = json.loads((out / "datapackage.json").read_text())
    assert descriptor["project"]["captureMethod"] == ["activityDetection", "timeLapse"]
    assert "2023-04-01T06:12:00+02:00" in {m["timestamp"] for m in read_rows(out, "media")}

    result = runner.invoke(app, base + ["--sampling-design", "targeted"])
    assert result.exit_code == 2 and "error:" in result.output and "--capture-method" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        app, ["catalog", "export", str(tmp_path / "x"), "--catalog", str(reviewed), "--timezone", "Z"]
    )
    assert result.exit_code == 2 and "--timezone: only for --format camtrap-dp" in result.output
    result = runner.invoke(app, base + options[:-5] + ["--latitude", "-24.2"])
    assert result.exit_code == 2 and "--latitude and --longitude together" in result.output
