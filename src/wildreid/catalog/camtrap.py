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

What the catalogue does not hold and the standard requires (coordinates, a timezone for naive
times, the sampling design, the capture method, a contact) must be given; the export names what
is missing and how to give it instead of inventing it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wildreid import __version__
from wildreid.catalog.store import Catalog, CatalogError
from wildreid.presets import get_preset
from wildreid.util.files import atomic_folder

VERSION = "1.0.2"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}/"
PROFILE = BASE_URL + "camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
SCHEMA_DIR = Path(__file__).with_name("camtrap_dp")

# Enumerations of the Camtrap DP profile (package metadata).
SAMPLING_DESIGNS = ("simpleRandom", "systematicRandom", "clusteredRandom", "experimental", "targeted", "opportunistic")
CAPTURE_METHODS = ("activityDetection", "timeLapse")
CONTRIBUTOR_ROLES = ("contact", "principalInvestigator", "rightsHolder", "publisher", "contributor")
TAXON_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "subspecies")

MEDIATYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tif": "image/tiff", "bmp": "image/bmp"}
# "Genus species" or "Genus species subspecies", alone or in brackets after a common name
# ("nyala (Tragelaphus angasii)"). A single word is refused: "Holstein" is no genus.
SCIENTIFIC_NAME = re.compile(r"[A-Z][a-z]+(?: [a-z]+(?:-[a-z]+)?){1,2}")
CONTACT = re.compile(r"\s*(?P<name>[^<>]*?)\s*(?:<(?P<email>[^<>@\s]+@[^<>@\s]+)>)?\s*")
EXAMPLES = 5  # problems of one kind listed before "... and N more"


class CamtrapError(CatalogError):
    """The catalogue cannot be written as a valid Camtrap DP package as asked; says what to give."""


@dataclass(frozen=True)
class Place:
    latitude: float
    longitude: float
    uncertainty: int | None = None  # metres


@dataclass
class CamtrapSettings:
    """What the user supplies: everything the standard requires that the catalogue cannot know."""

    sampling_design: str | None = None
    capture_methods: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)  # "Name <email>"
    title: str | None = None
    places: dict[str, Place] = field(default_factory=dict)  # by the catalogue's location text
    default_place: Place | None = None  # for photos whose location has no row in ``places``
    timezone: str | None = None  # "+02:00", "Z" or an IANA name; for times written without one
    scientific_names: dict[str, str] = field(default_factory=dict)  # dataset -> scientific name
    labels_by: str | None = None  # who labelled the imported datasets (people)
    media_url: str | None = None  # where the photo store is published; None: copy photos in
    private_media: bool = False
    include_machine: bool = False
    skip_undated: bool = False
    datasets: list[str] | None = None


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
            lines.append(f"left out: {self.skipped_undated} photo(s) without a usable sighting date")
        lines.append(
            "validated against the Camtrap DP table schemas (frictionless) and profile requirements"
            if self.validated
            else "not validated (--no-validate)"
        )
        return lines


# ------------------------------------------------------------------------------------------------
# the user's inputs


def read_places(path: str | Path) -> dict[str, Place]:
    """A CSV of ``location,latitude,longitude[,coordinateUncertainty]``: the coordinates of each
    location text the catalogue's photos carry."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0]) if rows else set()
    except FileNotFoundError:
        raise CamtrapError(f"--locations {path}: no such file.") from None
    except UnicodeDecodeError:
        raise CamtrapError(f"--locations {path}: not UTF-8 text; save it as UTF-8 CSV.") from None
    missing = {"location", "latitude", "longitude"} - columns
    if missing:
        raise CamtrapError(
            f"--locations {path}: missing column(s) {', '.join(sorted(missing))}; the file needs "
            "location,latitude,longitude (and optionally coordinateUncertainty, in metres)."
        )
    places = {}
    for number, row in enumerate(rows, start=2):
        where = f"--locations {path}, row {number}"
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


def parse_timezone(text: str | None) -> dt.tzinfo | None:
    """'+02:00', '-0530', 'Z', 'UTC' or an IANA name such as 'Africa/Johannesburg'."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.upper() in ("Z", "UTC"):
        return dt.timezone.utc
    if text[0] in "+-":
        try:
            return dt.datetime.fromisoformat("2000-01-01T00:00:00" + text).tzinfo
        except ValueError:
            pass
    else:
        try:
            return ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise CamtrapError(
        f"--timezone '{text}': not a UTC offset (+02:00, -05:00, Z) nor a time zone name (Africa/Johannesburg)."
    )


