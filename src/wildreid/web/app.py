"""The review web app: upload photos, review the candidates, confirm / create / skip, browse.

Server-rendered pages (Jinja2) with a little vanilla JavaScript (drag and drop, job polling).
Every page that changes the catalogue needs the review token (see security.py). Identification
goes through ``pipeline.identify`` (via ``catalog.identify_with_catalog``), in a background
thread (jobs.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..catalog import AlreadyDecided, Catalog, CatalogError
from ..catalog.identify import default_cache_dir
from ..catalog.photos import SHA256_PATTERN
from ..presets import get_preset
from .config import WebConfig
from .jobs import Job, JobRunner, new_job_id
from .matches import match_picture, match_pictures_available
from .security import (REVIEWER_COOKIE, TOKEN_COOKIE, BodySizeLimit, UploadRejected, check_photo,
                       clean_text, display_name, is_signed_in, require_token, reviewer_of, safe_next,
                       session_value, token_matches)

log = logging.getLogger("wildreid.web")
HERE = Path(__file__).parent
JOB_ID = re.compile(r"[0-9a-f]{16}")
INDIVIDUALS_SHOWN = 200   # per list page; the search narrows it down
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tif": "image/tiff",
               "bmp": "image/bmp"}
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


def open_catalog(request: Request):
    """One catalogue connection per request (SQLite connections are not shared between threads)."""
    catalog = Catalog(request.app.state.config.catalog, create=False)
    try:
        yield catalog
    finally:
        catalog.close()


# Module level: the routes' annotations are strings (postponed evaluation) resolved here.
CatalogDep = Annotated[Catalog, Depends(open_catalog)]


def create_app(config: WebConfig, *, backbone=None) -> FastAPI:
    """The app for ``config``; ``backbone`` (optional) is used instead of loading the preset's."""
    with Catalog(config.catalog, create=False):  # migrate now: a bad path fails at start, not per page
        pass
    jobs = JobRunner(config, backbone=backbone)
    preset = get_preset(config.preset)
    cache_dir = config.cache_dir or default_cache_dir(config.catalog)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.resume_unfinished()
        yield
        jobs.stop()

    # No /docs or /openapi.json: the pages are the interface.
    app = FastAPI(title="wildreid review", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.config, app.state.jobs = config, jobs
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["score"] = lambda value: "–" if value is None else f"{value:.3f}"
    templates.env.filters["urlpart"] = _url_part
    templates.env.filters["when"] = _when
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(BodySizeLimit, limit=config.max_request_bytes)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        context.update(signed_in=is_signed_in(request), reviewer=reviewer_of(request), config=config,
                       request_path=request.url.path)
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    # ------------------------------------------------------------------------------------------
    # errors: a message a person can act on, never a stack trace

    def error_response(request: Request, status: int, message: str):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        try:
            return page(request, "error.html", status_code=status, status=status, message=message)
        except Exception:  # noqa: BLE001 - the error page itself failed: plain text, still no trace
            log.exception("rendering the error page failed")
            return Response(message, status_code=status, media_type="text/plain")

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
        return error_response(request, 409 if isinstance(error, AlreadyDecided) else 400, str(error))

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception):
        reference = secrets.token_hex(4)
        log.error("unhandled error on %s %s (reference %s)", request.method, request.url.path,
                  reference, exc_info=error)
        return error_response(request, 500, f"Something went wrong on the server (reference "
                                            f"{reference}). The details are in the server's log.")

    # ------------------------------------------------------------------------------------------
    # signing in

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/"):
        return page(request, "login.html", next=safe_next(next), failed=False)

    @app.post("/login")
    def login(request: Request, token: Annotated[str, Form()] = "", reviewer: Annotated[str, Form()] = "",
              next: Annotated[str, Form()] = "/"):
        if not token_matches(token.strip(), config.token):
            return page(request, "login.html", status_code=401, next=safe_next(next), failed=True)
        response = RedirectResponse(safe_next(next), status_code=303)
        secure = request.url.scheme == "https"
        response.set_cookie(TOKEN_COOKIE, session_value(config.token), httponly=True, samesite="strict",
                            secure=secure, max_age=12 * 3600)
        response.set_cookie(REVIEWER_COOKIE, clean_text(reviewer, 80) or "reviewer", httponly=True,
                            samesite="strict", secure=secure, max_age=365 * 24 * 3600)
        return response

    @app.post("/logout")
    def logout():
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(TOKEN_COOKIE)
        return response

    # ------------------------------------------------------------------------------------------
    # uploading

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, catalog: CatalogDep):
        return page(request, "home.html", datasets=catalog.datasets(), counts=catalog.counts(),
                    waiting=catalog.queries(status=["ready", "failed", "skipped", "queued"]))

    @app.post("/uploads", dependencies=[Depends(require_token)])
    def upload(request: Request, catalog: CatalogDep,
               photos: Annotated[list[UploadFile], File(description="one or more photos")],
               dataset: Annotated[str, Form()] = "", sighting_date: Annotated[str, Form()] = "",
               location: Annotated[str, Form()] = ""):
        if len(photos) > config.max_files:
            raise HTTPException(400, f"photos: {len(photos)} files in one upload; the limit is "
                                     f"{config.max_files}. Upload them in smaller batches.")
        dataset = _chosen_dataset(catalog, dataset)
        sighting_date = _checked_date(sighting_date)
        job = Job(new_job_id(), [])
        for photo in photos:
            label = display_name(photo.filename)
            data = photo.file.read(config.max_upload_bytes + 1)  # +1: enough to see it is too big
            try:
                extension = check_photo(data, label, max_bytes=config.max_upload_bytes,
                                        max_pixels=config.max_pixels)
            except UploadRejected as error:
                job.rejected.append(str(error))
                continue
            query = catalog.add_query(data, extension, dataset=dataset, original_name=label,
                                      sighting_date=sighting_date, location=clean_text(location, 200),
                                      uploaded_by=reviewer_of(request), job_id=job.id)
            job.query_ids.append(query["id"])
        if not job.query_ids:
            raise HTTPException(400, "No photo accepted. " + " ".join(job.rejected))
        job.total = len(job.query_ids)
        jobs.submit(job)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    def job_state(catalog: Catalog, job_id: str) -> dict:
        if not JOB_ID.fullmatch(job_id):
            raise HTTPException(404, "No such upload job.")
        queries = catalog.queries(job_id=job_id, limit=10_000)
        job = jobs.get(job_id)
        if job is None and not queries:
            raise HTTPException(404, "No such upload job (it may have been forgotten after a restart; "
                                     "its photos are listed on the home page).")
        state = job.to_dict() if job else {
            "id": job_id, "status": "queued" if any(q["status"] == "queued" for q in queries) else "done",
            "stage": "", "done": 0, "total": len(queries), "error": "", "rejected": []}
        state["queries"] = [{"id": q["id"], "status": q["status"], "name": q["original_name"],
                             "url": f"/review/{q['id']}"} for q in queries]
        ready = [q for q in queries if q["status"] in ("ready", "failed")]
        state["next_url"] = f"/review/{ready[0]['id']}" if ready and state["status"] in ("done", "failed") else None
        return state

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str, catalog: CatalogDep):
        return page(request, "job.html", job=job_state(catalog, job_id))

    @app.get("/api/jobs/{job_id}")
    def job_api(job_id: str, catalog: CatalogDep):
        return job_state(catalog, job_id)

    # ------------------------------------------------------------------------------------------
    # reviewing

    @app.get("/review", response_class=HTMLResponse)
    def review_list(request: Request, catalog: CatalogDep):
        return page(request, "review_list.html",
                    waiting=catalog.queries(status=["ready", "failed", "queued"]),
                    skipped=catalog.queries(status="skipped"),
                    decided=catalog.decisions()[-50:][::-1])

    @app.get("/review/{query_id}", response_class=HTMLResponse)
    def review(request: Request, query_id: int, catalog: CatalogDep, decided: int | None = None):
        query = _query_or_404(catalog, query_id)
        candidates = []
        for candidate in (query["result"] or {}).get("candidates", []):
            individual = catalog.individual(candidate["individual_id"]) or {}
            candidates.append({**candidate, "name": individual.get("name", ""),
                               "photo_count": len(catalog.images(candidate["individual_id"]))})
        just_decided = catalog.decisions(query_id=decided)[-1:] if decided else []
        return page(request, "review.html", query=query, candidates=candidates,
                    history=catalog.decisions(query_id=query_id), just_decided=just_decided,
                    next_id=_next_waiting(catalog, query_id),
                    match_pictures=match_pictures_available(preset))

    @app.post("/review/{query_id}", dependencies=[Depends(require_token)])
    def decide(request: Request, query_id: int, catalog: CatalogDep,
               action: Annotated[str, Form()], individual_id: Annotated[str, Form()] = "",
               name: Annotated[str, Form()] = "", notes: Annotated[str, Form()] = ""):
        if action not in ("match", "new", "skip"):
            raise HTTPException(400, f"action: '{clean_text(action, 20)}' is not one of match, new, skip.")
        query = _query_or_404(catalog, query_id)
        used = (query["result"] or {}).get("preset") or config.preset   # the preset that ranked it
        decision = catalog.decide(query_id, action, reviewer=reviewer_of(request), preset=used,
                                  individual_id=individual_id.strip() or None, name=clean_text(name, 200),
                                  notes=clean_text(notes, 2000))
        next_id = _next_waiting(catalog, query_id)
        if next_id is not None:
            return RedirectResponse(f"/review/{next_id}?decided={query_id}", status_code=303)
        if decision["individual_id"]:
            return RedirectResponse(f"/individuals/{_url_part(decision['individual_id'])}?added="
                                    f"{decision['image_id']}", status_code=303)
        return RedirectResponse("/review", status_code=303)

    @app.get("/review/{query_id}/match/{rank}.png")
    def match_png(query_id: int, rank: int, catalog: CatalogDep):
        query = _query_or_404(catalog, query_id)
        candidates = (query["result"] or {}).get("candidates", [])
        if not 1 <= rank <= len(candidates) or not candidates[rank - 1].get("sha256"):
            raise HTTPException(404, "No such candidate.")
        candidate_file = catalog.stored_file(candidates[rank - 1]["sha256"])
        picture = match_picture(catalog.photo_path(query["stored_path"]), candidate_file, preset=preset,
                                cache_dir=cache_dir) if candidate_file else None
        if picture is None:
            raise HTTPException(404, "No keypoint-match picture for this candidate.")
        return Response(picture, media_type="image/png")

    # ------------------------------------------------------------------------------------------
    # browsing

    @app.get("/individuals", response_class=HTMLResponse)
    def individuals(request: Request, catalog: CatalogDep, q: str = ""):
        q = clean_text(q, 200)
        found = catalog.individuals(q, limit=INDIVIDUALS_SHOWN + 1)
        return page(request, "individuals.html", q=q, individuals=found[:INDIVIDUALS_SHOWN],
                    more=len(found) > INDIVIDUALS_SHOWN)

    @app.get("/individuals/{individual_id:path}", response_class=HTMLResponse)
    def individual(request: Request, individual_id: str, catalog: CatalogDep, added: int | None = None):
        found = catalog.individual(individual_id)
        if found is None:
            raise HTTPException(404, "No such individual.")
        decisions = {d["image_id"]: d for d in catalog.decisions(individual_id=individual_id)}
        photos = [{**image, "decision": decisions.get(image["id"])} for image in catalog.images(individual_id)]
        return page(request, "individual.html", individual=found, photos=photos, added=added)

    @app.post("/individuals/{individual_id:path}", dependencies=[Depends(require_token)])
    def edit_individual(individual_id: str, catalog: CatalogDep, name: Annotated[str, Form()] = "",
                        notes: Annotated[str, Form()] = ""):
        catalog.update_individual(individual_id, name=clean_text(name, 200), notes=clean_text(notes, 2000))
        return RedirectResponse(f"/individuals/{_url_part(individual_id)}", status_code=303)

    @app.get("/photos/{sha256}")
    def photo(sha256: str, catalog: CatalogDep):
        # Only a content hash is accepted, and the file is looked up in the database: nothing
        # from the URL ever becomes part of a file path.
        if not SHA256_PATTERN.fullmatch(sha256):
            raise HTTPException(404, "No such photo.")
        path = catalog.stored_file(sha256)
        if path is None or not path.is_file():
            raise HTTPException(404, "No such photo.")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix[1:]],
                            headers={"Cache-Control": "private, max-age=31536000, immutable"})

    @app.get("/healthz")
    def health(catalog: CatalogDep):
        return {"ok": True, "schema_version": catalog.schema_version}

    return app


