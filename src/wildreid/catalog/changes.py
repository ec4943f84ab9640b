"""Reviewers' changes beyond one photo's decision, each one transaction recorded in the
catalogue's history (who, when, the rows before: see journal.py), and undo of the last change.

- :func:`confirm_group`: every photo of a proposed group filed under one individual, a new one or
  a known one, in one action (each photo still gets its own decision, so exports and the
  individual's sighting history read it like any reviewer's decision);
- :func:`merge_individuals`: all photos and decisions of one individual move to another, which
  absorbs it;
- :func:`split_individual`: chosen photos of an individual move out to a new individual;
- :func:`answer_pair`: a reviewer's answer to a pair question ("same", "different", "can't tell")
  about two waiting photos, or a waiting photo and a known individual;
- :func:`split_group`: chosen photos moved out of a proposed group (kept apart from the rest by
  "different" answers);
- :func:`undo_last`: the latest change not undone, taken back exactly.
"""

from __future__ import annotations

import sqlite3

from wildreid.catalog.journal import Journal, undo_problems, undo_steps
from wildreid.catalog.store import AlreadyDecided, Catalog, CatalogError, _reviewer, now
from wildreid.decide.queue import ANSWERS, CANT_TELL

PENDING = ("ready", "skipped")  # identified and not filed yet: the photos grouping proposes groups of
MAX_SPLIT_PAIRS = 10_000  # "different" answers one split may record
ANSWER_WORDS = {"same": "same animal", "different": "different animals", "cant_tell": "can't tell"}


class AlreadyAnswered(AlreadyDecided):
    """A pair already answered the other way: the answer in force names who gave it and how to
    take it back (undo); answering over it would leave the grouping two contradicting constraints.
    ``decision``: the stored answer (a row of ``pair_answers``)."""


def confirm_group(
    catalog: Catalog,
    query_ids: list[int],
    *,
    reviewer: str,
    preset: str,
    individual_id: str | None = None,
    name: str = "",
    notes: str = "",
) -> dict:
    """File the photos of ``query_ids`` under one individual: ``individual_id`` (a known one of
    their dataset), or None: a new individual named ``name``. Returns the history entry, with
    ``individual_id`` added."""
    reviewer = _reviewer(reviewer)
    query_ids = list(dict.fromkeys(int(q) for q in query_ids))
    if not query_ids:
        raise CatalogError("confirm: no photo chosen; a group needs at least one photo.")
    with catalog.transaction():
        queries = _pending_queries(catalog, query_ids)
        dataset = queries[0]["dataset"]
        journal = Journal(catalog.db)
        if individual_id is None:
            individual_id = catalog._create_individual(journal, dataset, name=name, notes=notes)
            # the name the reviewer typed first: it is how they know the animal
            outcome, where = (
                "new",
                f"the new individual “{name}” ({individual_id})" if name else f"the new individual {individual_id}",
            )
        else:
            known = catalog.individual(individual_id)
            if known is None:
                raise CatalogError(f"individual '{individual_id}' does not exist; choose one of the candidates.")
            if known["dataset"] != dataset:
                raise CatalogError(
                    f"individual '{individual_id}' belongs to dataset '{known['dataset']}', the photos to "
                    f"'{dataset}'; choose an individual of '{dataset}'."
                )
            outcome, where = "match", f"“{known['name']}” ({individual_id})" if known["name"] else individual_id
        catalog._file_queries(journal, queries, outcome, individual_id, reviewer, preset)
        history_id = catalog.record_history(
            journal,
            "confirm_group",
            reviewer=reviewer,
            dataset=dataset,
            summary=f"{_photos(len(queries))} ({_numbers(query_ids)}) filed under {where}",
        )
    return {**_recorded(catalog, history_id), "individual_id": individual_id}


