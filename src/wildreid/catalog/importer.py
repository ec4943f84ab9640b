"""Import a dataset (any layout ``load_dataset`` reads) into a catalogue.

Each photo is one small transaction, committed as soon as its file is in the store: an import
killed half way keeps everything committed so far, and running it again adds only what is
missing (photos are recognised by content, so nothing is imported twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from wildreid.catalog.connection import CatalogError
from wildreid.catalog.photos import sniff_image_type
from wildreid.catalog.store import Catalog, name_problems
from wildreid.data.dataset import DATABASE, QUERY, Dataset, _listing
from wildreid.data.images import ImageReadError, content_hash, decode_image, read_image_bytes, read_photo_place
from wildreid.data.places import TYPED_COLUMNS, with_typed

# Optional dataset columns copied onto catalogue photos (catalogue field <- dataset column).
IMAGE_FIELDS = {"sighting_date": "date", "location": "location", "orientation": "orientation", "viewpoint": "viewpoint"}


@dataclass
class ImportReport:
    added: int = 0
    already_present: int = 0
    individuals_added: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (image_id, reason)
    conflicts: list[str] = field(default_factory=list)  # same photo, other identity

    def lines(self) -> list[str]:
        lines = [
            f"{self.added} photo(s) added, {self.already_present} already in the catalogue, "
            f"{self.individuals_added} new individual(s)"
        ]
        lines += [f"skipped {image_id}: {reason}" for image_id, reason in self.unreadable]
        lines += self.conflicts
        return lines


def import_dataset(
    catalog: Catalog,
    dataset: Dataset,
    *,
    include_queries: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Add the labelled photos of ``dataset`` (its database split; with ``include_queries`` also
    the queries whose identity is known) to ``catalog``."""
    rows = rows_to_import(dataset, include_queries=include_queries)
    species = _species_by_identity(rows)
    report = ImportReport()
    for done, row in enumerate(rows.itertuples(index=False), start=1):
        _import_row(catalog, row._asdict(), species, dataset.source, report)
        if progress:
            progress(done, len(rows))
    return report


def rows_to_import(dataset: Dataset, *, include_queries: bool = False) -> pd.DataFrame:
    """The rows of ``dataset`` an import adds, checked (:func:`check_names`); call it before
    opening the catalogue to refuse a dataset without creating an empty catalogue."""
    table = dataset.table
    wanted = table["split"] == DATABASE
    if include_queries:
        wanted |= (table["split"] == QUERY) & table["identity"].notna()
    rows = table[wanted]
    check_names(rows, dataset.source)
    return rows


def check_names(rows: pd.DataFrame, source: str) -> None:
    """CatalogError listing every row whose identity or dataset name the catalogue cannot store
    (too long, empty, a control character), before anything is written: an import that stopped
    at such a row half way would leave the photos before it imported and the rest not."""
    problems: dict[str, list[str]] = {}  # problem -> image ids of the rows that have it
    pairs = zip(rows["image_id"].astype(str), rows["identity"], rows["dataset"])
    for image_id, identity, name in pairs:
        for problem in name_problems(str(identity or "").strip(), str(name or "").strip()):
            problems.setdefault(problem, []).append(image_id)
    if problems:
        shown = [f"  image_id {_listing((repr(i) for i in ids), 5)}: {problem}" for problem, ids in problems.items()]
        raise CatalogError(
            f"{source}: {len(problems)} identity or dataset name(s) cannot be stored in the catalogue "
            f"(nothing was imported):\n"
            + "\n".join(shown[:20])
            + ("\n  ..." if len(shown) > 20 else "")
            + "\nFix them in the dataset and import again."
        )


def _import_row(catalog: Catalog, row: dict, species: dict, source: str, report: ImportReport) -> None:
    image_id = str(row["image_id"])
    try:
        data = read_image_bytes(row["path"])
        extension = sniff_image_type(data)
        if extension is None:
            raise ImageReadError(f"{row['path']}: not a JPEG, PNG, WebP, TIFF or BMP file")
        existing = catalog.image_by_sha(content_hash(data))
        if existing is not None:  # before decoding: a re-run skips finished photos cheaply
            report.already_present += 1
            if existing["individual_id"] != row["identity"]:
                report.conflicts.append(
                    f"{image_id}: the same photo is already catalogued as image {existing['id']} of "
                    f"'{existing['individual_id']}', not '{row['identity']}'; kept as it was."
                )
            return
        decode_image(data, row["path"])  # refuse what could not be identified later
    except ImageReadError as error:
        report.unreadable.append((image_id, str(error)))
        return
    fields = {name: row.get(column) for name, column in IMAGE_FIELDS.items()}
    # When and where: the photo's EXIF, under what the dataset's columns say (they win).
    place = with_typed(read_photo_place(data), **{column: row.get(column) for column in TYPED_COLUMNS})
    fields.update(
        sighting_date=place.capture_time, latitude=place.latitude, longitude=place.longitude, altitude=place.altitude
    )
    # One transaction for the individual and its photo: a crash never leaves an individual
    # without the photo that made the import create it.
    with catalog.transaction():
        if catalog.add_individual(row["identity"], row["dataset"], species=species.get(row["identity"], "")):
            report.individuals_added += 1
        _, created = catalog.add_image(
            data, extension, row["identity"], source=source, source_image_id=image_id, **fields
        )
    report.added += created
    report.already_present += not created


def _species_by_identity(rows: pd.DataFrame) -> dict[str, str]:
    if "species" not in rows.columns:
        return {}
    named = rows.dropna(subset=["species"])
    return dict(zip(named["identity"], named["species"].astype(str)))
