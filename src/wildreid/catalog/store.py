"""The catalogue: one SQLite file of individuals, their photos, descriptors and review decisions,
plus a content-addressed photo store beside it (``<catalogue>.images/``).

``Catalog`` holds individuals, photos, descriptors, the history of changes and the health check;
it inherits uploaded queries and reviewers' decisions from decisions.py, and opening the files,
transactions and the durability rules from connection.py.

A ``Catalog`` object wraps one connection; open one per thread or per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wildreid.catalog.connection import CatalogBusy as CatalogBusy  # re-exported: web/errors.py imports it here
from wildreid.catalog.connection import CatalogDamaged, CatalogError, _position, _reviewer, _text, now
from wildreid.catalog.decisions import AlreadyDecided as AlreadyDecided  # re-exported: web/errors.py imports it here
from wildreid.catalog.decisions import Decisions
from wildreid.catalog.journal import Journal
from wildreid.catalog.schema import MAX_DATASET_LENGTH, MAX_INDIVIDUAL_ID_LENGTH, SCHEMA_VERSION, expected_schema
from wildreid.data.images import content_hash


def name_problems(individual_id: str, dataset: str) -> list[str]:
    """What is wrong with an individual id and its dataset name (stripped), as phrases to show
    after the place they come from; empty when both can be stored. The one rule for
    :meth:`Catalog.add_individual` and for an import's validation before it writes anything."""
    problems = []
    if not individual_id:
        problems.append("empty individual id; give every individual an id")
    elif any(ord(c) < 32 or ord(c) == 127 for c in individual_id):
        problems.append(
            f"individual id {individual_id!r}: control characters (line breaks, tabs...) are not allowed; "
            "ids are one line of text"
        )
    elif len(individual_id) > MAX_INDIVIDUAL_ID_LENGTH:
        problems.append(
            f"individual id '{individual_id[:40]}...' has {len(individual_id)} characters, over the limit of "
            f"{MAX_INDIVIDUAL_ID_LENGTH}; shorten it"
        )
    if not dataset:
        problems.append(
            f"individual '{individual_id[:40]}': empty dataset; say which dataset (species or study) it belongs to"
        )
    elif len(dataset) > MAX_DATASET_LENGTH:
        problems.append(
            f"dataset name '{dataset[:40]}...' has {len(dataset)} characters, over the limit of "
            f"{MAX_DATASET_LENGTH}; shorten it"
        )
    return problems


