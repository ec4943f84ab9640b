"""Procedural demo dataset for animal re-identification.

``make_demo_dataset`` draws a small, fully synthetic re-identification data set
so that the tool can be tried end to end without downloading anything.  Every
individual is a cartoon quadruped whose coat carries a unique pattern
(demo_animal.py); each photo of it changes what a camera trap would change:
pose, lighting, blur, noise, background and occlusion (demo_photo.py).

The layout follows AnimalCLEF2025: ``root/metadata.csv`` with the columns
``image_id,identity,path,date,orientation,species,split,dataset`` and images at
``root/images/<image_id>.jpg``.  "Known" individuals have database and query
photos; "new" individuals appear only among the queries.  Query identities are
written too: they are the ground truth used to score the demo.

Everything is drawn from ``numpy.random.default_rng`` seeded from the
arguments (never the global RNG or the clock), so the same arguments give a
byte-identical ``metadata.csv`` and identical pixels.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from wildreid.data.demo_animal import (
    STREAM_LAYOUT,
    STREAM_PHOTO,
    Individual,
    make_individual,
    render_animal,
    seeded_rng,
)
from wildreid.data.demo_photo import render_photo
from wildreid.util.files import make_temporary_folder, write_bytes_atomic

__all__ = [
    "Individual",
    "make_demo_dataset",
    "make_individual",
    "render_animal",
    "render_photo",
]

# Bump when the drawing code (demo_animal.py, demo_photo.py) changes, so that cached
# demo data sets made by an older generator are regenerated instead of silently reused.
GENERATOR_VERSION = 1

METADATA_COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
SPECIES = "spotted demo animal"
PARAMS_FILE = "demo_params.json"
_TMP_PREFIX = ".demo-tmp-"

# ---------------------------------------------------------------------------
# Data set assembly
# ---------------------------------------------------------------------------


def _plan(params: dict) -> list[dict]:
    """Decide every photo (who, split, date, photo seed) in the final row order."""
    seed = params["seed"]
    n_known, n_new = params["n_known"], params["n_new"]
    rng = seeded_rng(seed, STREAM_LAYOUT)
    # Identity numbers are shuffled so that "new" animals are not simply the
    # highest numbers (nothing in a name should hint at known vs new).
    numbers = rng.permutation(n_known + n_new)
    rows = []
    for k, number in enumerate(numbers):
        known = k < n_known
        splits = (
            (["database"] * params["database_per_individual"] + ["query"] * params["queries_per_known"])
            if known
            else ["query"] * params["queries_per_new"]
        )
        for j, split in enumerate(splits):
            # Database photos come from earlier in the season than queries.
            month = int(rng.integers(1, 5)) if split == "database" else int(rng.integers(5, 8))
            date = _dt.date(2026, month, int(rng.integers(1, 29)))
            rows.append(
                {
                    "number": int(number),
                    "split": split,
                    "date": date.isoformat(),
                    "photo_seed": [seed, STREAM_PHOTO, int(number), j],
                }
            )
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _params(**kwargs) -> dict:
    return {"generator_version": GENERATOR_VERSION, **kwargs}


def _is_complete(root: Path, params: dict) -> bool:
    """True when root holds a finished data set made with exactly ``params``."""
    try:
        if json.loads((root / PARAMS_FILE).read_text()) != params:
            return False
        with open(root / "metadata.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError):
        return False
    return bool(rows) and all((root / r["path"]).is_file() for r in rows)


def _metadata_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for r in rows:
        writer.writerow([r[c] for c in METADATA_COLUMNS])
    return buf.getvalue().encode("utf-8")


def make_demo_dataset(
    root: Path | str,
    *,
    n_known: int = 16,
    n_new: int = 6,
    database_per_individual: int = 6,
    queries_per_known: int = 2,
    queries_per_new: int = 2,
    image_size: int = 256,
    seed: int = 0,
    dataset_name: str = "DemoSpots",
) -> Path:
    """Write the demo dataset under root and return root/"metadata.csv".

    Idempotent: if ``root`` already holds a complete data set made with the
    same parameters (``root/demo_params.json``), nothing is redrawn.
    Otherwise the images are drawn into a temporary folder inside ``root`` and
    moved into place, and ``metadata.csv`` is written last, so an interrupted
    run never leaves a ``metadata.csv`` that points at missing images.  When
    regenerating, ``root/images`` is replaced as a whole (stale images from a
    larger earlier data set do not linger); other files in ``root`` are kept.
    """
    root = Path(root)
    if n_known < 0 or n_new < 0 or n_known + n_new == 0:
        raise ValueError("need at least one individual")
    if min(database_per_individual, queries_per_known, queries_per_new) < 0:
        raise ValueError("photo counts must not be negative")
    if n_known and database_per_individual < 1:
        raise ValueError("known individuals need at least one database image")
    if image_size < 32:
        raise ValueError("image_size must be at least 32")
    params = _params(
        n_known=n_known,
        n_new=n_new,
        database_per_individual=database_per_individual,
        queries_per_known=queries_per_known,
        queries_per_new=queries_per_new,
        image_size=image_size,
        seed=seed,
        dataset_name=dataset_name,
    )
    meta_path = root / "metadata.csv"
    if _is_complete(root, params):
        return meta_path

    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_TMP_PREFIX + "*"):  # left behind by a killed run
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)

    plan = _plan(params)
    tmp = make_temporary_folder(_TMP_PREFIX, root)
    try:
        (tmp / "images").mkdir()
        rows = _draw_photos(tmp, plan, params)
        _swap_in(root, tmp, rows, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta_path


def _draw_photos(folder: Path, plan: list[dict], params: dict) -> list[dict]:
    """Draw every planned photo into ``folder``/images; return the metadata rows."""
    seed, image_size, dataset_name = params["seed"], params["image_size"], params["dataset_name"]
    canonical: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    individuals: dict[int, Individual] = {}
    rows = []
    for image_id, p in enumerate(plan):
        number = p["number"]
        if number not in individuals:
            individuals[number] = make_individual(seed, number)
            canonical[number] = render_animal(individuals[number], image_size)
        ind = individuals[number]
        pixels = render_photo(ind, p["photo_seed"], image_size, canonical[number])
        rel = f"images/{image_id}.jpg"
        Image.fromarray(pixels, "RGB").save(folder / rel, "JPEG", quality=90)
        rows.append(
            {
                "image_id": image_id,
                "identity": f"{dataset_name}_{number:03d}",
                "path": rel,
                "date": p["date"],
                "orientation": "left" if ind.faces_left else "right",
                "species": SPECIES,
                "split": p["split"],
                "dataset": dataset_name,
            }
        )
    return rows


def _swap_in(root: Path, tmp: Path, rows: list[dict], params: dict) -> None:
    """Swap in the new images from ``tmp``.  The old metadata goes first, so that at no moment
    does a metadata.csv name images that are not there; the new one is written last."""
    meta_path = root / "metadata.csv"
    meta_path.unlink(missing_ok=True)
    old = root / "images"
    if old.exists():
        trash = tmp / "old-images"
        os.replace(old, trash)
    os.replace(tmp / "images", old)
    write_bytes_atomic(root / PARAMS_FILE, (json.dumps(params, indent=2, sort_keys=True) + "\n").encode())
    write_bytes_atomic(meta_path, _metadata_bytes(rows))
