"""What keeps the review app safe to put in front of a browser.

- Accounts (catalog/users.py): a request comes from a signed-in user (the session cookie set by
  /login, or a user's personal API token in the ``X-Wildreid-Token`` header) or is anonymous.
  ``SignInGate`` finds the user and checks the role a request needs before a single byte of its
  body is read: an anonymous 300 MB upload costs nothing. Viewers read; reviewers also change
  (upload, answer, confirm, edit, undo their own change); admins also merge individuals and undo
  other users' changes (``ADMIN_ROUTES``, ``require_undo_right``). Every recorded change names
  the signed-in user (``reviewer_of``).
- Anonymous visitors read nothing (a page or photo request is sent to /login) unless the app
  is started with ``--public-read``; they never change anything.
- The session cookie is HttpOnly and SameSite=Strict, and cross-origin POSTs are refused, so
  another web site cannot make a signed-in reviewer's browser post decisions. Sessions expire
  after an idle time and a longest lifetime (``WebConfig``); signing out ends the session on the
  server.
- Guessing is throttled (``Throttle``) per client address and per account: a password per user
  name (names that do not exist count the same, and cost the same argon2 time, so the answers
  tell no names), the API tokens together as one account. After a few failures each further try
  waits twice as long, up to a cap of minutes (429 with Retry-After). Forwarded client addresses
  are trusted only from the proxies named at start (``serve --forwarded-allow-ips``).
- Only the Host names configured are served (the bound address, localhost, ``--allowed-host``),
  so a DNS-rebinding page cannot talk to the app under its own name.
- Request bodies are limited by route before a byte is read (``BodyLimits``): only the upload
  takes a large multipart body; every other route a small url-encoded form.
- Uploads: the request body is capped while it streams in, each photo has a size limit, its type
  is read from its bytes (magic number, then a full decode) and never from its name or the
  browser's content type, and huge pixel counts are refused before decoding (decompression bombs).
- An uploaded file's name is only ever shown (escaped), never used as a path: stored photos are
  named by their content hash.
"""

from __future__ import annotations

import io
import math
import re
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import Form, HTTPException, Request
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from wildreid.catalog.connection import Connection
from wildreid.catalog.photos import sniff_image_type
from wildreid.catalog.store import Catalog
from wildreid.catalog.users import role_allows, session_user, token_user
from wildreid.data.images import ImageReadError, decode_image

SESSION_COOKIE = "wildreid_session"
TOKEN_HEADER = "x-wildreid-token"
ACCEPTED_TYPES = "JPEG, PNG, WebP, TIFF or BMP"


class UploadRejected(ValueError):
    """One uploaded file that is not accepted; the message names it and says why."""


# ---------------------------------------------------------------------------------------------
# who is asking


def current_user(request: Request) -> dict | None:
    """The signed-in user ({"name", "role"}) that ``SignInGate`` found, or None (anonymous)."""
    return request.scope.get("state", {}).get("user")


def is_signed_in(request: Request) -> bool:
    return current_user(request) is not None


def may(request: Request, role: str) -> bool:
    """Whether the signed-in user's role includes ``role``."""
    user = current_user(request)
    return user is not None and role_allows(user["role"], role)


def reviewer_of(request: Request) -> str:
    """The name every change is recorded under: the signed-in user's ('' when anonymous)."""
    user = current_user(request)
    return user["name"] if user else ""


def require_role(role: str):
    """A FastAPI dependency: the signed-in user must have ``role`` (``SignInGate`` checked it before
    the body was read; this says so again where the route is defined)."""

    def check(request: Request) -> None:
        check_same_origin(request)
        if not is_signed_in(request):
            raise HTTPException(401, SIGN_IN_MESSAGE)
        if not may(request, role):
            raise HTTPException(403, role_message(current_user(request), role))

    return check


require_reviewer = require_role("reviewer")
require_admin = require_role("admin")


def require_undo_right(request: Request, expected: Annotated[int, Form()]) -> None:
    """Undo takes back the latest change: a reviewer may take back their own, an admin anyone's.
    The change checked is the one the form names (``expected``), which undo takes back only if it
    is still the latest: so a change made by someone else in between is never undone instead."""
    require_reviewer(request)
    user = current_user(request)
    assert user is not None
    if role_allows(user["role"], "admin"):
        return
    with Catalog(request.app.state.config.catalog, create=False) as catalog:
        seen = catalog.history_entry(expected)
    if seen is not None and seen["reviewer"] != user["name"]:
        raise HTTPException(
            403,
            f"Change #{seen['id']} ({seen['summary']}) was made by {seen['reviewer']}: a reviewer undoes "
            "only their own changes; ask an admin to undo it.",
        )