def sighting_time(text: str | None, zone: dt.tzinfo | None) -> tuple[dt.datetime, bool]:
    """The photo's time with its UTC offset, and whether only the date was known (time 00:00).
    ISO 8601 and EXIF's 'YYYY:MM:DD HH:MM:SS' are read; anything else would be a guess."""
    if text is None or not str(text).strip():
        raise ValueError("no sighting date")
    text = str(text).strip()
    exif = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})([ T].*)", text)
    if exif:
        text = f"{exif[1]}-{exif[2]}-{exif[3]}{exif[4]}"
    try:
        moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"sighting date '{text}' is not ISO 8601 (YYYY-MM-DD[THH:MM[:SS]][+HH:MM])") from None
    date_only = not re.search(r"[T ]", text.upper())  # no time part: the date alone was known
    if moment.tzinfo is None:
        if zone is None:
            raise ValueError(f"sighting date '{text}' has no UTC offset; give --timezone")
        moment = moment.replace(tzinfo=zone)
    return moment.replace(microsecond=0), date_only


def scientific_name(species: str) -> str | None:
    """The scientific name in a species text ('Tragelaphus angasii', 'nyala (Tragelaphus
    angasii)'), or None when it has none ('lion')."""
    species = (species or "").strip()
    bracketed = re.search(r"\(([^()]*)\)\s*$", species)
    for candidate in ([bracketed[1].strip()] if bracketed else []) + [species]:
        if SCIENTIFIC_NAME.fullmatch(candidate):
            return candidate
    return None


def parse_contact(text: str) -> dict:
    match = CONTACT.fullmatch(text or "")
    if not match or not match["name"]:
        raise CamtrapError(f"--contact '{text}': give a name, optionally with an email: 'Jane Doe <jane@example.org>'.")
    contact = {"title": match["name"], "role": "contact"}
    if match["email"]:
        contact["email"] = match["email"]
    return contact


# ------------------------------------------------------------------------------------------------
# the catalogue's sightings, as plain rows


def sightings(catalog: Catalog, settings: CamtrapSettings) -> list[dict]:
    """One row per photo to publish: its file, dataset, individual, species, when and where, and
    who classified it how (method, by, at, probability, tags, comments)."""
    wanted = set(settings.datasets) if settings.datasets else None
    unknown = sorted((wanted or set()) - set(catalog.datasets()))
    if unknown:
        raise CamtrapError(
            f"--dataset {', '.join(unknown)}: not in the catalogue; it holds {', '.join(catalog.datasets()) or '-'}."
        )
    confirmed = {}  # image id -> the reviewer's latest decision filing it
    for decision in catalog.decisions():
        if decision["outcome"] in ("match", "new") and decision["image_id"] is not None:
            confirmed[decision["image_id"]] = decision
    rows = []
    for image in catalog.images():
        if wanted is not None and image["dataset"] not in wanted:
            continue
        row = {
            "media_id": f"image-{image['id']}",
            "dataset": image["dataset"],
            "species": image["species"],
            "individual_id": image["individual_id"],
            "stored_path": image["stored_path"],
            "sighting_date": image["sighting_date"],
            "location": image["location"],
            **_NO_CLASSIFICATION,
        }
        decision = confirmed.get(image["id"])
        if decision is not None:
            filed = "filed under a new individual" if decision["outcome"] == "new" else "confirmed"
            row.update(
                method="human",
                by=decision["reviewer"],
                at=decision["decided_at"],
                comments=f"{filed} by a reviewer in wildreid's review (decision {decision['id']})",
            )
        elif settings.labels_by:
            row.update(method="human", by=settings.labels_by, comments=_imported(image))
        else:
            row.update(comments=_imported(image) + "; who labelled it is not recorded")
        rows.append(row)
    if settings.include_machine:
        rows += _machine_sightings(catalog, wanted)
    return rows