class Catalog(Decisions):
    """A catalogue: ``Catalog(path)`` opens it, creating it unless ``create=False``."""

    # ----------------------------------------------------------------------------------------
    # what it holds

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
        # Checked here, not left to the table's CHECK: INSERT OR IGNORE would skip a row that
        # breaks it without a word.
        problems = name_problems(individual_id, dataset)
        if problems:
            raise CatalogError("; ".join(problems) + ".")
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
        latitude=None,
        longitude=None,
        altitude=None,
    ) -> tuple[dict, bool]:
        """Store a photo of ``individual_id``; return (image row, created). A photo already in the
        catalogue (same bytes) is not added twice: its existing row is returned."""
        if self.individual(individual_id) is None:  # before the file: a refusal leaves nothing behind
            raise CatalogError(f"individual '{individual_id}' does not exist; create it first.")
        sha256, stored_path = self.photos.put(data, extension)  # the file first, then the row
        with self.transaction():
            if self.individual(individual_id) is None:
                raise CatalogError(f"individual '{individual_id}' does not exist; create it first.")
            existing = self.image_by_sha(sha256)
            if existing is not None:
                return existing, False
            cursor = self.db.execute(
                "INSERT INTO images (sha256, stored_path, individual_id, sighting_date, location, "
                "orientation, viewpoint, source, source_image_id, added_at, latitude, longitude, altitude) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    *_position(latitude, longitude, altitude),
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
        dataset and species, and the coordinates of the site their location names
        (``site_latitude``, ``site_longitude``, ``site_uncertainty``; None without one). A photo
        whose individual is missing (a row deleted outside wildreid) is CatalogDamaged, not left
        out: an export or a gallery would lose it without a word."""
        where, args = ("WHERE m.individual_id = ?", (individual_id,)) if individual_id else ("", ())
        rows = self._all(
            "SELECT m.*, i.dataset, i.species, i.name, i.id IS NOT NULL AS known, s.latitude AS site_latitude, "
            "s.longitude AS site_longitude, s.uncertainty AS site_uncertainty FROM images m "
            f"LEFT JOIN individuals i ON i.id = m.individual_id LEFT JOIN sites s ON s.name = m.location {where} "
            "ORDER BY m.sighting_date IS NULL, m.sighting_date, m.id",
            *args,
        )
        orphans = [row for row in rows if not row.pop("known")]
        if orphans:
            shown = ", ".join(f"image {row['id']} ('{row['individual_id']}')" for row in orphans[:5])
            raise CatalogDamaged(
                f"{self.path}: {len(orphans)} photo(s) belong to individuals the catalogue does not have: "
                f"{shown}{' ...' if len(orphans) > 5 else ''}. Run `wildreid catalog check --catalog "
                f"{self.path}`, and restore the file from a backup."
            )
        return rows

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
    # sites: named places with coordinates (a camera station, a waterhole)

    def set_site(self, name: str, latitude: float, longitude: float, *, uncertainty: int | None = None) -> bool:
        """Add the site, or move it; True if it was new. Photos whose location is ``name`` and
        that carry no position of their own are placed at it."""
        name = (name or "").strip()
        if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
            raise CatalogError(f"site '{name[:40]}': a site name is one line of 1 to 200 characters.")
        [latitude, longitude, _] = _position(latitude, longitude, None)
        if latitude is None:
            raise CatalogError(
                f"site '{name}': latitude and longitude must be decimal degrees (WGS84), "
                "within [-90, 90] and [-180, 180]."
            )
        if uncertainty is not None and int(uncertainty) < 1:
            raise CatalogError(f"site '{name}': the coordinate uncertainty is a whole number of metres >= 1.")
        with self.transaction():
            new = self.site(name) is None
            self.db.execute(
                "INSERT INTO sites (name, latitude, longitude, uncertainty) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET latitude = excluded.latitude, longitude = excluded.longitude, "
                "uncertainty = excluded.uncertainty",
                (name, latitude, longitude, None if uncertainty is None else int(uncertainty)),
            )
        return new

    def site(self, name: str) -> dict | None:
        return self._one("SELECT * FROM sites WHERE name = ?", (name or "").strip())

    def sites(self) -> list[dict]:
        return self._all("SELECT * FROM sites ORDER BY name")

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

    def check(self, *, repair: bool = False, quick: bool = False) -> "CheckReport":
        """SQLite's own integrity check, foreign keys, text that is not UTF-8, and that every
        row's photo file exists and (unless ``quick``) still has the SHA-256 it was stored under.
        ``repair`` deletes what a crash can leave behind (temporary files, unreferenced photos),
        only in a consistent catalogue: in a damaged one, a photo no readable row names may be
        the last copy of a lost row's photo."""
        report = CheckReport(schema_version=self.schema_version, quick=quick)
        # Each stage on its own: a file SQLite cannot read stops that stage, with its reason as
        # the finding, and the others still run.
        self._check_stage(report, "schema", lambda: self._check_schema(report))
        self._check_stage(report, "integrity_check", lambda: self._check_sqlite(report))
        self._check_stage(report, "text", lambda: self._check_text(report))
        referenced = self._check_stage(report, "photos", lambda: self._check_rows(report, quick))
        report.unreferenced_files = [f for f in self.photos.files() if f not in (referenced or set())]
        report.leftover_files = [str(p) for p in self.photos.leftovers()]
        if repair and report.ok and referenced is not None:
            for relative in report.unreferenced_files:
                self.photos.path(relative).unlink(missing_ok=True)
            for leftover in self.photos.leftovers():
                leftover.unlink(missing_ok=True)
            report.repaired = True
        return report

    @staticmethod
    def _check_stage(report: "CheckReport", name: str, stage):
        try:
            return stage()
        except CatalogDamaged as error:
            report.unreadable.append(f"{name}: {error.reason}")
            return None

    def _check_schema(self, report: "CheckReport") -> None:
        """Tables, indexes and triggers as wildreid's migrations made them: a byte changed in
        the schema's text can change a constraint without SQLite finding anything wrong."""
        found = {
            (row["type"], row["name"]): row["sql"]
            for row in self.db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        }
        expected = expected_schema()
        for key in sorted(set(found) | set(expected)):
            if key not in found:
                report.schema_changes.append(f"{key[0]} {key[1]}: missing")
            elif key not in expected:
                report.schema_changes.append(f"{key[0]} {key[1]}: not wildreid's")
            elif found[key] != expected[key]:
                report.schema_changes.append(f"{key[0]} {key[1]}: its definition differs from wildreid's")

    def _check_sqlite(self, report: "CheckReport") -> None:
        report.integrity = [row[0] for row in self.db.execute("PRAGMA integrity_check")]
        report.foreign_key_violations = [tuple(row) for row in self.db.execute("PRAGMA foreign_key_check")]

    def _check_rows(self, report: "CheckReport", quick: bool) -> set[str]:
        """The photo files the rows name, each checked; returns their stored paths."""
        referenced: set[str] = set()
        hashes: dict[Path, str] = {}  # an uploaded photo later filed shares its file: read it once
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
                    continue
                if quick:
                    continue
                if path not in hashes:
                    hashes[path] = content_hash(path.read_bytes())
                if hashes[path] != row["sha256"]:
                    report.changed_files.append(
                        f"{table} {row['id']}: {path} (its bytes no longer have the SHA-256 it was stored under)"
                    )
        return referenced

    def _check_text(self, report: "CheckReport") -> None:
        """Text cells that are not UTF-8 (SQLite stores any bytes; reading them fails later)."""
        self.db.text_factory = bytes
        try:
            tables = [row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                table = table.decode("utf-8", "replace")
                columns = [
                    row[1].decode("utf-8", "replace") for row in self.db.execute(f'PRAGMA table_info("{table}")')
                ]
                for column in columns:
                    for rowid, value in self.db.execute(
                        f'SELECT rowid, "{column}" FROM "{table}" WHERE typeof("{column}") = \'text\''
                    ):
                        try:
                            value.decode("utf-8")
                        except UnicodeDecodeError:
                            report.bad_text.append(f"{table} row {rowid}, column {column}: not UTF-8 text")
        finally:
            self.db.text_factory = str


@dataclass
class CheckReport:
    schema_version: int
    quick: bool = False  # photo contents not verified
    integrity: list[str] = field(default_factory=list)
    foreign_key_violations: list[tuple] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # what SQLite could not read: damage
    schema_changes: list[str] = field(default_factory=list)  # tables... unlike wildreid's: damage
    bad_text: list[str] = field(default_factory=list)  # cells that are not UTF-8: damage
    missing_files: list[str] = field(default_factory=list)  # rows whose photo is gone: data loss
    changed_files: list[str] = field(default_factory=list)  # photos whose bytes changed: data loss
    unreferenced_files: list[str] = field(default_factory=list)  # photos no row names: harmless
    leftover_files: list[str] = field(default_factory=list)  # interrupted writes: harmless
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """Consistent: nothing lost. Unreferenced and leftover files are only wasted space."""
        return (
            self.schema_version == SCHEMA_VERSION
            and self.integrity == ["ok"]
            and not self.foreign_key_violations
            and not self.unreadable
            and not self.schema_changes
            and not self.bad_text
            and not self.missing_files
            and not self.changed_files
        )

    def lines(self) -> list[str]:
        lines = [f"schema version {self.schema_version} (current {SCHEMA_VERSION})"]
        lines += [f"unreadable: {m}" for m in self.unreadable]
        lines.append(f"schema differences from wildreid's: {len(self.schema_changes)}")
        lines += [f"  {m}" for m in self.schema_changes[:20]]
        lines += [
            f"integrity_check: {', '.join(self.integrity[:5]) or 'not run'}",
            f"foreign key violations: {len(self.foreign_key_violations)}",
            f"text cells that are not UTF-8: {len(self.bad_text)}",
        ]
        lines += [f"  {m}" for m in self.bad_text[:20]]
        lines.append(f"rows whose photo file is missing: {len(self.missing_files)}")
        lines += [f"  {m}" for m in self.missing_files[:20]]
        lines.append(
            "photo contents: not verified (--quick)"
            if self.quick
            else f"photos whose content changed (SHA-256): {len(self.changed_files)}"
        )
        lines += [f"  {m}" for m in self.changed_files[:20]]
        lines += [
            f"photos no row refers to (left by an interrupted import; --repair deletes them): "
            f"{len(self.unreferenced_files)}",
            f"temporary files of interrupted writes: {len(self.leftover_files)}",
        ]
        return lines
