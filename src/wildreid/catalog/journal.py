"""The row changes of one catalogue change, recorded as they are made, so that it can be undone
exactly.

A reviewer's change (a decision, a group confirmed, a merge...) is a handful of row inserts,
updates and deletes in one transaction. A :class:`Journal` carries them out and keeps, for each,
what undo needs: the row inserted (undo deletes it), the values an update replaced (undo puts
them back), the whole row deleted (undo inserts it again, with its id). Undo replays the steps
backwards, so foreign keys hold at every step (an individual is put back before its photos
return to it, a photo is deleted after the decision naming it).

Before touching anything, undo checks that every row is still as the change left it: a row
changed since by something the history did not record (an import, a hand edit) is reported, and
nothing is undone.
"""

from __future__ import annotations

import re
import sqlite3

# The only tables a reviewer's change touches; table and column names in SQL below come from
# this code or were checked against these (the change is stored as JSON in the catalogue).
TABLES = ("individuals", "images", "decisions", "queries", "pair_answers")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class Journal:
    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.steps: list[list] = []

    def insert(self, table: str, values: dict):
        """Insert a row; return its id (``values['id']`` or the new rowid)."""
        columns = _columns(table, values)
        cursor = self.db.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [values[c] for c in columns],
        )
        key = values.get("id", cursor.lastrowid)
        self.steps.append(["insert", table, key, _row(self.db, table, key)])
        return key

    def update(self, table: str, key, values: dict) -> None:
        """Set some columns of one row; nothing is recorded when nothing changes."""
        before = _row(self.db, table, key)
        if before is None:
            raise KeyError(f"{table} row {key!r} does not exist")
        changed = {column: value for column, value in values.items() if before[column] != value}
        if not changed:
            return
        columns = _columns(table, changed)
        self.db.execute(
            f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
            [changed[c] for c in columns] + [key],
        )
        self.steps.append(["update", table, key, {c: before[c] for c in columns}, changed])

    def delete(self, table: str, key) -> None:
        before = _row(self.db, table, key)
        if before is None:
            raise KeyError(f"{table} row {key!r} does not exist")
        _columns(table, before)
        self.db.execute(f"DELETE FROM {table} WHERE id = ?", (key,))
        self.steps.append(["delete", table, key, before])


def undo_problems(db: sqlite3.Connection, steps: list[list]) -> list[str]:
    """What stands in the way of undoing ``steps``: rows changed since (empty: undo can go)."""
    problems = []
    # Replayed backwards, as undo would: a row inserted and later updated by the same change is
    # compared with its final state first.
    state: dict[tuple[str, object], dict | None] = {}

    def current(table, key):
        if (table, key) not in state:
            state[(table, key)] = _row(db, table, key)
        return state[(table, key)]

    for step in reversed(steps):
        kind, table, key = step[0], step[1], step[2]
        if table not in TABLES:
            problems.append(f"unknown table {table!r} in the recorded change")
            continue
        row = current(table, key)
        if kind == "insert":
            if row != step[3]:
                problems.append(f"{_label(table, key)} was changed since" if row else f"{_label(table, key)} is gone")
            state[(table, key)] = None
        elif kind == "update":
            if row is None or any(row.get(column) != value for column, value in step[4].items()):
                problems.append(f"{_label(table, key)} was changed since")
            else:
                state[(table, key)] = {**row, **step[3]}
        elif kind == "delete":
            if row is not None:
                problems.append(f"{_label(table, key)} exists again")
            state[(table, key)] = step[3]
    return problems


def undo_steps(db: sqlite3.Connection, steps: list[list]) -> None:
    """Replay ``steps`` backwards (call inside the transaction, after :func:`undo_problems`)."""
    for step in reversed(steps):
        kind, table, key = step[0], step[1], step[2]
        if kind == "insert":
            db.execute(f"DELETE FROM {table} WHERE id = ?", (key,))
        elif kind == "update":
            columns = _columns(table, step[3])
            db.execute(
                f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                [step[3][c] for c in columns] + [key],
            )
        elif kind == "delete":
            columns = _columns(table, step[3])
            db.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [step[3][c] for c in columns],
            )


def _columns(table: str, values: dict) -> list[str]:
    if table not in TABLES:
        raise ValueError(f"table {table!r} is not one a reviewer's change may touch")
    columns = list(values)
    bad = [c for c in columns if not _NAME.fullmatch(c)]
    if bad:
        raise ValueError(f"column name(s) {bad} refused")
    return columns


def _row(db: sqlite3.Connection, table: str, key) -> dict | None:
    cursor = db.execute(f"SELECT * FROM {table} WHERE id = ?", (key,))
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row))


def _label(table: str, key) -> str:
    singular = {"individuals": "individual", "images": "photo", "decisions": "decision", "queries": "query"}
    return f"{singular.get(table, table)} {key}"