_NO_CLASSIFICATION = {"method": None, "by": None, "at": None, "probability": None, "tags": None, "comments": None}


def _imported(image: dict) -> str:
    return f"identity from the labels of the imported dataset {image['dataset']} (its image {image['source_image_id']})"


def _machine_sightings(catalog: Catalog, wanted: set[str] | None) -> list[dict]:
    """Uploaded photos identified but not yet decided by a reviewer (status 'ready'). Skipped
    ones are left out: a reviewer looked and would not confirm the machine's answer."""
    rows = []
    for query in catalog.queries(status="ready", limit=-1):  # SQLite: a negative LIMIT is none
        if wanted is not None and query["dataset"] not in wanted:
            continue
        result = query["result"] or {}
        candidates = result.get("candidates") or []
        prediction = result.get("prediction")
        individual = catalog.individual(prediction) if prediction else None
        best = candidates[0]["score"] if candidates else None
        chosen = next((c["score"] for c in candidates if individual and c["individual_id"] == individual["id"]), None)
        tags = [f"wildreidPreset:{result.get('preset', '')}"]
        if best is not None:
            tags.append(f"wildreidScore:{best:.4f}")
        if result.get("threshold") is not None:
            tags.append(f"wildreidThreshold:{result['threshold']:.4f}")
        preset = result.get("preset") or "unknown preset"
        rows.append(
            {
                "media_id": f"query-{query['id']}",
                "dataset": query["dataset"],
                "species": (individual or {}).get("species") or catalog.dataset_species(query["dataset"]),
                "individual_id": individual["id"] if individual else None,
                "stored_path": query["stored_path"],
                "sighting_date": query["sighting_date"],
                "location": query["location"],
                "method": "machine",
                "by": f"{query['identified_by'] or 'wildreid'} (preset {preset})",
                "at": query["identified_at"],
                "probability": chosen if _calibrated(result.get("preset")) else None,
                "tags": "|".join(tags),
                "comments": (
                    "not reviewed: wildreid's best candidate"
                    if individual
                    else "not reviewed: no known individual scored above wildreid's threshold"
                ),
            }
        )
    return rows


def _calibrated(preset: str | None) -> bool:
    """Whether the preset's scores are calibrated probabilities (local matching fused on
    P(same individual)); a cosine similarity is no probability and is not written as one."""
    try:
        return get_preset(preset).local is not None
    except (KeyError, TypeError):
        return False


# ------------------------------------------------------------------------------------------------
# the three tables


