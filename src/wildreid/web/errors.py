"""Errors: a message a person can act on, never a stack trace."""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wildreid.catalog.store import AlreadyDecided, CatalogBusy, CatalogDamaged, CatalogError
from wildreid.web.pages import page, with_params
from wildreid.web.security import safe_next

log = logging.getLogger("wildreid.web")
NOTICES_KEPT = 500  # messages waiting to be shown on the page a reviewer is sent back to
_NOTICES_LOCK = threading.Lock()
# Refusals a reviewer can act on where they were (a mistyped id, a change someone made since,
# a stale undo); sign-in (401), forbidden (403) and server errors keep their own page.
BACK_WITH_NOTICE = (400, 404, 409, 422)


def back_with_notice(request: Request, status: int, message: str) -> Response | None:
    """A form posted from one of the pages and refused: back to that page (its Referer, which the
    Referrer-Policy keeps to this site) with the message shown on it, rather than a dead-end
    error page. The message stays on the server under a random key (a message carried in the
    URL could be forged into a link). None where there is no page of this site to go back to."""
    if request.method != "POST" or request.url.path.startswith("/api/") or status not in BACK_WITH_NOTICE:
        return None
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc != request.url.netloc or not referer.path.startswith("/"):
        return None
    target = safe_next(urlunsplit(("", "", referer.path, referer.query, "")))
    if target.split("?")[0] in ("/login", "/logout") or target.split("?")[0] != referer.path:
        return None
    key = secrets.token_urlsafe(9)
    with _NOTICES_LOCK:
        notices = getattr(request.app.state, "notices", None)
        if notices is None:
            notices = request.app.state.notices = OrderedDict()
        notices[key] = message
        while len(notices) > NOTICES_KEPT:
            notices.popitem(last=False)
    return RedirectResponse(with_params(target, notice=key, done=None, answered=None, decided=None), status_code=303)


def error_response(request: Request, status: int, message: str):
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    back = back_with_notice(request, status, message)
    if back is not None:
        return back
    try:
        return page(request, "error.html", status_code=status, status=status, message=message)
    except Exception:  # noqa: BLE001 - the error page itself failed: plain text, still no trace
        log.exception("rendering the error page failed")
        return Response(message, status_code=status, media_type="text/plain")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        message = error.detail if isinstance(error.detail, str) else "Request refused."
        if error.status_code == 404 and message == "Not Found":
            message = "No such page or photo."
        response = error_response(request, error.status_code, message)
        if error.status_code == 405:
            response.headers["Allow"] = (error.headers or {}).get("Allow", "")
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item.get("loc", ())[1:]) or "request"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        return error_response(request, 422, "Invalid request: " + "; ".join(problems))

    @app.exception_handler(CatalogError)
    async def catalog_error(request: Request, error: CatalogError):
        # The catalogue's own state is not the request's fault: a damaged file is the server's
        # error (500, the details in its log, not the file's path), a long write by another
        # program a moment's unavailability (503). Otherwise the request asked for what the
        # catalogue refuses: 409 for a conflict with an earlier decision, else 400.
        if isinstance(error, CatalogDamaged):
            log.error("the catalogue is damaged: %s", error)
            return error_response(
                request,
                500,
                f"The catalogue's file is damaged ({error.reason}). Whoever runs the server: run "
                "`wildreid catalog check` and restore the catalogue from a backup.",
            )
        if isinstance(error, CatalogBusy):
            response = error_response(
                request, 503, "The catalogue is busy: another program is writing to it. Try again in a moment."
            )
            response.headers["Retry-After"] = "10"
            return response
        return error_response(request, 409 if isinstance(error, AlreadyDecided) else 400, str(error))

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception):
        reference = secrets.token_hex(4)
        log.error(
            "unhandled error on %s %s (reference %s)", request.method, request.url.path, reference, exc_info=error
        )
        return error_response(
            request,
            500,
            f"Something went wrong on the server (reference {reference}). The details are in the server's log.",
        )
