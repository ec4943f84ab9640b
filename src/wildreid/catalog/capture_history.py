"""The individual-by-occasion capture history that mark-recapture software reads: a row per
individual, a 1 for each occasion it was photographed on, else 0.

Occasions (``--occasion``):

- ``day``: each calendar day with at least one dated sighting of the dataset, in the sightings'
  own local time (the date part as the camera or the person wrote it);
- ``week``: seven-day blocks counted from the first sighting's day (not calendar weeks, so a
  survey that starts on a Thursday is not split across two occasions at once);
- ``survey``: named sampling sessions from a CSV ``survey,start,end[,site]``, one row per
  occasion, in that order; a sighting counts for a survey when its date lies in
  ``start..end`` (inclusive) and, where the row names a site, it was at that site (the photo's
  location). Several rows with one survey name form one occasion (a session over several sites).

A day or week without any sighting is taken as one without sampling and is no occasion, unless
``empty_occasions`` keeps every day or week from the first to the last sighting (cameras that ran
throughout). Photos without a date are left out and counted.

Files written (the folder is replaced as a whole):

- ``capture-history.inp``: MARK's input, ``/* individual */ 1001 1;`` per individual;
- ``capture-history.csv``: ``individual,name,ch`` and a 0/1 column per occasion, for R (RMark:
  ``read.csv(f, colClasses = c(ch = "character"))``);
- ``captures.csv``: ``session,ID,occasion,detector`` per capture, for secr's ``read.capthist``
  (the detector is the photo's location, its site);
- ``occasions.csv``: each occasion's number, label, first and last day and sightings.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wildreid.catalog.connection import CatalogError
from wildreid.catalog.store import Catalog
from wildreid.util.files import atomic_folder

OCCASIONS = ("day", "week", "survey")


@dataclass(frozen=True)
class Survey:
    name: str
    start: dt.date
    end: dt.date
    site: str = ""


@dataclass
class Occasion:
    label: str
    first: dt.date
    last: dt.date
    sightings: int = 0


@dataclass
class CaptureHistory:
    dataset: str
    occasions: list[Occasion]
    histories: dict[str, list[int]]  # individual -> 0/1 per occasion
    names: dict[str, str]  # individual -> its name ('' when none)
    captures: list[tuple[str, int, str]] = field(default_factory=list)  # (individual, occasion, site)
    undated: int = 0
    outside: int = 0  # dated sightings in no survey

    def lines(self, folder: Path) -> list[str]:
        lines = [
            f"capture history of dataset {self.dataset} in {folder}: {len(self.histories)} individual(s) over "
            f"{len(self.occasions)} occasion(s) (capture-history.inp for MARK, capture-history.csv and "
            "captures.csv for R)"
        ]
        if self.undated:
            lines.append(f"left out: {self.undated} photo(s) without a sighting date")
        if self.outside:
            lines.append(f"left out: {self.outside} dated photo(s) in none of the surveys")
        return lines


def read_surveys(path: str | Path) -> list[Survey]:
    """The ``--surveys`` CSV: survey,start,end[,site], dates as YYYY-MM-DD."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise CatalogError(f"--surveys {path}: no such file.") from None
    except UnicodeDecodeError:
        raise CatalogError(f"--surveys {path}: not UTF-8 text; save it as UTF-8 CSV.") from None
    missing = {"survey", "start", "end"} - set(rows[0] if rows else {})
    if missing or not rows:
        raise CatalogError(
            f"--surveys {path}: {'missing column(s) ' + ', '.join(sorted(missing)) if missing else 'no rows'}; "
            "the file needs a row per survey: survey,start,end (dates YYYY-MM-DD), and optionally site."
        )
    surveys = []
    for number, row in enumerate(rows, start=2):
        where = f"--surveys {path}, row {number}"
        name = (row["survey"] or "").strip()
        if not name:
            raise CatalogError(f"{where}: empty survey name; name every survey.")
        try:
            start, end = (dt.date.fromisoformat((row[key] or "").strip()) for key in ("start", "end"))
        except ValueError:
            raise CatalogError(
                f"{where}: start '{row['start']}' or end '{row['end']}' is not a date; write YYYY-MM-DD."
            ) from None
        if end < start:
            raise CatalogError(f"{where}: survey '{name}' ends ({end}) before it starts ({start}).")
        surveys.append(Survey(name, start, end, (row.get("site") or "").strip()))
    return surveys