def merge_individuals(catalog: Catalog, keep: str, absorb: str, *, reviewer: str) -> dict:
    """Move every photo and decision of ``absorb`` to ``keep`` and remove ``absorb`` (its row
    stays in the history, and undo brings it back with its own photos)."""
    reviewer = _reviewer(reviewer)
    keep, absorb = (keep or "").strip(), (absorb or "").strip()
    with catalog.transaction():
        kept, absorbed = _merged_individual(catalog, keep), _merged_individual(catalog, absorb)
        if keep == absorb:
            raise CatalogError(f"merge: '{keep}' twice; choose two different individuals.")
        if kept["dataset"] != absorbed["dataset"]:
            raise CatalogError(
                f"merge: '{absorb}' belongs to dataset '{absorbed['dataset']}' and '{keep}' to "
                f"'{kept['dataset']}'; only individuals of one dataset can be one animal."
            )
        journal = Journal(catalog.db)
        photos = catalog.images(absorb)
        for image in photos:
            journal.update("images", image["id"], {"individual_id": keep})
        for decision in catalog.decisions(individual_id=absorb):
            journal.update("decisions", decision["id"], {"individual_id": keep})
        journal.delete("individuals", absorb)
        named = f" (“{absorbed['name']}”)" if absorbed["name"] else ""
        history_id = catalog.record_history(
            journal,
            "merge",
            reviewer=reviewer,
            dataset=kept["dataset"],
            summary=f"{absorb}{named} merged into {keep}: {_photos(len(photos))} moved",
        )
    return _recorded(catalog, history_id)


def split_individual(
    catalog: Catalog, individual_id: str, image_ids: list[int], *, reviewer: str, name: str = ""
) -> dict:
    """Move the photos ``image_ids`` of ``individual_id`` (some, not all) to a new individual,
    with their decisions. Returns the history entry, with the new ``individual_id``."""
    reviewer = _reviewer(reviewer)
    chosen = list(dict.fromkeys(int(i) for i in image_ids))
    with catalog.transaction():
        individual = catalog.individual(individual_id)
        if individual is None:
            raise CatalogError(f"split: individual '{individual_id}' does not exist.")
        photos = {image["id"] for image in catalog.images(individual_id)}
        strangers = [i for i in chosen if i not in photos]
        if strangers:
            raise CatalogError(
                f"split: photo(s) {', '.join(map(str, strangers))} are not photos of '{individual_id}'; "
                "reload its page and choose again."
            )
        if not chosen or len(chosen) == len(photos):
            raise CatalogError(
                f"split: choose some of the {len(photos)} photos of '{individual_id}' to move out, not "
                f"{'none' if not chosen else 'all'} of them."
            )
        journal = Journal(catalog.db)
        new_id = catalog._create_individual(journal, individual["dataset"], name=name)
        for image_id in chosen:
            journal.update("images", image_id, {"individual_id": new_id})
        for decision in catalog.decisions(individual_id=individual_id):
            if decision["image_id"] in chosen:
                journal.update("decisions", decision["id"], {"individual_id": new_id})
        history_id = catalog.record_history(
            journal,
            "split",
            reviewer=reviewer,
            dataset=individual["dataset"],
            summary=f"{_photos(len(chosen))} of {individual_id} moved to the new individual {new_id}",
        )
    return {**_recorded(catalog, history_id), "individual_id": new_id}


