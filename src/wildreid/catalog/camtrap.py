"""Export a catalogue's sightings as a Camtrap DP 1.0.2 package, the TDWG standard GBIF ingests
(https://camtrap-dp.tdwg.org): ``datapackage.json`` plus ``deployments.csv``, ``media.csv`` and
``observations.csv``, and the photos under ``media/`` unless they are hosted elsewhere.

Every catalogue photo is one media file and one media-level observation of one animal, with the
catalogue's individual as ``individualID``. Who classified it, and how:

- a photo a reviewer filed (the review's ``match``/``new`` decision): ``human``, by that reviewer,
  at the time of the decision;
- a photo imported from a labelled dataset: its label's author is not recorded, so the method
  stays empty unless the user says who labelled it (``labels_by``);
- with ``include_machine``, uploaded photos still awaiting review: ``machine``, by the wildreid
  that identified them, with the candidate's score as ``classificationProbability`` only where
  the preset calibrates scores to P(same individual).

Times and coordinates come from the catalogue: each photo's capture time (its EXIF, or the date
typed for it), and each deployment's coordinates from the catalogue's site of that location name
or the photos' own GPS positions; --locations, --latitude/--longitude and --timezone remain as
corrections by hand. What the catalogue does not hold and the standard requires (the sampling
design, the capture method, a contact; coordinates or a timezone where the photos carry none)
must be given; the export names what
is missing and how to give it instead of inventing it.

The three tables are built in camtrap_tables.py; this module reads the user's places and contacts,
writes the package (atomically) and validates it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from wildreid import __version__
from wildreid.catalog.camtrap_tables import (
    SCIENTIFIC_NAME,
    CamtrapError,
    CamtrapSettings,
    Place,
    sightings,
    tables,
)
from wildreid.catalog.camtrap_terms import CAPTURE_METHODS, CONTRIBUTOR_ROLES, SAMPLING_DESIGNS, TAXON_RANKS
from wildreid.catalog.store import Catalog
from wildreid.util.files import atomic_folder

VERSION = "1.0.2"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}/"
PROFILE = BASE_URL + "camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
SCHEMA_DIR = Path(__file__).with_name("camtrap_dp")


CONTACT = re.compile(r"\s*(?P<name>[^<>]*?)\s*(?:<(?P<email>[^<>@\s]+@[^<>@\s]+)>)?\s*")


@dataclass
class CamtrapReport:
    folder: Path
    deployments: int = 0
    media: int = 0
    observations: dict[str, int] = field(default_factory=dict)  # by classification method
    skipped_undated: int = 0
    validated: bool = False

    def lines(self) -> list[str]:
        methods = ", ".join(f"{count} {method}" for method, count in sorted(self.observations.items()))
        lines = [
            f"Camtrap DP {VERSION} package in {self.folder}: {self.deployments} deployment(s), "
            f"{self.media} media file(s), {sum(self.observations.values())} observation(s) ({methods})"
        ]
        if self.skipped_undated:
            lines.append(
                f"left out (--skip-undated): {self.skipped_undated} photo(s) without a sighting date and time of day"
            )
        lines.append(
            "validated against the Camtrap DP table schemas (frictionless) and profile requirements"
            if self.validated
            else "not validated (--no-validate)"
        )
        return lines


# ------------------------------------------------------------------------------------------------
# the user's inputs


def read_places(path: str | Path, option: str = "--locations") -> dict[str, Place]:
    """A CSV of ``location,latitude,longitude[,coordinateUncertainty]``: the coordinates of each
    location text the catalogue's photos carry. ``option``: how the messages name the file."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0]) if rows else set()
    except FileNotFoundError:
        raise CamtrapError(f"{option} {path}: no such file.") from None
    except UnicodeDecodeError:
        raise CamtrapError(f"{option} {path}: not UTF-8 text; save it as UTF-8 CSV.") from None
    missing = {"location", "latitude", "longitude"} - columns
    if missing:
        raise CamtrapError(
            f"{option} {path}: missing column(s) {', '.join(sorted(missing))}; the file needs "
            "location,latitude,longitude (and optionally coordinateUncertainty, in metres)."
        )
    places = {}
    for number, row in enumerate(rows, start=2):
        where = f"{option} {path}, row {number}"
        name = (row["location"] or "").strip()
        if not name:
            raise CamtrapError(f"{where}: empty location; give the location text the photos carry.")
        if name in places:
            raise CamtrapError(f"{where}: location '{name}' is listed twice; keep one row.")
        places[name] = make_place(row["latitude"], row["longitude"], row.get("coordinateUncertainty"), where)
    return places


