"""The catalogue: one SQLite file of individuals, their photos, descriptors and review decisions,
plus a content-addressed photo store beside it (``<catalogue>.images/``).

Durability rules, so that nothing is lost on a crash (power cut, SIGKILL, full disk):
- WAL journal with ``synchronous=FULL``: a committed transaction survives a crash, an uncommitted
  one vanishes entirely.
- Every change is one transaction (``with catalog.transaction():``) opened with BEGIN IMMEDIATE,
  which takes the write lock up front: two writers queue (``busy_timeout``) instead of one failing
  half way through a read-then-write.
- Photo files are written (atomically) before the rows that name them are committed.

A ``Catalog`` object wraps one connection; open one per thread or per request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wildreid import __version__
from wildreid.catalog.journal import Journal
from wildreid.catalog.photos import PhotoStore
from wildreid.catalog.schema import SCHEMA_VERSION, SchemaError, migrate, schema_version

BUSY_TIMEOUT_S = 30
DECIDED = {"matched", "new"}  # final states of a query
OUTCOME_STATUS = {"match": "matched", "new": "new", "skip": "skipped"}


class CatalogError(ValueError):
    """A request the catalogue cannot carry out; the message says why and what to do."""


class AlreadyDecided(CatalogError):
    """Someone else decided this query first; ``decision`` is what they decided."""

    def __init__(self, message: str, decision: dict | None):
        super().__init__(message)
        self.decision = decision


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def default_photo_root(path: Path) -> Path:
    return path.with_name(path.name + ".images")


class Catalog:
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

    # ----------------------------------------------------------------------------------------
    # plumbing

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Catalog":
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

    def counts(self) -> dict[str, int]:
        return {
            table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("individuals", "images", "descriptors", "queries", "decisions", "history")
        }

    def datasets(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT dataset FROM individuals ORDER BY dataset")]

    # ----------------------------------------------------------------------------------------
    # individuals

    def add_individual(
        self, individual_id: str, dataset: str, *, name: str = "", species: str = "", notes: str = ""
    ) -> bool:
        """Create the individual unless it exists; True if it was created."""
        individual_id, dataset = (individual_id or "").strip(), (dataset or "").strip()
        if not individual_id:
            raise CatalogError("individual id: empty; give every individual an id.")
        if any(ord(c) < 32 or ord(c) == 127 for c in individual_id):
            raise CatalogError(
                f"individual id {individual_id!r}: control characters (line breaks, tabs...) are "
                "not allowed; ids are one line of text."
            )
        if not dataset:
            raise CatalogError(
                f"individual '{individual_id}': empty dataset; say which dataset (species or study) it belongs to."
            )
        with self.transaction():
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO individuals (id, name, species, dataset, notes, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (individual_id, name.strip(), species.strip(), dataset, notes.strip(), now()),
            )
        return cursor.rowcount == 1

    def individual(self, individual_id: str) -> dict | None:
        return self._one("SELECT * FROM individuals WHERE id = ?", individual_id)

    def individuals(self, search: str = "", *, limit: int = 200, offset: int = 0) -> list[dict]:
        """Individuals whose id or name contains ``search`` (case-insensitive), each with its
        number of photos and one photo to show."""
        pattern = "%" + search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self._all(
            "SELECT i.*, count(m.id) AS image_count, min(m.sha256) AS cover, "
            "max(m.sighting_date) AS last_seen FROM individuals i "
            "LEFT JOIN images m ON m.individual_id = i.id "
            "WHERE i.id LIKE ? ESCAPE '\\' OR i.name LIKE ? ESCAPE '\\' "
            "GROUP BY i.id ORDER BY i.id LIMIT ? OFFSET ?",
            pattern,
            pattern,
            limit,
            offset,
        )

    def update_individual(
        self, individual_id: str, *, name: str | None = None, notes: str | None = None, reviewer: str = "catalogue"
    ) -> None:
        with self.transaction():
            if self.individual(individual_id) is None:
                raise CatalogError(f"individual '{individual_id}' does not exist.")
            changes = {
                column: value.strip() for column, value in (("name", name), ("notes", notes)) if value is not None
            }
            journal = Journal(self.db)
            journal.update("individuals", individual_id, changes)
            if journal.steps:
                edited = journal.steps[-1][4]  # the columns that changed
                self.record_history(
                    journal,
                    "edit",
                    reviewer=_reviewer(reviewer),
                    dataset=self.individual(individual_id)["dataset"],
                    summary=f"{individual_id}: {' and '.join(edited)} edited",
                )

    def _new_individual_id(self, dataset: str) -> str:
        """The next free ``<dataset>_new<NNNN>``; call inside the write transaction so that two
        reviewers creating individuals at once cannot get the same id."""
        prefix = f"{dataset}_new"
        taken = {
            row[0]
            for row in self.db.execute("SELECT id FROM individuals WHERE substr(id, 1, ?) = ?", (len(prefix), prefix))
        }
        number = len(taken) + 1
        while f"{prefix}{number:04d}" in taken:
            number += 1
        return f"{prefix}{number:04d}"

    def dataset_species(self, dataset: str) -> str:
        """The species most individuals of ``dataset`` have (empty when none says)."""
        row = self.db.execute(
            "SELECT species, count(*) AS n FROM individuals WHERE dataset = ? "
            "AND species != '' GROUP BY species ORDER BY n DESC LIMIT 1",
            (dataset,),
        ).fetchone()
        return row[0] if row else ""

    # ----------------------------------------------------------------------------------------
    # images

    def add_image(
        self,
        data: bytes,
        extension: str,
        individual_id: str,
        *,
        sighting_date=None,
        location=None,
        orientation=None,
        viewpoint=None,
        source: str = "",
        source_image_id=None,
    ) -> tuple[dict, bool]:
        """Store a photo of ``individual_id``; return (image row, created). A photo already in the
        catalogue (same bytes) is not added twice: its existing row is returned."""
        sha256, stored_path = self.photos.put(data, extension)  # the file first, then the row
        with self.transaction():
            if self.individual(individual_id) is None:
                raise CatalogError(f"individual '{individual_id}' does not exist; create it first.")
            existing = self.image_by_sha(sha256)
            if existing is not None:
                return existing, False
            cursor = self.db.execute(
                "INSERT INTO images (sha256, stored_path, individual_id, sighting_date, location, "
                "orientation, viewpoint, source, source_image_id, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sha256,
                    stored_path,
                    individual_id,
                    _text(sighting_date),
                    _text(location),
                    _text(orientation),
                    _text(viewpoint),
                    source,
                    _text(source_image_id),
                    now(),
                ),
            )
            return self.image(cursor.lastrowid), True

    def image(self, image_id: int) -> dict | None:
        return self._one("SELECT * FROM images WHERE id = ?", image_id)

    def image_by_sha(self, sha256: str) -> dict | None:
        return self._one("SELECT * FROM images WHERE sha256 = ?", sha256)

    def images_signature(self) -> tuple[int, int, int]:
        """(number of photos, newest photo id, updates and deletions of photos so far): photos
        are added far more often than they change, and the counter (kept by triggers, see
        schema.py) says when one was moved to another individual or removed. An unchanged
        signature means an unchanged set of photos."""
        row = self._one(
            "SELECT count(*) AS photos, coalesce(max(id), 0) AS newest, "
            "(SELECT count FROM image_changes) AS changes FROM images"
        )
        return int(row["photos"]), int(row["newest"]), int(row["changes"])

    def images(self, individual_id: str | None = None) -> list[dict]:
        """Photos (of one individual, or all), oldest sighting first; with the individual's
        dataset and species."""
        where, args = ("WHERE m.individual_id = ?", (individual_id,)) if individual_id else ("", ())
        return self._all(
            "SELECT m.*, i.dataset, i.species, i.name FROM images m "
            f"JOIN individuals i ON i.id = m.individual_id {where} "
            "ORDER BY m.sighting_date IS NULL, m.sighting_date, m.id",
            *args,
        )

    def photo_counts(self, individual_ids: list[str]) -> dict[str, int]:
        """How many photos each of these individuals has (0 for none, or an unknown id), in one query."""
        marks = ", ".join("?" * len(individual_ids))
        rows = self._all(
            f"SELECT individual_id, count(*) AS photos FROM images WHERE individual_id IN ({marks}) "
            "GROUP BY individual_id",
            *individual_ids,
        )
        return {individual_id: 0 for individual_id in individual_ids} | {r["individual_id"]: r["photos"] for r in rows}

    def photo_path(self, stored_path: str) -> Path:
        return self.photos.path(stored_path)

    def stored_file(self, sha256: str) -> Path | None:
        """The file of a catalogue photo or an uploaded query with this hash, or None."""
        row = self._one(
            "SELECT stored_path FROM images WHERE sha256 = ? UNION ALL "
            "SELECT stored_path FROM queries WHERE sha256 = ? LIMIT 1",
            sha256,
            sha256,
        )
        return self.photos.path(row["stored_path"]) if row else None

    # ----------------------------------------------------------------------------------------
    # descriptors

    def descriptors(self, backbone_key: str, hashes: list[str] | None = None) -> dict[str, np.ndarray]:
        """Stored descriptors for one backbone (all, or those of ``hashes``), by content hash."""
        if hashes is None:
            rows = self.db.execute(
                "SELECT sha256, dim, vector FROM descriptors WHERE backbone_key = ?", (backbone_key,)
            ).fetchall()
        else:
            rows = []
            for start in range(0, len(hashes), 500):  # bounded IN lists
                chunk = hashes[start : start + 500]
                rows += self.db.execute(
                    f"SELECT sha256, dim, vector FROM descriptors WHERE backbone_key = ? "
                    f"AND sha256 IN ({', '.join('?' * len(chunk))})",
                    (backbone_key, *chunk),
                ).fetchall()
        return {row[0]: np.frombuffer(row[2], dtype="<f4").reshape(row[1]).copy() for row in rows}

    def images_without_descriptors(self, backbone_key: str) -> list[dict]:
        return self._all(
            "SELECT m.* FROM images m WHERE NOT EXISTS (SELECT 1 FROM descriptors d "
            "WHERE d.sha256 = m.sha256 AND d.backbone_key = ?) ORDER BY m.id",
            backbone_key,
        )

    def save_descriptors(self, backbone_key: str, hashes: list[str], vectors: np.ndarray) -> None:
        """Store descriptors of catalogue photos; a photo removed meanwhile (an undone
        confirmation, while a background job described it) is left out."""
        vectors = np.asarray(vectors, dtype="<f4")
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO descriptors (sha256, backbone_key, dim, vector) "
                "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM images WHERE sha256 = ?)",
                [(h, backbone_key, int(v.shape[0]), v.tobytes(), h) for h, v in zip(hashes, vectors)],
            )

    # ----------------------------------------------------------------------------------------
    # review: uploaded queries and decisions

    def add_query(
        self,
        data: bytes,
        extension: str,
        *,
        dataset: str,
        original_name: str = "",
        sighting_date=None,
        location=None,
        uploaded_by: str = "",
        job_id=None,
    ) -> dict:
        if dataset not in self.datasets():
            raise CatalogError(
                f"dataset '{dataset}': the catalogue has no individuals in it; "
                f"choose one of {', '.join(self.datasets()) or '(none: import some first)'}."
            )
        sha256, stored_path = self.photos.put(data, extension)
        with self.transaction():
            cursor = self.db.execute(
                "INSERT INTO queries (sha256, stored_path, original_name, dataset, sighting_date, "
                "location, uploaded_by, uploaded_at, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sha256,
                    stored_path,
                    original_name,
                    dataset,
                    _text(sighting_date),
                    _text(location),
                    uploaded_by,
                    now(),
                    job_id,
                ),
            )
            return self.query(cursor.lastrowid)

    def query(self, query_id: int) -> dict | None:
        row = self._one("SELECT * FROM queries WHERE id = ?", query_id)
        if row is not None:
            row["result"] = json.loads(row["result"]) if row["result"] else None
        return row

    def queries(
        self, *, status: str | list[str] | None = None, job_id: str | None = None, limit: int = 200
    ) -> list[dict]:
        clauses, args = [], []
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            args += statuses
        if job_id:
            clauses.append("job_id = ?")
            args.append(job_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._all(f"SELECT * FROM queries {where} ORDER BY id LIMIT ?", *args, limit)
        for row in rows:
            row["result"] = json.loads(row["result"]) if row["result"] else None
        return rows

    def query_photos(self, dataset: str, statuses: list[str]) -> list[dict]:
        """The id, content hash and stored file of ``dataset``'s queries in these statuses, oldest
        first: what comparing their photos needs, without reading their results."""
        marks = ", ".join("?" * len(statuses))
        return self._all(
            f"SELECT id, sha256, stored_path FROM queries WHERE dataset = ? AND status IN ({marks}) ORDER BY id",
            dataset,
            *statuses,
        )

    def set_query_result(self, query_id: int, result: dict | None, *, error: str | None = None) -> None:
        """Store the identification result (status 'ready'), or the error (status 'failed'), with
        when and by which wildreid it was identified."""
        with self.transaction():
            self.db.execute(
                "UPDATE queries SET result = ?, error = ?, status = ?, identified_at = ?, identified_by = ? "
                "WHERE id = ? AND status = 'queued'",
                (
                    json.dumps(result) if result is not None else None,
                    error,
                    "failed" if error else "ready",
                    now(),
                    f"wildreid {__version__}",
                    query_id,
                ),
            )

    def decide(
        self,
        query_id: int,
        outcome: str,
        *,
        reviewer: str,
        preset: str,
        individual_id: str | None = None,
        name: str = "",
        notes: str = "",
    ) -> dict:
        """Record a reviewer's decision on a query, in one transaction:

        - ``match``: the photo joins ``individual_id``'s photos;
        - ``new``: a new individual (named ``name``) is created with the photo;
        - ``skip``: nothing changes but the record (a skipped query can be decided later).

        The first ``match``/``new`` wins: a later one raises :class:`AlreadyDecided`, so two
        reviewers clicking at the same moment never file one photo under two individuals.
        """
        if outcome not in OUTCOME_STATUS:
            raise CatalogError(f"decision: '{outcome}' is not one of match, new, skip.")
        reviewer = _reviewer(reviewer)
        with self.transaction():
            query = self.query(query_id)
            if query is None:
                raise CatalogError(f"query {query_id} does not exist.")
            self._check_decidable(query)
            journal = Journal(self.db)
            if outcome == "new":
                individual_id = self._create_individual(journal, query["dataset"], name=name, notes=notes)
            elif outcome == "skip":
                individual_id = None
            [decision_id] = self._file_queries(journal, [query], outcome, individual_id, reviewer, preset)
            what = {"match": f"filed under {individual_id}", "new": f"filed under the new individual {individual_id}"}
            self.record_history(
                journal,
                "decide",
                reviewer=reviewer,
                dataset=query["dataset"],
                summary=f"query #{query_id} ({query['original_name']}) {what.get(outcome, 'skipped')}",
            )
            return self._one("SELECT * FROM decisions WHERE id = ?", decision_id)

    def _check_decidable(self, query: dict) -> None:
        """Refuse a query already decided (:class:`AlreadyDecided`) or still being identified."""
        if query["status"] in DECIDED:
            previous = self._one(
                "SELECT * FROM decisions WHERE query_id = ? AND outcome != 'skip' ORDER BY id DESC LIMIT 1",
                query["id"],
            )
            who = f" by {previous['reviewer']} at {previous['decided_at']}" if previous else ""
            raise AlreadyDecided(
                f"query {query['id']} was already decided{who}: "
                f"{query['status']} ({previous and previous['individual_id']}).",
                previous,
            )
        if query["status"] == "queued":
            raise CatalogError(f"query {query['id']} is still being identified; wait for its candidates.")

    def _create_individual(self, journal: Journal, dataset: str, *, name: str = "", notes: str = "") -> str:
        """A new individual ``<dataset>_newNNNN`` (inside the caller's transaction)."""
        individual_id = self._new_individual_id(dataset)
        journal.insert(
            "individuals",
            {
                "id": individual_id,
                "name": name.strip(),
                "species": self.dataset_species(dataset),
                "dataset": dataset,
                "notes": notes.strip(),
                "created_at": now(),
            },
        )
        return individual_id

    def _file_queries(
        self,
        journal: Journal,
        queries: list[dict],
        outcome: str,
        individual_id: str | None,
        reviewer: str,
        preset: str,
    ) -> list[int]:
        """File decidable ``queries`` under ``individual_id`` (None: a skip), each with its
        decision; return the decisions' ids. Inside the caller's transaction."""
        if outcome != "skip" and (not individual_id or self.individual(individual_id) is None):
            raise CatalogError(
                f"individual '{individual_id}' does not exist; choose a candidate or create a new individual."
            )
        decisions = []
        for query in queries:
            image_id = None
            if individual_id is not None:
                existing = self.image_by_sha(query["sha256"])
                if existing is not None and existing["individual_id"] != individual_id:
                    # One photo is filed under one individual: saying "filed under B" while it stays
                    # under A would be a lie, and moving it silently would undo an earlier decision.
                    chosen = "a new individual" if outcome == "new" else f"'{individual_id}'"
                    raise CatalogError(
                        f"This very photo (query #{query['id']}) is already in the catalogue as a photo of "
                        f"'{existing['individual_id']}' (image {existing['id']}), so it cannot also be filed under "
                        f"{chosen}. Confirm '{existing['individual_id']}' for it, or skip it; if "
                        f"'{existing['individual_id']}' is wrong, correct that individual's photos first."
                    )
                if existing is None:
                    image_id = journal.insert(
                        "images",
                        {
                            "sha256": query["sha256"],
                            "stored_path": query["stored_path"],
                            "individual_id": individual_id,
                            "sighting_date": query["sighting_date"],
                            "location": query["location"],
                            "source": "review",
                            "source_image_id": f"query-{query['id']}",
                            "added_at": now(),
                        },
                    )
                else:  # the very same photo, already catalogued under this individual
                    image_id = existing["id"]
            decisions.append(
                journal.insert(
                    "decisions",
                    {
                        "query_id": query["id"],
                        "outcome": outcome,
                        "individual_id": individual_id,
                        "image_id": image_id,
                        "reviewer": reviewer,
                        "decided_at": now(),
                        "score": _candidate_score(query["result"], individual_id),
                        "preset": preset,
                    },
                )
            )
            journal.update("queries", query["id"], {"status": OUTCOME_STATUS[outcome]})
        return decisions

    def decisions(self, *, query_id: int | None = None, individual_id: str | None = None) -> list[dict]:
        clauses, args = [], []
        if query_id is not None:
            clauses.append("d.query_id = ?")
            args.append(query_id)
        if individual_id is not None:
            clauses.append("d.individual_id = ?")
            args.append(individual_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._all(
            "SELECT d.*, q.original_name, q.sighting_date, q.location FROM decisions d "
            f"JOIN queries q ON q.id = d.query_id {where} ORDER BY d.id",
            *args,
        )

    # ----------------------------------------------------------------------------------------
    # history: every change a reviewer makes, undoable (see journal.py and changes.py)

    def record_history(self, journal: Journal, action: str, *, reviewer: str, dataset: str | None, summary: str) -> int:
        """Record a change made through ``journal`` (inside its transaction); return its id."""
        return self.db.execute(
            "INSERT INTO history (action, dataset, reviewer, made_at, summary, change) VALUES (?, ?, ?, ?, ?, ?)",
            (action, dataset, reviewer, now(), summary, json.dumps({"steps": journal.steps})),
        ).lastrowid

    def update_history_change(self, history_id: int, journal: Journal) -> None:
        """Store the steps ``journal`` took after its entry was recorded (rows that name the entry)."""
        self.db.execute(
            "UPDATE history SET change = ? WHERE id = ?", (json.dumps({"steps": journal.steps}), history_id)
        )

    def history(self, *, limit: int = 100, include_undone: bool = True) -> list[dict]:
        """The latest changes first, each with its recorded ``change`` as data."""
        where = "" if include_undone else "WHERE undone_at IS NULL"
        rows = self._all(f"SELECT * FROM history {where} ORDER BY id DESC LIMIT ?", limit)
        for row in rows:
            row["change"] = json.loads(row["change"])
        return rows

    def history_entry(self, history_id: int) -> dict | None:
        row = self._one("SELECT * FROM history WHERE id = ?", history_id)
        if row is not None:
            row["change"] = json.loads(row["change"])
        return row

    def last_change(self) -> dict | None:
        """The latest change not undone: the one undo would take back."""
        rows = self.history(limit=1, include_undone=False)
        return rows[0] if rows else None

    # ----------------------------------------------------------------------------------------
    # health

    def check(self, *, repair: bool = False) -> "CheckReport":
        """SQLite's own integrity check, foreign keys, and that every row's photo file exists.
        ``repair`` deletes what a crash can leave behind (temporary files, unreferenced photos)."""
        report = CheckReport(schema_version=self.schema_version)
        report.integrity = [row[0] for row in self.db.execute("PRAGMA integrity_check")]
        report.foreign_key_violations = [tuple(row) for row in self.db.execute("PRAGMA foreign_key_check")]
        referenced = set()
        for table in ("images", "queries"):
            for row in self.db.execute(f"SELECT id, sha256, stored_path FROM {table}"):
                referenced.add(row["stored_path"])
                try:
                    path = self.photos.path(row["stored_path"])
                except ValueError:
                    report.missing_files.append(f"{table} {row['id']}: bad path {row['stored_path']!r}")
                    continue
                if not path.is_file() or Path(row["stored_path"]).stem != row["sha256"]:
                    report.missing_files.append(f"{table} {row['id']}: {path}")
        report.unreferenced_files = [f for f in self.photos.files() if f not in referenced]
        report.leftover_files = [str(p) for p in self.photos.leftovers()]
        if repair:
            for relative in report.unreferenced_files:
                self.photos.path(relative).unlink(missing_ok=True)
            for leftover in self.photos.leftovers():
                leftover.unlink(missing_ok=True)
        return report


@dataclass
class CheckReport:
    schema_version: int
    integrity: list[str] = field(default_factory=list)
    foreign_key_violations: list[tuple] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # rows whose photo is gone: data loss
    unreferenced_files: list[str] = field(default_factory=list)  # photos no row names: harmless
    leftover_files: list[str] = field(default_factory=list)  # interrupted writes: harmless

    @property
    def ok(self) -> bool:
        """Consistent: nothing lost. Unreferenced and leftover files are only wasted space."""
        return self.integrity == ["ok"] and not self.foreign_key_violations and not self.missing_files

    def lines(self) -> list[str]:
        lines = [
            f"schema version {self.schema_version} (current {SCHEMA_VERSION})",
            f"integrity_check: {', '.join(self.integrity[:5])}",
            f"foreign key violations: {len(self.foreign_key_violations)}",
            f"rows whose photo file is missing: {len(self.missing_files)}",
        ]
        lines += [f"  {m}" for m in self.missing_files[:20]]
        lines += [
            f"photos no row refers to (left by an interrupted import; --repair deletes them): "
            f"{len(self.unreferenced_files)}",
            f"temporary files of interrupted writes: {len(self.leftover_files)}",
        ]
        return lines


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


def _candidate_score(result: dict | None, individual_id: str | None) -> float | None:
    """The score the chosen individual had among the candidates (the best score for 'new' and
    'skip', so a decision records how sure the machine was)."""
    if not result or not result.get("candidates"):
        return None
    for candidate in result["candidates"]:
        if candidate["individual_id"] == individual_id:
            return candidate["score"]
    return result["candidates"][0]["score"]
