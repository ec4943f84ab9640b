"""The catalogue's SQLite schema, as numbered migrations.

``PRAGMA user_version`` holds the schema version of a file. Opening a catalogue applies, in one
transaction, every migration above that version, so an old catalogue is upgraded in place and a
crash during the upgrade leaves it at the old version. Migrations are append-only: never edit one
that has shipped, add the next.
"""

from __future__ import annotations

import functools
import sqlite3

# Length limits, in characters, checked before anything is written (store.py's
# ``name_problems``). An individual id is at most 200 characters: the CHECK of migration 1, which
# no later version may change. A dataset name has no CHECK, but the ids of new individuals are
# ``<dataset>_new<NNNN>`` and must fit under that limit, so a dataset name is kept to 100.
MAX_INDIVIDUAL_ID_LENGTH = 200
MAX_DATASET_LENGTH = 100

# Version 1: the catalogue proper (individuals, their photos, cached descriptors).
_V1 = """
CREATE TABLE individuals (
    id          TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    name        TEXT NOT NULL DEFAULT '',
    species     TEXT NOT NULL DEFAULT '',
    dataset     TEXT NOT NULL CHECK (length(dataset) >= 1),
    notes       TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);
CREATE INDEX individuals_name ON individuals (name);

CREATE TABLE images (
    id              INTEGER PRIMARY KEY,
    sha256          TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    stored_path     TEXT NOT NULL,       -- relative to the photo store, e.g. ab/abcd....jpg
    individual_id   TEXT NOT NULL REFERENCES individuals (id),
    sighting_date   TEXT,
    location        TEXT,
    orientation     TEXT,
    viewpoint       TEXT,
    source          TEXT NOT NULL DEFAULT '',   -- where it was imported from, or 'review'
    source_image_id TEXT,
    added_at        TEXT NOT NULL
);
CREATE INDEX images_individual ON images (individual_id);

-- Global descriptors, keyed like the on-disk embedding cache: content hash + backbone cache key.
CREATE TABLE descriptors (
    sha256       TEXT NOT NULL REFERENCES images (sha256) ON DELETE CASCADE,
    backbone_key TEXT NOT NULL,
    dim          INTEGER NOT NULL,
    vector       BLOB NOT NULL,          -- float32, little-endian
    PRIMARY KEY (sha256, backbone_key)
);
"""

# Version 2: the review workflow (uploaded query photos and the decisions taken on them).
_V2 = """
CREATE TABLE queries (
    id            INTEGER PRIMARY KEY,
    sha256        TEXT NOT NULL CHECK (length(sha256) = 64),
    stored_path   TEXT NOT NULL,
    original_name TEXT NOT NULL DEFAULT '',   -- shown to people only, never used as a path
    dataset       TEXT NOT NULL,
    sighting_date TEXT,
    location      TEXT,
    uploaded_by   TEXT NOT NULL DEFAULT '',
    uploaded_at   TEXT NOT NULL,
    job_id        TEXT,
    status        TEXT NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'ready', 'failed', 'matched', 'new', 'skipped')),
    result        TEXT,                       -- JSON: the ranked candidates
    error         TEXT
);
CREATE INDEX queries_status ON queries (status);
CREATE INDEX queries_job ON queries (job_id);

CREATE TABLE decisions (
    id            INTEGER PRIMARY KEY,
    query_id      INTEGER NOT NULL REFERENCES queries (id),
    outcome       TEXT NOT NULL CHECK (outcome IN ('match', 'new', 'skip')),
    individual_id TEXT REFERENCES individuals (id),
    image_id      INTEGER REFERENCES images (id),
    reviewer      TEXT NOT NULL,
    decided_at    TEXT NOT NULL,
    score         REAL,
    preset        TEXT NOT NULL,
    CHECK ((outcome = 'skip') = (individual_id IS NULL))
);
CREATE INDEX decisions_query ON decisions (query_id);
CREATE INDEX decisions_individual ON decisions (individual_id);
"""

# Version 3: when and by which program a query was identified, so that an export can say who
# classified a sighting the reviewers have not decided yet (Camtrap DP's classifiedBy and
# classificationTimestamp). Queries identified before this version keep NULL: not known.
_V3 = """
ALTER TABLE queries ADD COLUMN identified_at TEXT;
ALTER TABLE queries ADD COLUMN identified_by TEXT
"""

