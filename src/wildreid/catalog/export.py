"""Export a catalogue as an AnimalCLEF2025-style ``metadata.csv`` that ``load_dataset`` reads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from wildreid.catalog.store import Catalog
from wildreid.util.files import atomic_path, write_csv_atomic

# AnimalCLEF2025's columns first, in its order; then what the catalogue knows beyond them.
COLUMNS = [
    "image_id",
    "identity",
    "path",
    "date",
    "orientation",
    "species",
    "split",
    "dataset",
    "name",
    "location",
    "viewpoint",
    "sha256",
    "latitude",
    "longitude",
    "altitude",
]


def export_metadata(catalog: Catalog, out_dir: str | Path, *, copy_images: bool = False) -> Path:
    """Write ``out_dir/metadata.csv`` (every catalogue photo as a ``database`` row); return its
    path. Paths are relative to ``out_dir``: into the catalogue's photo store, or, with
    ``copy_images``, to copies under ``out_dir/images/`` (a self-contained folder)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for image in catalog.images():
        stored = catalog.photo_path(image["stored_path"])
        if copy_images:
            target = out_dir / "images" / stored.name
            if not target.is_file():
                with atomic_path(target) as temporary:
                    shutil.copyfile(stored, temporary)
            path = f"images/{stored.name}"
        else:
            path = Path(os.path.relpath(stored.resolve(), out_dir.resolve())).as_posix()
        rows.append(
            {
                "image_id": image["id"],
                "identity": image["individual_id"],
                "path": path,
                "date": image["sighting_date"],
                "orientation": image["orientation"],
                "species": image["species"],
                "split": "database",
                "dataset": image["dataset"],
                "name": image["name"],
                "location": image["location"],
                "viewpoint": image["viewpoint"],
                "sha256": image["sha256"],
                # the photo's own position (EXIF or typed): read back as typed columns on import
                "latitude": image["latitude"],
                "longitude": image["longitude"],
                "altitude": image["altitude"],
            }
        )
    metadata = out_dir / "metadata.csv"
    write_csv_atomic(pd.DataFrame(rows, columns=COLUMNS), metadata)
    return metadata
