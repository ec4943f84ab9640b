"""The catalogue's sightings as the three tables of a Camtrap DP package (deployments, media,
observations), built from what the user gives (:class:`CamtrapSettings`); camtrap.py writes and
validates the package. Every problem that stops an export is collected, not only the first.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wildreid.catalog.store import Catalog, CatalogError
from wildreid.presets import get_preset

MEDIATYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tif": "image/tiff", "bmp": "image/bmp"}
# "Genus species" or "Genus species subspecies", alone or in brackets after a common name
# ("nyala (Tragelaphus angasii)"). A single word is refused: "Holstein" is no genus.
SCIENTIFIC_NAME = re.compile(r"[A-Z][a-z]+(?: [a-z]+(?:-[a-z]+)?){1,2}")
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
    skip_undated: bool = False  # leave out photos without a date, or with a date but no time of day
    midnight_for_dates: bool = False  # a date without a time: 00:00 to 23:59:59, flagged (see tables)
    datasets: list[str] | None = None


# ------------------------------------------------------------------------------------------------
# the user's times and species


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
            "site": _site_place(image["site_latitude"], image["site_longitude"], image["site_uncertainty"]),
            "latitude": image["latitude"],
            "longitude": image["longitude"],
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


def _site_place(latitude, longitude, uncertainty) -> Place | None:
    return Place(latitude, longitude, uncertainty) if latitude is not None and longitude is not None else None


def _site_of(catalog: Catalog, location: str | None) -> dict:
    site = catalog.site(location) if location else None
    if site is None:
        return {"latitude": None, "longitude": None, "uncertainty": None}
    return {"latitude": site["latitude"], "longitude": site["longitude"], "uncertainty": site["uncertainty"]}


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
                "site": _site_place(**_site_of(catalog, query["location"])),
                "latitude": query["latitude"],
                "longitude": query["longitude"],
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
    number of photos left out for want of a date and time. ``media_path(row)`` gives a photo's
    filePath.

    A sighting date without a time of day has no value for the timestamp the standard requires,
    and the export invents none: it stops, unless ``skip_undated`` leaves such photos out or
    ``midnight_for_dates`` writes the day as it is known, from 00:00:00 (media.timestamp,
    eventStart) to 23:59:59 (eventEnd), with the deployment flagged ``timestampIssues`` (in Camtrap
    DP 1.0 that flag exists on deployments only) and a mediaComments note."""
    zone = parse_timezone(settings.timezone)
    problems: dict[str, list[str]] = {}
    undated = 0
    deployments: dict[str, dict] = {}
    media, observations = [], []
    for row in rows:
        what = f"{row['media_id']} ({row['individual_id'] or 'unidentified'}, dataset {row['dataset']})"
        moment = None
        date_only = False
        try:
            moment, date_only = sighting_time(row["sighting_date"], zone)
        except ValueError as reason:
            if settings.skip_undated:
                undated += 1
                continue
            # go on: every problem of the catalogue is reported at once, not one per run
            problems.setdefault("time", []).append(f"{what}: {reason}")
        if date_only and not settings.midnight_for_dates:
            if settings.skip_undated:
                undated += 1
                continue
            problems.setdefault("date_only", []).append(f"{what}: '{str(row['sighting_date']).strip()}'")
            moment = None
        name = settings.scientific_names.get(row["dataset"]) or scientific_name(row["species"])
        if name is None:
            problems.setdefault("taxon", []).append(
                f"dataset {row['dataset']}: species '{row['species'] or ''}' holds no scientific name; "
                f"give --scientific-name {row['dataset']}='Genus species'"
            )
        location = (row["location"] or "").strip()
        place, deployment_id = _place(row, location, settings)
        if place is None:
            problems.setdefault("place", []).append(
                f"photos at location '{location}'" if location else "photos without a location"
            )
        if moment is None or place is None:
            continue
        deployment = deployments.setdefault(
            deployment_id,
            {"deploymentID": deployment_id, "place": place, "location": location, "times": [], "date_only": False},
        )
        # A date alone (with midnight_for_dates): the sighting was at some time of that day.
        end = moment.replace(hour=23, minute=59, second=59) if date_only else moment
        deployment["times"] += [moment, end]
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
                "mediaComments": (
                    "sighting date without a time of day: the day's start, 00:00, written (--midnight-for-dates)"
                    if date_only
                    else None
                ),
            }
        )
        observations.append(
            {
                "observationID": f"obs-{row['media_id']}",
                "deploymentID": deployment_id,
                "mediaID": row["media_id"],
                "eventStart": timestamp,
                "eventEnd": end.isoformat(),
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


def _place(row: dict, location: str, settings: CamtrapSettings) -> tuple[Place | None, str]:
    """Where a photo was taken, and the deployment (camera placement) it belongs to. In order:
    the user's --locations row for its location (a correction by hand wins), the catalogue's
    site of that name, the photo's own GPS position, the user's --latitude/--longitude. Photos
    placed by their GPS are grouped into deployments by their position rounded to 4 decimals
    (about 11 m: one camera station)."""
    named = f"{row['dataset']}:{location}" if location else row["dataset"]
    place = settings.places.get(location) or row.get("site")
    if place is not None:
        return place, named
    if row.get("latitude") is not None and row.get("longitude") is not None:
        latitude, longitude = round(float(row["latitude"]), 4), round(float(row["longitude"]), 4)
        return Place(latitude, longitude), f"{named}@{latitude:.4f},{longitude:.4f}"
    return settings.default_place, named


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
    if "date_only" in problems:
        found = problems["date_only"]
        messages.append(
            f"{len(found)} photo(s) have a sighting date without a time of day, and Camtrap DP needs a time "
            "(media.timestamp), which the export does not invent: "
            + _examples(found)
            + ". Add the time to their sighting dates; or give --skip-undated to leave these photos out; or "
            "--midnight-for-dates to write them from 00:00:00 to 23:59:59 of that day (eventStart to eventEnd), "
            "with their deployments flagged timestampIssues."
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
            + ". Give their sites coordinates (`wildreid catalog sites FILE.csv`, or --locations FILE.csv: "
            "location,latitude,longitude[,coordinateUncertainty]) and/or --latitude and --longitude for every "
            "photo without a site or a GPS position."
        )
    return messages


def _examples(items: list[str]) -> str:
    shown = "; ".join(items[:EXAMPLES])
    return shown + (f"; ... and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else "")


def _iso(text: str | None) -> str | None:
    return dt.datetime.fromisoformat(text).isoformat(timespec="seconds") if text else None