# Version 4: review that learns. ``history`` records every change a reviewer makes (a decision,
# a group confirmed, a merge, a split, an answer to a pair question, an edit), with who, when and
# the rows it inserted, updated (with their values before) and deleted (whole): enough to undo it
# exactly. An undone change stays in the history, marked undone. ``pair_answers`` are the
# reviewers' answers about two uploaded photos (or a photo and a known individual), re-applied as
# constraints whenever the waiting photos are grouped again. ``image_changes`` counts updates and
# deletions of photos (merges, splits, undos), so that a gallery kept in memory can tell that
# photos changed even when their number and newest id did not.
_V4 = """
CREATE TABLE history (
    id         INTEGER PRIMARY KEY,
    action     TEXT NOT NULL,
    dataset    TEXT,
    reviewer   TEXT NOT NULL,
    made_at    TEXT NOT NULL,
    summary    TEXT NOT NULL,              -- one line, for people
    change     TEXT NOT NULL,              -- JSON: the row changes, what undo replays backwards
    undone_at  TEXT,
    undone_by  TEXT
);
CREATE INDEX history_open ON history (undone_at, id);

CREATE TABLE pair_answers (
    id             INTEGER PRIMARY KEY,
    history_id     INTEGER NOT NULL REFERENCES history (id),
    dataset        TEXT NOT NULL,
    query_id       INTEGER NOT NULL REFERENCES queries (id),
    other_query_id INTEGER REFERENCES queries (id),
    individual_id  TEXT,                    -- no foreign key: an answer stays as said if the individual is merged away
    answer         TEXT NOT NULL CHECK (answer IN ('same', 'different', 'cant_tell')),
    source         TEXT NOT NULL DEFAULT 'question' CHECK (source IN ('question', 'split')),
    probability    REAL,                    -- the machine's P(same) for the pair when it was asked
    settled        INTEGER,                 -- photos of the groups the answer decided (review counters)
    reviewer       TEXT NOT NULL,
    answered_at    TEXT NOT NULL,
    CHECK ((other_query_id IS NULL) != (individual_id IS NULL))
);
CREATE INDEX pair_answers_dataset ON pair_answers (dataset);

CREATE TABLE image_changes (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    count  INTEGER NOT NULL
);
INSERT INTO image_changes (id, count) VALUES (1, 0);
CREATE TRIGGER images_updated AFTER UPDATE ON images BEGIN UPDATE image_changes SET count = count + 1; END;
CREATE TRIGGER images_deleted AFTER DELETE ON images BEGIN UPDATE image_changes SET count = count + 1; END
"""

# Time and place (appended after version 4): a photo's and an uploaded query's own position
# (from its EXIF GPS, or typed), and named sites with coordinates. ``sighting_date`` keeps the
# capture time (the EXIF DateTimeOriginal, or what a person typed). A photo at a named site
# without a position of its own is placed at its site (store.py's ``images``).
_PLACES = """
CREATE TABLE sites (
    name        TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    latitude    REAL NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude   REAL NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    uncertainty INTEGER CHECK (uncertainty IS NULL OR uncertainty >= 1),   -- metres
    notes       TEXT NOT NULL DEFAULT ''
);
ALTER TABLE images ADD COLUMN latitude REAL;
ALTER TABLE images ADD COLUMN longitude REAL;
ALTER TABLE images ADD COLUMN altitude REAL;
ALTER TABLE queries ADD COLUMN latitude REAL;
ALTER TABLE queries ADD COLUMN longitude REAL;
ALTER TABLE queries ADD COLUMN altitude REAL
"""


# Accounts (catalog/users.py): who may sign in to the review app, with which role, and the
# sessions signed in. A password is kept as an argon2id hash; a personal API token and a session
# cookie (both 32 random bytes) as their SHA-256, so the file never holds a usable secret.
# History keeps the user's name as text: removing a user leaves their changes named.
_USERS = """
CREATE TABLE users (
    name        TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 80),
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'reviewer', 'admin')),
    password    TEXT NOT NULL,
    api_token   TEXT UNIQUE,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    user_name   TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    started     REAL NOT NULL,
    last_seen   REAL NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name)
"""

MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4, _PLACES, _USERS]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(ValueError):
    """The file is not a catalogue this version can use; the message says what to do."""


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to ``target``; return the version found before. The connection must be
    in autocommit mode (isolation_level=None): the transaction is managed here."""
    if schema_version(connection) == target == SCHEMA_VERSION:
        return target  # the usual case, without taking the write lock on every open
    # IMMEDIATE takes the write lock before reading the version again, so two processes opening
    # a new catalogue at once cannot both run migration 1.
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(connection)
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"this catalogue has schema version {found}, newer than this wildreid understands "
                f"({SCHEMA_VERSION}); upgrade wildreid to open it."
            )
        if found == 0 and _has_foreign_tables(connection):
            if _has_catalogue_tables(connection):
                raise SchemaError(
                    "this catalogue's schema version (PRAGMA user_version) is 0 though it holds a "
                    "catalogue's tables: its header was damaged or edited. Restore it from a backup."
                )
            raise SchemaError(
                "this SQLite file is not a wildreid catalogue (it has other tables); "
                "give a new path or an existing catalogue."
            )
        for version in range(found + 1, target + 1):
            for statement in _statements(MIGRATIONS[version - 1]):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version}")
        connection.execute("COMMIT")
        return found
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction first; run the statements one by one instead.
    # A trigger's body holds semicolons of its own: pieces are joined until SQLite says the
    # statement is complete.
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip().removesuffix(";").strip())
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending.strip().removesuffix(";").strip())
    return statements


def _has_catalogue_tables(connection: sqlite3.Connection) -> bool:
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {"individuals", "images"} <= names


def _has_foreign_tables(connection: sqlite3.Connection) -> bool:
    row = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    return row[0] > 0


@functools.cache
def expected_schema() -> dict[tuple[str, str], str | None]:
    """(type, name) -> SQL of every table, index and trigger a current catalogue has, as the
    migrations make them (in memory): what `catalog check` compares a file's schema with. An old
    catalogue upgraded in place gets the same text, since migrations are never edited."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(connection)
        return {
            (row[0], row[1]): row[2]
            for row in connection.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        }
    finally:
        connection.close()