# ----------------------------------------------------------------------------------------------
# helpers


def _query_or_404(catalog: Catalog, query_id: int) -> dict:
    query = catalog.query(query_id)
    if query is None:
        raise HTTPException(404, f"No query photo #{query_id}.")
    return query


def _next_waiting(catalog: Catalog, after: int) -> int | None:
    """The next query waiting for a decision (after ``after``, else the first one)."""
    waiting = [q["id"] for q in catalog.queries(status=["ready", "failed"], limit=10_000) if q["id"] != after]
    later = [i for i in waiting if i > after]
    return (later or waiting or [None])[0]


def _chosen_dataset(catalog: Catalog, dataset: str) -> str:
    known = catalog.datasets()
    if not known:
        raise HTTPException(400, "The catalogue is empty: import photos of known individuals first "
                                 "(wildreid catalog import).")
    dataset = dataset.strip()
    if not dataset and len(known) == 1:
        return known[0]
    if dataset not in known:
        raise HTTPException(400, f"dataset: choose one of {', '.join(known)}.")
    return dataset


def _checked_date(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise HTTPException(400, f"sighting date: '{clean_text(text, 40)}' is not a date; use "
                                 "YYYY-MM-DD.") from None


def _when(stamp: str | None) -> str:
    """'2026-05-01T09:30:12+00:00' -> '2026-05-01 09:30 UTC' (stored times are UTC)."""
    if not stamp:
        return "–"
    try:
        return dt.datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return stamp


def _url_part(text: str) -> str:
    """One URL path segment (an individual id may hold any character, '/' included)."""
    return quote(str(text), safe="")