SIGN_IN_MESSAGE = (
    "This needs a signed-in user: sign in at /login with your user name and password (scripts send a "
    "user's API token as X-Wildreid-Token). An admin adds users with `wildreid users add`."
)
CROSS_SITE_MESSAGE = "Cross-site request refused: post from the review app's own pages."
BAD_TOKEN_MESSAGE = (
    "That API token is not one of this catalogue's users': sign in at /login instead, or ask an admin for a "
    "new token (`wildreid users add NAME --api-token`)."
)


def role_message(user: dict | None, needed: str) -> str:
    name, role = (user or {}).get("name", "?"), (user or {}).get("role", "?")
    can = {"viewer": "may only read", "reviewer": "may read and review, not merge or manage users"}.get(role, "")
    return f"{name} is a {role} and {can}; this needs the {needed} role (an admin can give it)."


def check_same_origin(request: Request) -> None:
    """Refuse a cross-site form post (browsers send Origin on POST)."""
    if _cross_site(request.headers.get("origin"), request.headers.get("host", "")):
        raise HTTPException(403, CROSS_SITE_MESSAGE)


def _cross_site(origin: str | None, host: str) -> bool:
    # Hosts only: behind a TLS-terminating proxy the scheme the app sees differs from the browser's.
    return bool(origin) and urlsplit(origin).netloc != host


# ---------------------------------------------------------------------------------------------
# before the body: the sign-in gate and the guessing throttle


# The account of the API tokens: a token names no user before it is checked, so all tokens are
# guessed as one account.
TOKEN_ACCOUNT = "api token"


class Throttle:
    """Back-off for wrong passwords and tokens, per client address and per account (a user name,
    known or not, or ``TOKEN_ACCOUNT``).

    An address gets ``free`` failures, then each further one locks it out twice as long as the
    last (1 s, 2 s, 4 s...), never longer than ``longest`` seconds: guessing is slowed to one
    try per few minutes, but the owner who mistyped is never locked out for more than that. The
    account counts the failures of all addresses together (a guesser with many addresses, or
    behind a trusted proxy), with more free failures and a shorter cap (``account_free``,
    ``account_longest``), so others' guessing delays the owner's sign-in by a minute at most.
    A record is forgotten after ``forget`` seconds without a failure; a success clears the
    account's, not the address's: with many users, a guesser who has an account of their own
    would otherwise reset their address's lock by signing in as themselves. While locked out, a
    try is answered 429 without the password being checked (else the answer would tell a guesser
    which one is right), so even the right one waits. ``clock`` is injectable for tests."""

    def __init__(
        self,
        free: int = 5,
        first: float = 1.0,
        longest: float = 300.0,
        account_free: int = 20,
        account_longest: float = 60.0,
        forget: float = 3600.0,
        clock=time.monotonic,
    ):
        self.free, self.first, self.longest = free, first, longest
        self.account_free, self.account_longest, self.forget = account_free, account_longest, forget
        self.clock = clock
        # ("address", client) or ("account", name) -> (failures, locked until, last failure)
        self.failures: dict[tuple[str, str], tuple[int, float, float]] = {}
        self.lock = threading.Lock()

    def retry_after(self, client: str, account: str | None = None) -> tuple[int, str]:
        """Seconds the client must still wait (0: it may try now), and which lock holds it
        ("address" or "account"). ``account`` None: the address alone (the account is not known
        before the sign-in form is read)."""
        now = self.clock()
        keys = [("address", client)] + ([("account", account)] if account is not None else [])
        with self.lock:
            waits = [(max(0, math.ceil(self.failures.get(key, (0, 0.0, 0.0))[1] - now)), key[0]) for key in keys]
        return max(waits)

    def failed(self, client: str, account: str) -> None:
        now = self.clock()
        with self.lock:
            if len(self.failures) > 10_000:  # bounded memory under a spray of addresses or names
                self.failures = {k: f for k, f in self.failures.items() if f[1] > now}
            for key, free, longest in (
                (("address", client), self.free, self.longest),
                (("account", account), self.account_free, self.account_longest),
            ):
                count, _, last = self.failures.get(key, (0, 0.0, now))
                count = 1 if now - last > self.forget else count + 1
                delay = 0.0 if count <= free else min(longest, self.first * 2 ** min(count - free - 1, 64))
                self.failures[key] = (count, now + delay, now)

    def succeeded(self, client: str, account: str) -> None:
        # ``client`` is kept for symmetry with ``failed``: the address's record is left to expire.
        with self.lock:
            self.failures.pop(("account", account), None)


