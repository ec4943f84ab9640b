"""When and where each photo was taken: the camera's EXIF, overridden by what a person typed.

A typed value (a metadata column, a form field) wins over the EXIF, which may be wrong (a camera
clock never set, a GPS fix from the office). One exception keeps information: a typed date
alone on the same day as the EXIF time keeps the EXIF time of day.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from wildreid.data.images import PhotoPlace, read_image_bytes, read_photo_place

# The columns identify's candidates.csv and watch's results.csv carry, per photo.
PLACE_COLUMNS = ("capture_time", "latitude", "longitude")
# A dataset's typed columns that override the EXIF (also :func:`with_typed`'s keywords).
TYPED_COLUMNS = ("date", "latitude", "longitude", "altitude")


def _given(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(str(value).strip())


def with_typed(
    place: PhotoPlace, *, date: Any = None, latitude: Any = None, longitude: Any = None, altitude: Any = None
) -> PhotoPlace:
    """``place`` (from the EXIF) with the values a person typed put over it. Coordinates are
    replaced as a pair: a typed latitude and longitude replace the EXIF position and altitude."""
    changes: dict[str, Any] = {}
    if _given(date):
        typed = str(date).strip()
        exif_time = place.capture_time or ""
        # '2025-07-14' typed for a photo the camera dated 2025-07-14 06:31: the same day, told
        # less precisely; the time of day is kept.
        if not (len(typed) == 10 and exif_time[:10] == typed):
            changes["capture_time"] = typed
    if _given(latitude) and _given(longitude):
        try:
            lat, lon = float(latitude), float(longitude)
        except (TypeError, ValueError):
            lat = lon = math.nan
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            changes.update(latitude=lat, longitude=lon, altitude=None)
    if _given(altitude) and "latitude" in changes:
        try:
            changes["altitude"] = float(altitude)
        except (TypeError, ValueError):
            pass
    return replace(place, **changes) if changes else place


def photo_place(path: str | Path) -> PhotoPlace:
    """The EXIF place of the photo at ``path``; empty when the file cannot be read (its reading
    error is reported where the photo is decoded, not here)."""
    try:
        return read_photo_place(read_image_bytes(path))
    except OSError:
        return PhotoPlace()


def place_table(photos: pd.DataFrame) -> pd.DataFrame:
    """capture_time, latitude and longitude of each row of ``photos`` (a ``path`` column; the
    dataset's typed ``date``, ``latitude``, ``longitude`` columns override the EXIF), in its
    order; empty cells where neither says."""
    rows = []
    for row in photos.to_dict("records"):
        place = photo_place(row["path"]) if _given(row.get("path")) else PhotoPlace()
        place = with_typed(place, **{column: row.get(column) for column in TYPED_COLUMNS})
        rows.append({"capture_time": place.capture_time, "latitude": place.latitude, "longitude": place.longitude})
    return pd.DataFrame(rows, columns=list(PLACE_COLUMNS), index=photos.index)


def with_places(photos: pd.DataFrame) -> pd.DataFrame:
    """``photos`` with :func:`place_table`'s columns appended (replacing any of the same name)."""
    places = place_table(photos)
    return pd.concat([photos.drop(columns=[c for c in PLACE_COLUMNS if c in photos]), places], axis=1)
