"""Signing in and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from wildreid.web.pages import page
from wildreid.web.security import (
    REVIEWER_COOKIE,
    TOKEN_COOKIE,
    clean_text,
    client_of,
    safe_next,
    session_value,
    token_matches,
)

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/"):
    return page(request, "login.html", next=safe_next(next), failed=False)


@router.post("/login")
def login(
    request: Request,
    token: Annotated[str, Form()] = "",
    reviewer: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
):
    config, throttle = request.app.state.config, request.app.state.throttle
    # (A client or account locked out by the throttle never gets here: TokenGate answers 429 first.)
    if not token_matches(token.strip(), config.token):
        throttle.failed(client_of(request.scope))
        return page(request, "login.html", status_code=401, next=safe_next(next), failed=True)
    throttle.succeeded(client_of(request.scope))
    response = RedirectResponse(safe_next(next), status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(
        TOKEN_COOKIE, session_value(config.token), httponly=True, samesite="strict", secure=secure, max_age=12 * 3600
    )
    response.set_cookie(
        REVIEWER_COOKIE,
        clean_text(reviewer, 80) or "reviewer",
        httponly=True,
        samesite="strict",
        secure=secure,
        max_age=365 * 24 * 3600,
    )
    return response


@router.post("/logout")
def logout():
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(TOKEN_COOKIE)
    return response