def _day(text: str | None) -> dt.date | None:
    """The local calendar day of a sighting date ('2025-07-14', '2025-07-14 06:31:02+02:00',
    EXIF's '2025:07:14 06:31:02'), or None."""
    match = re.match(r"\s*(\d{4})[-:](\d{2})[-:](\d{2})", text or "")
    if not match:
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def capture_history(
    catalog: Catalog,
    *,
    occasion: str = "day",
    dataset: str | None = None,
    surveys: list[Survey] | None = None,
    empty_occasions: bool = False,
) -> CaptureHistory:
    if occasion not in OCCASIONS:
        raise CatalogError(f"--occasion '{occasion}': choose one of {', '.join(OCCASIONS)}.")
    if (occasion == "survey") != (surveys is not None):
        raise CatalogError(
            "--occasion survey needs --surveys FILE.csv (survey,start,end[,site]), "
            "and --surveys needs --occasion survey."
        )
    known = catalog.datasets()
    if dataset is None:
        if len(known) != 1:
            raise CatalogError(
                f"the catalogue holds {len(known)} datasets ({', '.join(known) or '-'}); a capture history is of "
                "one population: give --dataset NAME."
            )
        dataset = known[0]
    elif dataset not in known:
        raise CatalogError(f"--dataset {dataset}: not in the catalogue; it holds {', '.join(known) or '-'}.")
    photos = [image for image in catalog.images() if image["dataset"] == dataset]
    individuals = sorted({image["individual_id"] for image in photos})
    names = {image["individual_id"]: image["name"] or "" for image in photos}
    dated = [(image, _day(image["sighting_date"])) for image in photos]
    undated = sum(day is None for _, day in dated)
    sightings = [(image, day) for image, day in dated if day is not None]
    occasions, which = _occasions(occasion, [day for _, day in sightings], surveys or [], empty_occasions)
    histories = {individual: [0] * len(occasions) for individual in individuals}
    captures = []
    outside = 0
    for image, day in sightings:
        site = (image["location"] or "").strip()
        found = which(day, site)
        if found is None:
            outside += 1
            continue
        occasions[found].sightings += 1
        if not histories[image["individual_id"]][found]:
            captures.append((image["individual_id"], found + 1, site))
        histories[image["individual_id"]][found] = 1
    # An individual never seen on any occasion (only undated photos) has no history to give.
    histories = {individual: row for individual, row in histories.items() if any(row)}
    return CaptureHistory(dataset, occasions, histories, names, sorted(captures), undated, outside)


def _occasions(
    kind: str, days: list[dt.date], surveys: list[Survey], empty: bool
) -> tuple[list[Occasion], Callable[[dt.date, str], int | None]]:
    """The occasions, and a function (day, site) -> the occasion's index, or None."""
    if kind == "survey":
        order = list(dict.fromkeys(survey.name for survey in surveys))
        occasions = []
        for name in order:
            rows = [survey for survey in surveys if survey.name == name]
            occasions.append(Occasion(name, min(r.start for r in rows), max(r.end for r in rows)))

        def in_survey(day: dt.date, site: str) -> int | None:
            for survey in surveys:
                if survey.start <= day <= survey.end and (not survey.site or survey.site == site):
                    return order.index(survey.name)
            return None

        return occasions, in_survey
    if not days:
        return [], lambda day, site: None
    first, last = min(days), max(days)
    length = 7 if kind == "week" else 1
    starts = sorted({first + dt.timedelta(days=(day - first).days // length * length) for day in days})
    if empty:
        starts = [first + dt.timedelta(days=k) for k in range(0, (last - first).days + 1, length)]
    occasions = [
        Occasion(
            start.isoformat() if length == 1 else f"week of {start.isoformat()}",
            start,
            start + dt.timedelta(days=length - 1),
        )
        for start in starts
    ]
    index = {occasion.first: position for position, occasion in enumerate(occasions)}

    def in_block(day: dt.date, site: str) -> int | None:
        return index.get(first + dt.timedelta(days=(day - first).days // length * length))

    return occasions, in_block


def _comment(text: str) -> str:
    """Text safe inside a MARK comment (no '*/', no line break)."""
    return re.sub(r"[\r\n]+", " ", text).replace("*/", "* /")


def write_capture_history(history: CaptureHistory, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CatalogError(f"{out_dir}: is a file; give a folder to write the capture history into.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "capture-history.inp").is_file():
        raise CatalogError(
            f"{out_dir}: this folder holds other files and no capture-history.inp; its content would be "
            "replaced. Give a new or empty folder, or an earlier capture history's folder."
        )
    if not history.occasions or not history.histories:
        raise CatalogError(
            f"dataset {history.dataset}: no dated sighting falls on any occasion, so there is no capture "
            "history to write; give the photos dates (EXIF or a date column), or check --surveys."
        )
    with atomic_folder(out_dir) as folder:
        folder = Path(folder)
        labels = [occasion.label for occasion in history.occasions]
        with open(folder / "capture-history.inp", "w", encoding="utf-8", newline="\n") as handle:
            handle.write(
                f"/* wildreid capture history: dataset {_comment(history.dataset)}, {len(labels)} occasions: "
                f"{_comment(', '.join(labels))} */\n"
            )
            for individual, row in history.histories.items():
                handle.write(f"/* {_comment(individual)} */ {''.join(map(str, row))} 1;\n")
        with open(folder / "capture-history.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["individual", "name", "ch", *labels])
            for individual, row in history.histories.items():
                writer.writerow([individual, history.names.get(individual, ""), "".join(map(str, row)), *row])
        with open(folder / "captures.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["session", "ID", "occasion", "detector"])
            for individual, number, site in history.captures:
                writer.writerow([history.dataset, individual, number, site])
        with open(folder / "occasions.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["occasion", "label", "first_day", "last_day", "sightings"])
            for number, occasion in enumerate(history.occasions, start=1):
                writer.writerow(
                    [number, occasion.label, occasion.first.isoformat(), occasion.last.isoformat(), occasion.sightings]
                )
    return out_dir