def tables(rows: list[dict], settings: CamtrapSettings, media_path) -> tuple[dict[str, list[dict]], list[str], int]:
    """The deployments, media and observations rows; the problems that stop the export; the
    number of photos left out for want of a date. ``media_path(row)`` gives a photo's filePath."""
    zone = parse_timezone(settings.timezone)
    problems: dict[str, list[str]] = {}
    undated = 0
    deployments: dict[str, dict] = {}
    media, observations = [], []
    for row in rows:
        what = f"{row['media_id']} ({row['individual_id'] or 'unidentified'}, dataset {row['dataset']})"
        moment = None
        try:
            moment, date_only = sighting_time(row["sighting_date"], zone)
        except ValueError as reason:
            if settings.skip_undated:
                undated += 1
                continue
            # go on: every problem of the catalogue is reported at once, not one per run
            problems.setdefault("time", []).append(f"{what}: {reason}")
        name = settings.scientific_names.get(row["dataset"]) or scientific_name(row["species"])
        if name is None:
            problems.setdefault("taxon", []).append(
                f"dataset {row['dataset']}: species '{row['species'] or ''}' holds no scientific name; "
                f"give --scientific-name {row['dataset']}='Genus species'"
            )
        location = (row["location"] or "").strip()
        place = settings.places.get(location) or settings.default_place
        if place is None:
            problems.setdefault("place", []).append(
                f"photos at location '{location}'" if location else "photos without a location"
            )
        if moment is None or place is None:
            continue
        deployment_id = f"{row['dataset']}:{location}" if location else row["dataset"]
        deployment = deployments.setdefault(
            deployment_id,
            {"deploymentID": deployment_id, "place": place, "location": location, "times": [], "date_only": False},
        )
        deployment["times"].append(moment)
        deployment["date_only"] |= date_only
        timestamp = moment.isoformat()
        file_path = media_path(row)
        media.append(
            {
                "mediaID": row["media_id"],
                "deploymentID": deployment_id,
                "timestamp": timestamp,
                "filePath": file_path,
                "filePublic": not settings.private_media,
                "fileName": file_path.rsplit("/", 1)[-1],
                "fileMediatype": MEDIATYPES[row["stored_path"].rsplit(".", 1)[-1]],
                "mediaComments": "sighting date without a time of day: 00:00 written" if date_only else None,
            }
        )
        observations.append(
            {
                "observationID": f"obs-{row['media_id']}",
                "deploymentID": deployment_id,
                "mediaID": row["media_id"],
                "eventStart": timestamp,
                "eventEnd": timestamp,
                "observationLevel": "media",
                "observationType": "animal",
                "scientificName": name,
                "count": 1,
                "individualID": row["individual_id"],
                "classificationMethod": row["method"],
                "classifiedBy": row["by"],
                "classificationTimestamp": _iso(row["at"]),
                "classificationProbability": row["probability"],
                "observationTags": row["tags"],
                "observationComments": row["comments"],
            }
        )
    messages = _problem_messages(problems)
    return (
        {"deployments": _deployment_rows(deployments), "media": media, "observations": observations},
        messages,
        undated,
    )


def _deployment_rows(deployments: dict[str, dict]) -> list[dict]:
    rows = []
    for deployment in deployments.values():
        place = deployment["place"]
        rows.append(
            {
                "deploymentID": deployment["deploymentID"],
                "locationName": deployment["location"] or None,
                "latitude": place.latitude,
                "longitude": place.longitude,
                "coordinateUncertainty": place.uncertainty,
                "deploymentStart": min(deployment["times"]).isoformat(),
                "deploymentEnd": max(deployment["times"]).isoformat(),
                # the standard's flag for times known to be imperfect: here, dates without a time
                "timestampIssues": deployment["date_only"],
                "deploymentComments": "deploymentStart and deploymentEnd are the first and last photo's times: "
                "the catalogue does not record when the camera was set up and taken down",
            }
        )
    return rows


def _problem_messages(problems: dict[str, list[str]]) -> list[str]:
    messages = []
    if "time" in problems:
        found = problems["time"]
        messages.append(
            f"{len(found)} photo(s) have no usable sighting time, which Camtrap DP requires (media.timestamp): "
            + _examples(found)
            + ". Give --timezone for times written without an offset, or --skip-undated to leave these photos out."
        )
    if "taxon" in problems:
        messages += sorted(set(problems["taxon"]))
    if "place" in problems:
        counts: dict[str, int] = {}
        for where in problems["place"]:
            counts[where] = counts.get(where, 0) + 1
        listed = [f"{count} {where}" for where, count in sorted(counts.items())]
        messages.append(
            "Camtrap DP requires each deployment's latitude and longitude, and the catalogue has none for: "
            + _examples(listed)
            + ". Give --locations FILE.csv (location,latitude,longitude[,coordinateUncertainty]) and/or "
            "--latitude and --longitude for every photo not listed there."
        )
    return messages


def _examples(items: list[str]) -> str:
    shown = "; ".join(items[:EXAMPLES])
    return shown + (f"; ... and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else "")


def _iso(text: str | None) -> str | None:
    return dt.datetime.fromisoformat(text).isoformat(timespec="seconds") if text else None


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
        problems.append("every photo was left out for want of a sighting date; nothing would be published")
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