def make_place(latitude, longitude, uncertainty=None, where: str = "coordinates") -> Place:
    numbers = []
    for name, value, limit in (("latitude", latitude, 90), ("longitude", longitude, 180)):
        try:
            number = float(str(value).strip())
        except ValueError:
            raise CamtrapError(f"{where}: {name} '{value}' is not a number (decimal degrees, WGS84).") from None
        if not -limit <= number <= limit:
            raise CamtrapError(f"{where}: {name} {number} is outside [-{limit}, {limit}] (decimal degrees, WGS84).")
        numbers.append(number)
    metres = None
    if uncertainty not in (None, ""):
        try:
            metres = int(str(uncertainty).strip())
        except ValueError:
            metres = 0
        if metres < 1:
            raise CamtrapError(f"{where}: coordinateUncertainty '{uncertainty}' must be a whole number of metres >= 1.")
    return Place(numbers[0], numbers[1], metres)


def parse_scientific_names(items: list[str]) -> dict[str, str]:
    """--scientific-name items, DATASET='Genus species' -> {dataset: scientific name}."""
    names = {}
    for item in items:
        dataset, equals, name = item.partition("=")
        if not equals or not dataset.strip() or not name.strip():
            raise ValueError(f"--scientific-name '{item}': write DATASET='Genus species'.")
        names[dataset.strip()] = name.strip().strip("'\"")
    return names


def parse_contact(text: str) -> dict:
    match = CONTACT.fullmatch(text or "")
    if not match or not match["name"]:
        raise CamtrapError(f"--contact '{text}': give a name, optionally with an email: 'Jane Doe <jane@example.org>'.")
    contact = {"title": match["name"], "role": "contact"}
    if match["email"]:
        contact["email"] = match["email"]
    return contact


# ------------------------------------------------------------------------------------------------
# the package


def package_descriptor(
    tables_: dict[str, list[dict]], settings: CamtrapSettings, contributors: list[dict], title: str
) -> dict:
    names = sorted({row["scientificName"] for row in tables_["observations"] if row["scientificName"]})
    starts = [dt.datetime.fromisoformat(row["deploymentStart"]) for row in tables_["deployments"]]
    ends = [dt.datetime.fromisoformat(row["deploymentEnd"]) for row in tables_["deployments"]]
    return {
        "resources": [
            {
                "name": name,
                "path": f"{name}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": f"{BASE_URL}{name}-table-schema.json",
            }
            for name in TABLES
        ],
        "profile": PROFILE,
        "name": re.sub(r"[^a-z0-9._-]+", "-", title.lower()).strip("-") or "wildreid-catalogue",
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "title": title,
        "contributors": contributors,
        "sources": [{"title": "wildreid", "version": __version__}],
        "project": {
            "title": title,
            "samplingDesign": settings.sampling_design,
            "captureMethod": list(dict.fromkeys(settings.capture_methods)),
            "individualAnimals": True,
            "observationLevel": ["media"],
        },
        "spatial": _spatial(tables_["deployments"]),
        "temporal": {"start": min(starts).date().isoformat(), "end": max(ends).date().isoformat()},
        "taxonomic": [
            {"scientificName": name, "taxonRank": "species" if name.count(" ") == 1 else "subspecies"} for name in names
        ],
    }


