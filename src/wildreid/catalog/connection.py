"""Opening a catalogue: its SQLite file and the content-addressed photo store beside it
(``<catalogue>.images/``), transactions, and the values every table writes.

Durability rules, so that nothing is lost on a crash (power cut, SIGKILL, full disk):
- WAL journal with ``synchronous=FULL``: a committed transaction survives a crash, an uncommitted
  one vanishes entirely.
- Every change is one transaction (``with catalog.transaction():``) opened with BEGIN IMMEDIATE,
  which takes the write lock up front: two writers queue (``busy_timeout``) instead of one failing
  half way through a read-then-write.
- Photo files are written (atomically) before the rows that name them are committed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Self

from wildreid.catalog.photos import PhotoStore
from wildreid.catalog.schema import SchemaError, migrate, schema_version

BUSY_TIMEOUT_S = 30


class CatalogError(ValueError):
    """A request the catalogue cannot carry out; the message says why and what to do."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def default_photo_root(path: Path) -> Path:
    return path.with_name(path.name + ".images")


class Connection:
    """One connection to a catalogue (store.py's Catalog builds on it); open one per thread or per
    request."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise CatalogError(
                f"{self.path}: no catalogue here. Create one with "
                f"`wildreid catalog import --catalog {self.path} DATASET`."
            )
        if self.path.is_dir():
            raise CatalogError(f"{self.path} is a folder; give the catalogue's file name (e.g. animals.sqlite).")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.photos = PhotoStore(default_photo_root(self.path))
        try:
            # isolation_level=None: no implicit transactions; ours are explicit (see transaction()).
            # check_same_thread=False: a web request may be served by more than one worker thread,
            # one after the other; a Catalog is still never used by two threads at once.
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise CatalogError(
                    f"{self.path}: cannot switch the catalogue to WAL mode (got {mode}); "
                    "put it on a local disk (network file systems do not support WAL)."
                )
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.execute("PRAGMA foreign_keys = ON")
            migrate(self.db)
        except sqlite3.DatabaseError as error:
            raise CatalogError(
                f"{self.path}: not a readable catalogue ({error}). Give another path, "
                "or restore the file from a backup."
            ) from None
        except SchemaError as error:
            raise CatalogError(f"{self.path}: {error}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self):
        """All of the block's writes, or none of them."""
        if self.db.in_transaction:  # nested: the outer block owns the transaction
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _one(self, sql: str, *args) -> dict | None:
        row = self.db.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def _all(self, sql: str, *args) -> list[dict]:
        return [dict(row) for row in self.db.execute(sql, args).fetchall()]

    @property
    def schema_version(self) -> int:
        return schema_version(self.db)


def _reviewer(name: str | None) -> str:
    name = (name or "").strip()
    if not name:
        raise CatalogError("reviewer: empty; say who takes the decision.")
    return name


def _text(value) -> str | None:
    """Optional metadata as text; NaN, None and blanks become NULL."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def _position(latitude, longitude, altitude) -> tuple[float | None, float | None, float | None]:
    """A stored position: both coordinates, in range, or none at all (half a position, or one
    outside the globe, is no position); the altitude only with them."""
    try:
        lat, lon = float(latitude), float(longitude)
    except (TypeError, ValueError):
        return None, None, None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # also NaN
        return None, None, None
    try:
        height = float(altitude) if altitude is not None else None
    except (TypeError, ValueError):
        height = None
    return lat, lon, height if height == height else None
