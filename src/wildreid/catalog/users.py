"""Accounts of the review app: users with a role, their passwords, API tokens and sessions.

- Roles, each including the one before: ``viewer`` reads; ``reviewer`` also uploads, answers,
  confirms, edits and undoes their own changes; ``admin`` also merges individuals, undoes other
  users' changes and manages users.
- A password is stored as an argon2id hash (argon2-cffi's defaults). Checking a name that does
  not exist costs one argon2 verification all the same, so the answer's timing does not tell a
  guesser which names exist.
- An API token (for scripts: the ``X-Wildreid-Token`` header) and a session (the sign-in cookie)
  are 32 random bytes; only their SHA-256 is stored, so a copy of the catalogue holds no secret
  that signs anybody in. A session ends after ``idle`` seconds without a request, or ``longest``
  seconds after sign-in, whichever comes first; removing a user ends their sessions.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wildreid.catalog.connection import CatalogError, Connection, now

ROLES = ("viewer", "reviewer", "admin")  # in order: each may do what the ones before may
MIN_PASSWORD_LENGTH = 10
MAX_NAME_LENGTH = 80
# last_seen is written at most this often (seconds): a page view is not a write each time.
TOUCH_EVERY = 60.0

HASHER = PasswordHasher()  # tests swap in cheaper parameters; a hash names its own parameters
_UNKNOWN_USER_HASH: dict[str, str] = {}  # per hasher parameters: what an unknown name is checked against


def role_allows(role: str | None, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise CatalogError(
            f"user name {name[:MAX_NAME_LENGTH]!r}: give 1 to {MAX_NAME_LENGTH} characters on one line "
            "(it is recorded with every change the user makes)."
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise CatalogError(f"role {role!r}: give one of {', '.join(ROLES)}.")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CatalogError(
            f"password: {len(password)} characters is too short; use at least {MIN_PASSWORD_LENGTH} "
            "(a few words are easier to remember than symbols)."
        )
    return password


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_token() -> str:
    return secrets.token_urlsafe(32)


def add_user(
    catalog: Connection, name: str, role: str, password: str, *, by: str = "", api_token: str | None = None
) -> None:
    """Create a user, with a personal API token for scripts if ``api_token`` (``new_api_token()``;
    only its hash is stored)."""
    name, role = check_name(name), check_role(role)
    hashed = HASHER.hash(check_password(password))
    token = api_token
    try:
        with catalog.transaction():
            catalog.db.execute(
                "INSERT INTO users (name, role, password, api_token, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
                (name, role, hashed, _digest(token) if token else None, now(), by),
            )
    except sqlite3.IntegrityError:
        raise CatalogError(f"user {name!r} exists already; remove them first to start again.") from None


def users(catalog: Connection) -> list[dict]:
    return catalog._all(
        "SELECT name, role, created_at, created_by, api_token IS NOT NULL AS has_api_token, "
        "(SELECT count(*) FROM sessions WHERE user_name = users.name) AS sessions FROM users ORDER BY name"
    )


def user_count(catalog: Connection) -> int:
    return int(catalog.db.execute("SELECT count(*) FROM users").fetchone()[0])


def remove_user(catalog: Connection, name: str) -> None:
    """Remove a user and end their sessions; the last admin stays (else nobody could manage users)."""
    with catalog.transaction():
        found = catalog._one("SELECT role FROM users WHERE name = ?", name)
        if found is None:
            known = ", ".join(u["name"] for u in users(catalog)) or "none"
            raise CatalogError(f"user {name!r}: no such user (users: {known}).")
        admins = catalog.db.execute("SELECT count(*) FROM users WHERE role = 'admin'").fetchone()[0]
        if found["role"] == "admin" and admins == 1:
            raise CatalogError(f"{name!r} is the last admin; add another admin before removing them.")
        catalog.db.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
        catalog.db.execute("DELETE FROM users WHERE name = ?", (name,))


def check_credentials(catalog: Connection, name: str, password: str) -> dict | None:
    """The user (name, role) if the password is theirs, else None. Costs one argon2 verification
    whether or not the name exists."""
    found = catalog._one("SELECT name, role, password FROM users WHERE name = ?", (name or "").strip())
    stored = found["password"] if found else _unknown_user_hash()
    try:
        HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if found is None:  # pragma: no cover - nobody knows the dummy hash's password
        return None
    return {"name": found["name"], "role": found["role"]}


def _unknown_user_hash() -> str:
    key = f"{HASHER.time_cost}/{HASHER.memory_cost}/{HASHER.parallelism}"
    if key not in _UNKNOWN_USER_HASH:
        _UNKNOWN_USER_HASH[key] = HASHER.hash(secrets.token_urlsafe(32))
    return _UNKNOWN_USER_HASH[key]


def token_user(catalog: Connection, token: str) -> dict | None:
    """The user whose API token this is, or None."""
    if not token:
        return None
    return catalog._one("SELECT name, role FROM users WHERE api_token = ?", _digest(token))


def start_session(catalog: Connection, name: str, at: float) -> str:
    """A new session for ``name``; returns the cookie value (stored only as its hash)."""
    session = secrets.token_urlsafe(32)
    with catalog.transaction():
        catalog.db.execute(
            "INSERT INTO sessions (id, user_name, started, last_seen) VALUES (?, ?, ?, ?)",
            (_digest(session), name, at, at),
        )
    return session


def session_user(catalog: Connection, session: str, at: float, *, idle: float, longest: float) -> dict | None:
    """The user signed in by ``session`` at time ``at``, or None (unknown, expired, user removed).
    An expired session is deleted; a live one's last request time is updated."""
    if not session:
        return None
    key = _digest(session)
    found = catalog._one(
        "SELECT users.name, users.role, sessions.started, sessions.last_seen FROM sessions "
        "JOIN users ON users.name = sessions.user_name WHERE sessions.id = ?",
        key,
    )
    if found is None:
        return None
    if at - found["last_seen"] > idle or at - found["started"] > longest:
        with catalog.transaction():
            catalog.db.execute("DELETE FROM sessions WHERE id = ?", (key,))
        return None
    if at - found["last_seen"] > TOUCH_EVERY:
        with catalog.transaction():
            catalog.db.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (at, key))
    return {"name": found["name"], "role": found["role"]}


def end_session(catalog: Connection, session: str) -> None:
    if session:
        with catalog.transaction():
            catalog.db.execute("DELETE FROM sessions WHERE id = ?", (_digest(session),))


def forget_expired_sessions(catalog: Connection, at: float, *, idle: float, longest: float) -> None:
    """Delete sessions nobody can use any more (called at sign-in, so the table stays small)."""
    with catalog.transaction():
        catalog.db.execute("DELETE FROM sessions WHERE last_seen < ? OR started < ?", (at - idle, at - longest))