def _spatial(deployments: list[dict]) -> dict:
    """GeoJSON: the one point, or the bounding box of the deployments."""
    points = sorted({(row["longitude"], row["latitude"]) for row in deployments})
    if len(points) == 1:
        return {"type": "Point", "coordinates": list(points[0])}
    west, east = min(p[0] for p in points), max(p[0] for p in points)
    south, north = min(p[1] for p in points), max(p[1] for p in points)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def export_camtrap_dp(
    catalog: Catalog, out_dir: str | Path, settings: CamtrapSettings, *, validate: bool = True
) -> CamtrapReport:
    """Write the package into ``out_dir`` (replaced as a whole, atomically; an invalid package is
    never put in place). Raises :class:`CamtrapError` naming everything missing at once."""
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    problems = []
    if settings.sampling_design not in SAMPLING_DESIGNS:
        problems.append(
            f"--sampling-design: {'give one' if not settings.sampling_design else repr(settings.sampling_design)}"
            f" (the project's layout of cameras), one of {', '.join(SAMPLING_DESIGNS)}"
        )
    bad = [m for m in settings.capture_methods if m not in CAPTURE_METHODS]
    if not settings.capture_methods or bad:
        problems.append(
            f"--capture-method: {'give at least one' if not bad else ', '.join(map(repr, bad))} "
            f"(how the cameras took the photos), from {', '.join(CAPTURE_METHODS)}"
        )
    if settings.media_url is not None and not re.match(r"https?://[^/\s]+", settings.media_url):
        problems.append(f"--media-url '{settings.media_url}': give the http(s) address the photo store is served at")
    for dataset, name in sorted(settings.scientific_names.items()):
        if not SCIENTIFIC_NAME.fullmatch(name.strip()):
            problems.append(f"--scientific-name {dataset}='{name}': not a scientific name ('Genus species')")
    contacts = [parse_contact(text) for text in settings.contacts]
    rows = sightings(catalog, settings)
    if not rows:
        raise CamtrapError("nothing to export: the catalogue (or the datasets chosen) has no photos.")
    tables_, table_problems, undated = tables(rows, settings, _media_path(settings))
    problems += table_problems
    if not tables_["media"] and not problems:
        problems.append("every photo was left out for want of a sighting date and time; nothing would be published")
    reviewers = sorted(
        {row["classifiedBy"] for row in tables_["observations"] if row["classificationMethod"] == "human"}
    )
    contributors = contacts + [
        {"title": name, "role": "contributor"} for name in reviewers if name not in {c["title"] for c in contacts}
    ]
    if not contributors:
        problems.append(
            "Camtrap DP requires at least one contributor and no reviewer decided these photos: "
            "give --contact 'Name <email>'"
        )
    if problems:
        raise CamtrapError("cannot write a valid Camtrap DP package:\n- " + "\n- ".join(problems))
    datasets = sorted({row["dataset"] for row in rows})
    title = settings.title or f"Individuals of {', '.join(datasets)} (wildreid catalogue {catalog.path.stem})"
    descriptor = package_descriptor(tables_, settings, contributors, title)
    report = CamtrapReport(
        folder=out_dir,
        deployments=len(tables_["deployments"]),
        media=len(tables_["media"]),
        skipped_undated=undated,
    )
    for row in tables_["observations"]:
        method = row["classificationMethod"] or "unclassified"
        report.observations[method] = report.observations.get(method, 0) + 1
    stored = {row["media_id"]: row["stored_path"] for row in rows}
    with atomic_folder(out_dir) as staging:
        for name in TABLES:
            write_table(staging / f"{name}.csv", name, tables_[name])
        (staging / "datapackage.json").write_text(json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n")
        if settings.media_url is None:
            for row in tables_["media"]:
                target = staging / row["filePath"]
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(catalog.photo_path(stored[row["mediaID"]]), target)
        if validate:
            found = validate_camtrap_dp(staging)
            if found:
                # Our own bug, not the user's: keep the earlier folder and say what was wrong.
                raise CamtrapError(
                    "the package failed validation and was not written (please report this):\n- " + "\n- ".join(found)
                )
            report.validated = True
    return report


def _media_path(settings: CamtrapSettings):
    def path(row: dict) -> str:
        stored = row["stored_path"]  # "ab/<sha256>.jpg": unique by content
        if settings.media_url is not None:
            return settings.media_url.rstrip("/") + "/" + stored
        return "media/" + stored.rsplit("/", 1)[-1]

    return path


def _check_out_dir(out_dir: Path) -> None:
    """The folder is replaced as a whole: refuse one holding anything but an earlier package."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CamtrapError(f"{out_dir}: this is a file; give a folder for the package (it is created if needed).")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            earlier = json.loads((out_dir / "datapackage.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = {}
        if "camtrap-dp" not in str(earlier.get("profile", "")):
            raise CamtrapError(
                f"{out_dir}: this folder holds other files and no Camtrap DP datapackage.json; its content "
                "would be replaced. Give a new or empty folder, or an earlier export's folder."
            )


def write_table(path: Path, name: str, rows: list[dict]) -> None:
    """Every column of the standard's table schema, in its order (frictionless and the standard's
    readers match columns to fields by position), empty where unknown."""
    columns = [f["name"] for f in table_schema(name)["fields"]]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: _cell(row.get(column)) for column in columns})


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ------------------------------------------------------------------------------------------------
# validation


def table_schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}-table-schema.json").read_text(encoding="utf-8"))


def validate_camtrap_dp(folder: str | Path) -> list[str]:
    """Problems of the package in ``folder`` (none: valid). The tables are validated with
    frictionless against the standard's table schemas (types, required fields, enumerations,
    patterns, ranges, unique and foreign keys), read from wildreid's copy because the standard's
    files cannot be fetched offline; the package metadata against the profile's requirements."""
    from frictionless import Package, Resource, Schema

    folder = Path(folder)
    try:
        descriptor = json.loads((folder / "datapackage.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"datapackage.json: cannot be read ({error})"]
    problems = metadata_problems(descriptor)
    resources = []
    for resource in descriptor.get("resources", []):
        if resource.get("name") in TABLES and resource.get("path"):
            schema = Schema.from_descriptor(table_schema(resource["name"]))
            resources.append(Resource(path=resource["path"], name=resource["name"], schema=schema))
    report = Package(resources=resources, basepath=str(folder)).validate()
    for task in report.tasks:
        for error in task.errors:
            row = getattr(error, "row_number", None)
            where = f"{task.name}.csv" + (f" row {row}" if row else "")
            problems.append(f"{where}: {error.message}")
    return problems


def metadata_problems(descriptor: dict) -> list[str]:
    """The Camtrap DP profile's requirements on datapackage.json, checked here because the
    profile (and the JSON schemas it refers to) cannot be fetched offline."""
    problems = []
    for name in ("resources", "profile", "created", "contributors", "project", "spatial", "temporal", "taxonomic"):
        if descriptor.get(name) in (None, "", [], {}) and not (name == "taxonomic" and name in descriptor):
            problems.append(f"datapackage.json: '{name}' is required")
    if not str(descriptor.get("profile", "")).startswith("https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0"):
        problems.append("datapackage.json: 'profile' must be the URL of a Camtrap DP 1.0 profile")
    names = sorted(r.get("name") for r in descriptor.get("resources", []) if r.get("name") in TABLES)
    if names != sorted(TABLES):
        problems.append(f"datapackage.json: resources must be {', '.join(TABLES)} (found {', '.join(names) or '-'})")
    for resource in descriptor.get("resources", []):
        if resource.get("name") in TABLES and not (
            resource.get("profile") == "tabular-data-resource"
            and str(resource.get("schema", "")).startswith("https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0")
        ):
            problems.append(f"datapackage.json: resource '{resource['name']}' needs profile and Camtrap DP schema URL")
    for contributor in descriptor.get("contributors") or []:
        if not contributor.get("title") or contributor.get("role", "contributor") not in CONTRIBUTOR_ROLES:
            problems.append(f"datapackage.json: contributor {contributor} needs a title and a role of the profile")
    project = descriptor.get("project") or {}
    if not project.get("title"):
        problems.append("datapackage.json: project.title is required")
    if project.get("samplingDesign") not in SAMPLING_DESIGNS:
        problems.append(f"datapackage.json: project.samplingDesign must be one of {', '.join(SAMPLING_DESIGNS)}")
    methods = project.get("captureMethod")
    if not methods or any(m not in CAPTURE_METHODS for m in methods) or len(set(methods)) != len(methods):
        problems.append(f"datapackage.json: project.captureMethod must list distinct {', '.join(CAPTURE_METHODS)}")
    if not isinstance(project.get("individualAnimals"), bool):
        problems.append("datapackage.json: project.individualAnimals must be true or false")
    if not project.get("observationLevel") or any(v not in ("media", "event") for v in project["observationLevel"]):
        problems.append("datapackage.json: project.observationLevel must list media and/or event")
    temporal = descriptor.get("temporal") or {}
    for end in ("start", "end"):
        try:
            dt.date.fromisoformat(str(temporal.get(end)))
        except ValueError:
            problems.append(f"datapackage.json: temporal.{end} must be a date YYYY-MM-DD")
    if (descriptor.get("spatial") or {}).get("type") not in ("Point", "Polygon", "MultiPoint", "MultiPolygon"):
        problems.append("datapackage.json: spatial must be a GeoJSON geometry")
    for taxon in descriptor.get("taxonomic") or []:
        if not taxon.get("scientificName") or taxon.get("taxonRank", "species") not in TAXON_RANKS:
            problems.append(f"datapackage.json: taxonomic entry {taxon} needs a scientificName (and a valid rank)")
    return problems