def client_of(scope) -> str:
    return (scope.get("client") or ("unknown", 0))[0]


def too_many_tries(seconds: int, which: str) -> tuple[str, dict]:
    message = (
        f"Too many failed sign-ins from this address: try again in {seconds} s."
        if which == "address"
        else f"Too many failed sign-ins for this account from several addresses: signing in is paused; "
        f"try again in {seconds} s."
    )
    return message, {"Retry-After": str(seconds)}


# Changes only an admin may make (path -> role); every other change needs a reviewer.
ADMIN_ROUTES = {"/merge": "admin"}


class SignInGate:
    """ASGI middleware, before any body is read: finds the user (session cookie or API token
    header; a wrong token counts towards the ``Throttle`` and is answered 401), then
    - a read (GET/HEAD/OPTIONS) by an anonymous visitor is sent to /login (303; 401 for /api/),
      unless ``public_read``;
    - a change (any other method; /login and /logout excepted) must come from the app's own pages
      (else 403) and from a signed-in user (else 401) whose role allows it (else 403).
    /login, /logout, /static/ (the sign-in page's style) and /healthz are open. FastAPI reads
    form and file fields before it runs dependencies, so a dependency alone came too late.
    ``clock``: seconds since the epoch (sessions outlive restarts), injectable for tests."""

    OPEN = {"/login", "/logout"}

    def __init__(self, app, config, throttle: Throttle, clock=time.time):
        self.app, self.config, self.throttle, self.clock = app, config, throttle, clock

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers") or []}
        client, method, path = client_of(scope), scope["method"], scope["path"]
        given = _token_from_headers(headers)
        if given or (method == "POST" and path == "/login"):
            wait, which = self.throttle.retry_after(client, TOKEN_ACCOUNT if given else None)
            if wait:
                message, extra = too_many_tries(wait, which)
                return await _plain(send, 429, message, extra)
        user = await run_in_threadpool(self._user, given, _cookie(headers.get("cookie", ""), SESSION_COOKIE))
        if given:
            if user is None:
                self.throttle.failed(client, TOKEN_ACCOUNT)
                return await _plain(send, 401, BAD_TOKEN_MESSAGE)
            self.throttle.succeeded(client, TOKEN_ACCOUNT)
        scope.setdefault("state", {})["user"] = user
        reads = method in OPEN_METHODS
        if path in self.OPEN or (reads and (path.startswith("/static/") or path == "/healthz")):
            if not reads and _cross_site(headers.get("origin"), headers.get("host", "")):
                return await _plain(send, 403, CROSS_SITE_MESSAGE)
            return await self.app(scope, receive, send)
        if reads:
            if user is None and not self.config.public_read:
                if path.startswith("/api/") or method != "GET":
                    return await _plain(send, 401, SIGN_IN_MESSAGE)
                query = scope.get("query_string", b"").decode("latin-1")
                here = path + (f"?{query}" if query else "")
                return await _redirect(send, "/login?" + urlencode({"next": here}))
            return await self.app(scope, receive, send)
        if _cross_site(headers.get("origin"), headers.get("host", "")):
            return await _plain(send, 403, CROSS_SITE_MESSAGE)
        if user is None:
            return await _plain(send, 401, SIGN_IN_MESSAGE)
        needed = ADMIN_ROUTES.get(path, "reviewer")
        if not role_allows(user["role"], needed):
            return await _plain(send, 403, role_message(user, needed))
        return await self.app(scope, receive, send)

    def _user(self, token: str, session: str) -> dict | None:
        if not token and not session:
            return None
        config = self.config
        with Connection(config.catalog, create=False) as catalog:
            if token:
                return token_user(catalog, token)
            return session_user(
                catalog, session, self.clock(), idle=config.session_idle_s, longest=config.session_longest_s
            )


def _token_from_headers(headers: Mapping[str, str]) -> str:
    if headers.get(TOKEN_HEADER):
        return headers[TOKEN_HEADER]
    authorization = headers.get("authorization", "")
    return authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


async def _plain(send, status: int, message: str, extra: dict | None = None) -> None:
    body = message.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        # the body was not read: the connection cannot carry another request
        (b"connection", b"close"),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send, location: str) -> None:
    # A GET carries no body: the connection stays usable.
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


# ---------------------------------------------------------------------------------------------
# text from the outside


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_text(value: str | None, limit: int) -> str:
    """A single line of at most ``limit`` characters, without control characters."""
    return _CONTROL.sub(" ", value or "").strip()[:limit]


