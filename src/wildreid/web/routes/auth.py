"""Signing in and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from wildreid.catalog.connection import Connection
from wildreid.catalog.users import check_credentials, end_session, forget_expired_sessions, start_session
from wildreid.web.pages import page
from wildreid.web.security import SESSION_COOKIE, clean_text, client_of, safe_next, too_many_tries

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/"):
    return page(request, "login.html", next=safe_next(next), failed=False, user_name="")


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
):
    config, throttle, clock = request.app.state.config, request.app.state.throttle, request.app.state.clock
    client, name = client_of(request.scope), clean_text(name, 80)
    # The address was checked before the form was read (SignInGate); the user name only now.
    # A name that does not exist is counted like one that does: the answer tells no names.
    wait, which = throttle.retry_after(client, name)
    if wait:
        message, headers = too_many_tries(wait, which)
        refused = page(request, "login.html", status_code=429, next=safe_next(next), failed=message, user_name=name)
        refused.headers.update(headers)
        return refused
    with Connection(config.catalog, create=False) as catalog:
        user = check_credentials(catalog, name, password)
        if user is None:
            throttle.failed(client, name)
            return page(request, "login.html", status_code=401, next=safe_next(next), failed=True, user_name=name)
        throttle.succeeded(client, name)
        at = clock()
        forget_expired_sessions(catalog, at, idle=config.session_idle_s, longest=config.session_longest_s)
        session = start_session(catalog, user["name"], at)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=int(config.session_longest_s),  # the server ends it sooner when idle
    )
    return response


@router.post("/logout")
def logout(request: Request):
    with Connection(request.app.state.config.catalog, create=False) as catalog:
        end_session(catalog, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
