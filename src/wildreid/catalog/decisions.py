"""Photos uploaded for review (queries), their identification results, and the reviewers'
decisions that file them under an individual.
"""

from __future__ import annotations

import json

from wildreid import __version__
from wildreid.catalog.connection import CatalogError, Connection, _position, _reviewer, _text, now
from wildreid.catalog.journal import Journal
from wildreid.data.images import read_photo_place
from wildreid.data.places import with_typed

DECIDED = {"matched", "new"}  # final states of a query
OUTCOME_STATUS = {"match": "matched", "new": "new", "skip": "skipped"}


class AlreadyDecided(CatalogError):
    """Someone else decided this query first; ``decision`` is what they decided."""

    def __init__(self, message: str, decision: dict | None):
        super().__init__(message)
        self.decision = decision


class Decisions(Connection):
    """The review's part of a catalogue: queries and decisions. A part of store.py's Catalog, whose
    individuals, photos and history these methods use."""

    def add_query(
        self,
        data: bytes,
        extension: str,
        *,
        dataset: str,
        original_name: str = "",
        sighting_date=None,
        location=None,
        latitude=None,
        longitude=None,
        altitude=None,
        uploaded_by: str = "",
        job_id=None,
    ) -> dict:
        if dataset not in self.datasets():
            raise CatalogError(
                f"dataset '{dataset}': the catalogue has no individuals in it; "
                f"choose one of {', '.join(self.datasets()) or '(none: import some first)'}."
            )
        # When and where from the photo's EXIF, unless given (typed values win over the camera's).
        place = with_typed(read_photo_place(data), date=sighting_date, latitude=latitude, longitude=longitude)
        sighting_date, latitude, longitude, altitude = (
            place.capture_time,
            place.latitude,
            place.longitude,
            altitude if altitude is not None else place.altitude,
        )
        sha256, stored_path = self.photos.put(data, extension)
        with self.transaction():
            cursor = self.db.execute(
                "INSERT INTO queries (sha256, stored_path, original_name, dataset, sighting_date, "
                "location, uploaded_by, uploaded_at, job_id, latitude, longitude, altitude) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    *_position(latitude, longitude, altitude),
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
                            "latitude": query["latitude"],
                            "longitude": query["longitude"],
                            "altitude": query["altitude"],
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


def _candidate_score(result: dict | None, individual_id: str | None) -> float | None:
    """The score the chosen individual had among the candidates (the best score for 'new' and
    'skip', so a decision records how sure the machine was)."""
    if not result or not result.get("candidates"):
        return None
    for candidate in result["candidates"]:
        if candidate["individual_id"] == individual_id:
            return candidate["score"]
    return result["candidates"][0]["score"]