def display_name(filename: str | None) -> str:
    """An uploaded file's name, for showing only: the last path component, cleaned."""
    name = re.split(r"[\\/]", filename or "")[-1]
    return clean_text(name, 120) or "photo"


def safe_next(target: str | None) -> str:
    """A redirect target that stays on this site (no 'https://evil', no '//evil')."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


# ---------------------------------------------------------------------------------------------
# photos


def check_photo(data: bytes, label: str, *, max_bytes: int, max_pixels: int) -> str:
    """Accept an uploaded photo or raise UploadRejected; return the extension it is stored with."""
    if not data:
        raise UploadRejected(f"{label}: the file is empty.")
    if len(data) > max_bytes:
        raise UploadRejected(
            f"{label}: the file is over the {_megabytes(max_bytes)} limit per photo; send a smaller photo."
        )
    extension = sniff_image_type(data)
    if extension is None:
        raise UploadRejected(
            f"{label}: not a photo. Accepted are {ACCEPTED_TYPES} files (recognised "
            "by their content, whatever the file name says)."
        )
    try:
        # Read the header alone first: a small file can declare billions of pixels.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Image.DecompressionBombError:  # Pillow's own guard, for sizes far beyond ours
        raise UploadRejected(
            f"{label}: its header declares a gigantic picture; refused as a possible "
            "decompression bomb. Send a smaller photo."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UploadRejected(f"{label}: the photo cannot be read ({error}).") from None
    if width * height > max_pixels:
        raise UploadRejected(
            f"{label}: {width}x{height} pixels is over the {max_pixels:,} pixel limit "
            "(refused as a possible decompression bomb); send a smaller photo."
        )
    try:
        decode_image(data, label)
    except ImageReadError as error:
        raise UploadRejected(f"{error}; send the original photo file.") from None
    return extension


# ---------------------------------------------------------------------------------------------
# the request body limits


class BodyTooLarge(Exception):
    pass


SIGN_IN_BODY = 4 * 1024  # the sign-in form, and anything an anonymous client may send
FORM_BODY = 64 * 1024  # a signed-in form: it may list the photo ids of a large group
# The only route that takes a large (multipart) body: it is signed in before a byte is read.
UPLOAD_ROUTES = frozenset({("POST", "/uploads")})
OPEN_METHODS = ("GET", "HEAD", "OPTIONS")  # no route reads their body


class BodyLimits:
    """ASGI middleware: each request's body is limited by what its route needs, before and while
    it is read. The upload route takes multipart bodies up to ``upload_limit``; every other route
    takes a small url-encoded form (``SIGN_IN_BODY`` where no sign-in is needed, ``FORM_BODY``
    for the signed-in ones, whose forms can list a group's photo ids): a larger Content-Length is
    answered 413 and a multipart body 415 without a byte being read, and a body without
    Content-Length (chunked, or a client that lies) is counted as it streams in and stopped at
    the limit. Without this, ``POST /login`` read a 300 MB multipart body to the end (spooled to
    disk by the form parser) before answering 401."""

    def __init__(self, app, upload_limit: int):
        self.app, self.upload_limit = app, upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = (scope["method"], scope["path"])
        if route in UPLOAD_ROUTES:
            limit, message = self.upload_limit, _upload_too_large(self.upload_limit)
        else:
            anonymous = scope["method"] in OPEN_METHODS or scope["path"] in SignInGate.OPEN
            limit = SIGN_IN_BODY if anonymous else FORM_BODY
            message = f"Request too large: this page takes a small form of at most {_size(limit)}."
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _plain(send, 413, message)
        content_type = headers.get(b"content-type", b"").decode("latin-1").strip().lower()
        has_body = declared not in (None, b"0") or b"transfer-encoding" in headers
        if has_body and content_type.startswith("multipart/") and route not in UPLOAD_ROUTES:
            return await _plain(
                send, 415, "This page takes a url-encoded form, not a multipart one: photos go to /uploads."
            )
        received = 0
        refused = False  # once over the limit, the app's own answer is replaced by our 413

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def guarded_send(event):
            nonlocal refused
            if received > limit:
                # The framework turns the exception above into its own error response
                # (FastAPI: 400 "error parsing the body"); say what really happened instead.
                if not refused:
                    refused = True
                    await _plain(send, 413, message)
                return
            await send(event)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not refused:
                await _plain(send, 413, message)


def _upload_too_large(limit: int) -> str:
    return f"Upload too large: the limit is {_megabytes(limit)} per request. Send fewer or smaller photos."


def _size(count: int) -> str:
    return f"{count // 1024} KiB" if count < 2**20 else _megabytes(count)


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count < 10 * 2**20 else f"{count / 2**20:.0f} MiB"