def answer_pair(
    catalog: Catalog,
    *,
    dataset: str,
    query_id: int,
    answer: str,
    reviewer: str,
    other_query_id: int | None = None,
    individual_id: str | None = None,
    probability: float | None = None,
    settled: int | None = None,
) -> dict:
    """Store a reviewer's answer about a waiting photo and another waiting photo
    (``other_query_id``) or a known individual (``individual_id``). ``probability``: the machine's
    P(same) for the pair; ``settled``: photos whose grouping the answer decided (the review
    counters, see ``PendingGrouping.answer``).
    Returns the history entry, with ``repeated``: False.

    A pair is answered once (two reviewers on the same question, or a page left open, would
    otherwise store it twice; either photo may be on the left). The same answer again, or "can't
    tell" about a pair answered "same" or "different", stores nothing: the history entry of the
    answer in force is returned, with ``repeated``: True. The opposite answer is refused
    (:class:`AlreadyAnswered`, naming who answered and when): the first answer is taken back
    with undo before another is given, so the catalogue never holds both. A pair answered only
    "can't tell" may still be answered "same" or "different": that is no contradiction."""
    reviewer = _reviewer(reviewer)
    if answer not in ANSWERS:
        raise CatalogError(f"answer: '{answer}' is not one of {', '.join(ANSWERS)}.")
    if (other_query_id is None) == (individual_id is None):
        raise CatalogError("answer: compare the photo with one other photo or one known individual.")
    with catalog.transaction():
        ids = [query_id] if other_query_id is None else [query_id, other_query_id]
        queries = _pending_queries(catalog, ids, dataset=dataset)
        if individual_id is not None and catalog.individual(individual_id) is None:
            raise CatalogError(f"individual '{individual_id}' does not exist any more; reload the question.")
        if other_query_id is not None and int(other_query_id) == int(query_id):
            raise CatalogError("answer: a photo compared with itself.")
        other = f"query #{other_query_id}" if other_query_id is not None else individual_id
        earlier = _answer_in_force(catalog, dataset, int(query_id), other_query_id, individual_id)
        if earlier is not None and answer in (earlier["answer"], CANT_TELL):
            return {**_recorded(catalog, earlier["history_id"]), "repeated": True}
        if earlier is not None and earlier["answer"] != CANT_TELL:
            entry = _recorded(catalog, earlier["history_id"])
            raise AlreadyAnswered(
                f'query #{queries[0]["id"]} and {other}: already answered "{ANSWER_WORDS[earlier["answer"]]}" by '
                f"{earlier['reviewer']} at {earlier['answered_at']} (change #{entry['id']}: {entry['summary']}). "
                "Nothing was stored. To answer otherwise, undo that change first on the History page "
                "(undo takes back the latest change, so changes made after it are undone before it).",
                earlier,
            )
        journal = Journal(catalog.db)
        # The entry first: the answer names it (undo deletes the answers of the entry it undoes).
        history_id = catalog.record_history(
            journal,
            "answer",
            reviewer=reviewer,
            dataset=dataset,
            summary=f"query #{queries[0]['id']} and {other}: {ANSWER_WORDS[answer]}",
        )
        journal.insert(
            "pair_answers",
            {
                "history_id": history_id,
                "dataset": dataset,
                "query_id": int(query_id),
                "other_query_id": None if other_query_id is None else int(other_query_id),
                "individual_id": individual_id,
                "answer": answer,
                "source": "question",
                "probability": probability,
                "settled": settled,
                "reviewer": reviewer,
                "answered_at": now(),
            },
        )
        catalog.update_history_change(history_id, journal)
    return {**_recorded(catalog, history_id), "repeated": False}


def _answer_in_force(
    catalog: Catalog, dataset: str, query_id: int, other_query_id: int | None, individual_id: str | None
) -> dict | None:
    """The stored answer about a pair (either way round; a split's "different" counts), or None:
    the first "same" or "different" one, else the first "can't tell"."""
    if other_query_id is not None:
        rows = catalog._all(
            "SELECT * FROM pair_answers WHERE dataset = ? AND ((query_id = ? AND other_query_id = ?) "
            "OR (query_id = ? AND other_query_id = ?)) ORDER BY id",
            dataset,
            query_id,
            int(other_query_id),
            int(other_query_id),
            query_id,
        )
    else:
        rows = catalog._all(
            "SELECT * FROM pair_answers WHERE dataset = ? AND query_id = ? AND individual_id = ? ORDER BY id",
            dataset,
            query_id,
            individual_id,
        )
    decisive = [row for row in rows if row["answer"] != CANT_TELL]
    return (decisive or rows or [None])[0]


