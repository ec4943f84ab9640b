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


class CatalogDamaged(CatalogError):
    """SQLite cannot read the catalogue's file (a damaged or truncated file, text that is not
    UTF-8, a schema edited by hand): not the request's fault; `wildreid catalog check` says more.
    ``reason`` is what was found, without the advice."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class CatalogBusy(CatalogError):
    """Another program has held the catalogue's write lock for longer than BUSY_TIMEOUT_S."""


def database_error(path: Path, error: sqlite3.DatabaseError) -> CatalogError:
    """The CatalogError to raise for an error SQLite gave on reading or writing ``path``."""
    if isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error)):
        return CatalogBusy(
            f"{path}: another program has been writing to the catalogue for over {BUSY_TIMEOUT_S} s "
            f"({error}); try again when it has finished."
        )
    return CatalogDamaged(
        f"{path}: the catalogue's file is damaged ({error}). Run `wildreid catalog check --catalog {path}` "
        "to see what, and restore the file from a backup.",
        reason=str(error),
    )


# SQLite errors that say something about the file, not about our statements: those become a
# CatalogError. An IntegrityError (a constraint, which callers handle) and a ProgrammingError (a
# bug of ours) pass as they are.
_PASSED = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.NotSupportedError)


class _Cursor(sqlite3.Cursor):
    """A cursor whose SQLite errors about the file become CatalogErrors, also those raised while
    rows are fetched (text that is not UTF-8 fails only when its row is read)."""

    def _translated(self, method, *args):
        try:
            return method(*args)
        except _PASSED:
            raise
        except sqlite3.DatabaseError as error:
            raise database_error(self.connection.catalog_path, error) from None  # type: ignore[attr-defined]

    def execute(self, *args):
        return self._translated(super().execute, *args)

    def executemany(self, *args):
        return self._translated(super().executemany, *args)

    def fetchone(self):
        return self._translated(super().fetchone)

    def fetchall(self):
        return self._translated(super().fetchall)

    def fetchmany(self, *args):
        return self._translated(super().fetchmany, *args)

    def __next__(self):
        return self._translated(super().__next__)


class _Database(sqlite3.Connection):
    """The catalogue's SQLite connection: every statement runs on a :class:`_Cursor`."""

    catalog_path: Path

    def cursor(self, factory=_Cursor):
        return super().cursor(factory)

    def execute(self, *args):
        return self.cursor().execute(*args)

    def executemany(self, *args):
        return self.cursor().executemany(*args)


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
        if self.path.is_file() and self.path.stat().st_size == 0 and (not create or self.photos.files()):
            # SQLite would take an empty file for a new database and write an empty catalogue
            # into it: a catalogue truncated to nothing would then answer "no photos".
            raise CatalogError(
                f"{self.path}: the file is empty (0 bytes), not a catalogue"
                + (" though photos lie beside it" if self.photos.files() else "")
                + ". If it was one, it was truncated: restore it from a backup."
            )
        try:
            # isolation_level=None: no implicit transactions; ours are explicit (see transaction()).
            # check_same_thread=False: a web request may be served by more than one worker thread,
            # one after the other; a Catalog is still never used by two threads at once.
            self.db = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_S,
                check_same_thread=False,
                factory=_Database,
            )
            self.db.catalog_path = self.path
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
        except (sqlite3.DatabaseError, CatalogDamaged) as error:
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
