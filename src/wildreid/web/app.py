"""The review web app: upload photos, review the candidates, confirm / create / skip, browse.

Server-rendered pages (Jinja2) with a little vanilla JavaScript (drag and drop, job polling).
Every page needs a signed-in user, and every change a user whose role allows it (see
security.py). Identification
goes through the catalogue's gallery (``catalog.identify_with_catalog``), kept in memory by a background
thread (jobs.py).

The routes live in routes/ (one router per area: auth, uploads, review, individuals, photos);
what they share is in pages.py, error handling in errors.py. Routes reach the configuration and
the job runner through ``request.app.state``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from wildreid.catalog.store import Catalog
from wildreid.web.config import WebConfig
from wildreid.web.errors import install_error_handlers
from wildreid.web.jobs import JobRunner
from wildreid.web.maps import tile_origin
from wildreid.web.routes import ROUTERS
from wildreid.web.security import BodyLimits, SignInGate, Throttle

HERE = Path(__file__).parent
# No inline script or style anywhere, so the policy can forbid them (an injected <script> or
# attribute handler would not run even if escaping failed somewhere).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(config: WebConfig, *, backbone=None, clock=time.time) -> FastAPI:
    """The app for ``config``; ``backbone`` (optional) is used instead of loading the preset's;
    ``clock`` (seconds since the epoch) times the sessions, injectable for tests."""
    with Catalog(config.catalog, create=False):  # migrate now: a bad path fails at start, not per page
        pass
    # The one background runner of identification jobs (routes reach it as app.state.jobs).
    jobs = JobRunner(config, backbone=backbone)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.resume_unfinished()
        yield
        jobs.stop()

    # No /docs or /openapi.json: the pages are the interface.
    app = FastAPI(title="wildreid review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.config, app.state.jobs, app.state.throttle, app.state.clock = config, jobs, Throttle(), clock
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    # Middleware added last runs first: the Host check, then the user and their role (before
    # any body is read), then the route's body limits (before and while the body streams in).
    app.add_middleware(BodyLimits, upload_limit=config.max_request_bytes)
    app.add_middleware(SignInGate, config=config, throttle=app.state.throttle, clock=clock)

    headers = dict(SECURITY_HEADERS)
    if config.map_tiles:  # the configured tile server's pictures may be shown, and nothing else's
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
            "img-src 'self' blob: data:", f"img-src 'self' blob: data: {tile_origin(config.map_tiles)}"
        )

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.served_hosts, www_redirect=False)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