def split_group(catalog: Catalog, *, dataset: str, moved: list[int], kept: list[int], reviewer: str) -> dict:
    """Move the photos ``moved`` out of a proposed group whose other photos are ``kept``: every
    moved photo is answered "different" from every kept one, so no regrouping joins them again.
    Returns the history entry."""
    reviewer = _reviewer(reviewer)
    moved = list(dict.fromkeys(int(q) for q in moved))
    kept = [q for q in dict.fromkeys(int(q) for q in kept) if q not in moved]
    if not moved or not kept:
        raise CatalogError("split: choose some of the group's photos to move out, not none or all of them.")
    if len(moved) * len(kept) > MAX_SPLIT_PAIRS:
        raise CatalogError(
            f"split: {len(moved)} x {len(kept)} photos is too many pairs to record; split in smaller steps."
        )
    with catalog.transaction():
        _pending_queries(catalog, moved + kept, dataset=dataset)
        journal = Journal(catalog.db)
        history_id = catalog.record_history(
            journal,
            "split_group",
            reviewer=reviewer,
            dataset=dataset,
            summary=f"{_photos(len(moved))} ({_numbers(moved)}) moved out of a group of {len(moved) + len(kept)}",
        )
        answered_at = now()
        for left in moved:
            for right in kept:
                journal.insert(
                    "pair_answers",
                    {
                        "history_id": history_id,
                        "dataset": dataset,
                        "query_id": left,
                        "other_query_id": right,
                        "individual_id": None,
                        "answer": "different",
                        "source": "split",
                        "probability": None,
                        "settled": None,
                        "reviewer": reviewer,
                        "answered_at": answered_at,
                    },
                )
        catalog.update_history_change(history_id, journal)
    return _recorded(catalog, history_id)


def pair_answers(catalog: Catalog, dataset: str) -> list[dict]:
    """The answers and splits about ``dataset``'s photos still in force (undone ones are gone),
    oldest first."""
    return catalog._all("SELECT * FROM pair_answers WHERE dataset = ? ORDER BY id", dataset)


def answers_in_force(catalog: Catalog) -> int:
    """How many answers reviewers gave that are in force, in every dataset: pair answers and
    splits, and photos filed under an individual (what a gallery learned from is compared with
    it; undone ones are gone)."""
    row = catalog._one(
        "SELECT (SELECT count(*) FROM pair_answers) "
        "+ (SELECT count(*) FROM decisions WHERE outcome IN ('match', 'new')) AS answers"
    )
    assert row is not None  # an aggregate query has one row
    return int(row["answers"])


def answered_datasets(catalog: Catalog) -> list[str]:
    return [row["dataset"] for row in catalog._all("SELECT DISTINCT dataset FROM pair_answers ORDER BY dataset")]


def answer_counts(catalog: Catalog, dataset: str) -> dict:
    """How many pair questions were answered, and how many photos an answer settled on average
    (None before the first answer)."""
    row = catalog._one(
        "SELECT count(*) AS answers, avg(settled) AS per_answer FROM pair_answers "
        "WHERE dataset = ? AND source = 'question'",
        dataset,
    )
    assert row is not None  # an aggregate query has one row, even over no answers
    return {"answers": int(row["answers"]), "settled_per_answer": row["per_answer"]}


def entry_details(entry: dict | None) -> dict | None:
    """A history entry with, where its steps say, the ``individual_id`` it filed photos under or
    created, and the photos an answer ``settled``."""
    if entry is None:
        return None
    individual_id = settled = None
    for kind, table, key, *rest in entry["change"]["steps"]:
        if kind == "insert" and table == "individuals":
            individual_id = key
        elif kind == "insert" and table == "decisions" and individual_id is None:
            individual_id = rest[0]["individual_id"]
        elif kind == "insert" and table == "pair_answers" and rest[0]["source"] == "question":
            settled = rest[0]["settled"]
    return {**entry, "individual_id": individual_id, "settled": settled}


def merged_into(catalog: Catalog, individual_id: str) -> dict | None:
    """The merge (not undone) that removed ``individual_id``, with ``into``: the individual
    that absorbed it; None if it was not merged away."""
    for entry in catalog._all("SELECT id FROM history WHERE action = 'merge' AND undone_at IS NULL ORDER BY id DESC"):
        found = _recorded(catalog, entry["id"])
        steps = found["change"]["steps"]
        if any(s[0] == "delete" and s[1] == "individuals" and s[2] == individual_id for s in steps):
            into = next((s[4]["individual_id"] for s in steps if s[0] == "update"), None)
            return {**found, "into": into}
    return None


def undo_last(catalog: Catalog, *, reviewer: str, expected: int | None = None) -> dict:
    """Take back the latest change not undone yet, exactly as it was recorded. ``expected``: the
    history id the reviewer saw as the last change; another change since is refused, so nobody
    undoes a change they have not seen. Returns the undone history entry."""
    reviewer = _reviewer(reviewer)
    with catalog.transaction():
        last = catalog.last_change()
        if last is None:
            raise CatalogError("Nothing to undo: every recorded change has been undone already.")
        if expected is not None and last["id"] != expected:
            raise CatalogError(
                f"The last change is now #{last['id']} by {last['reviewer']} at {last['made_at']} "
                f"({last['summary']}), not the one you saw; look at it before undoing."
            )
        steps = last["change"]["steps"]
        problems = undo_problems(catalog.db, steps)
        if problems:
            raise CatalogError(
                f"Cannot undo #{last['id']} ({last['summary']}): {'; '.join(problems[:5])}"
                f"{' ...' if len(problems) > 5 else ''}. Something outside the review history changed "
                "these rows (an import, a hand edit); correct them by hand instead."
            )
        try:
            undo_steps(catalog.db, steps)
        except sqlite3.IntegrityError as error:
            raise CatalogError(
                f"Cannot undo #{last['id']} ({last['summary']}): rows added since refer to what it would "
                f"remove ({error}), e.g. photos imported into the individual it created. Nothing was changed."
            ) from None
        catalog.db.execute(
            "UPDATE history SET undone_at = ?, undone_by = ? WHERE id = ?", (now(), reviewer, last["id"])
        )
    return _recorded(catalog, last["id"])


def _recorded(catalog: Catalog, history_id: int) -> dict:
    """A history entry that exists: recorded by this change, or listed a moment ago (entries are
    never deleted)."""
    entry = catalog.history_entry(history_id)
    assert entry is not None, f"history entry #{history_id} is missing"
    return entry


def _merged_individual(catalog: Catalog, individual_id: str) -> dict:
    individual = catalog.individual(individual_id)
    if individual is None:
        raise CatalogError(f"merge: individual '{individual_id}' does not exist; give the id of an existing one.")
    return individual


def _pending_queries(catalog: Catalog, query_ids: list[int], *, dataset: str | None = None) -> list[dict]:
    """The queries, all waiting (identified, not filed) and of one dataset; else CatalogError."""
    queries = []
    for query_id in query_ids:
        query = catalog.query(int(query_id))
        if query is None:
            raise CatalogError(f"query #{query_id} does not exist.")
        catalog._check_decidable(query)
        if query["status"] not in PENDING:
            raise CatalogError(f"query #{query_id} is {query['status']}, not waiting for a decision.")
        queries.append(query)
    datasets = sorted({query["dataset"] for query in queries} | ({dataset} if dataset else set()))
    if len(datasets) > 1:
        raise CatalogError(f"the photos belong to several datasets ({', '.join(datasets)}); one group is one dataset.")
    return queries


def _photos(count: int) -> str:
    return f"{count} photo{'s' if count != 1 else ''}"


def _numbers(query_ids: list[int]) -> str:
    shown = ", ".join(f"#{q}" for q in query_ids[:8])
    return shown + (f" and {len(query_ids) - 8} more" if len(query_ids) > 8 else "")
