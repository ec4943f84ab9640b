"""What the route modules share: one catalogue connection per request, page rendering, and the
small helpers several areas use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.convertors import PathConvertor, register_url_convertor

from wildreid.catalog.changes import pair_answers
from wildreid.catalog.store import Catalog
from wildreid.presets import PRESETS, Preset
from wildreid.review.pending import without_queries
from wildreid.web.security import current_user, may, reviewer_of

HERE = Path(__file__).parent


class AnyTextConvertor(PathConvertor):
    """Like ``{name:path}``, but also matching line breaks: an id that holds one (imported before
    they were refused) would otherwise match no route at all and its page would be a 404."""

    regex = "(?s:.*)"


register_url_convertor("anytext", AnyTextConvertor())


def open_catalog(request: Request):
    """One catalogue connection per request (SQLite connections are not shared between threads)."""
    catalog = Catalog(request.app.state.config.catalog, create=False)
    try:
        yield catalog
    finally:
        catalog.close()


# Module level: the routes' annotations are strings (postponed evaluation) resolved where they
# are defined, so each route module imports this name.
CatalogDep = Annotated[Catalog, Depends(open_catalog)]


def when(stamp: str | None) -> str:
    """'2026-05-01T09:30:12+00:00' -> '2026-05-01 09:30 UTC' (stored times are UTC)."""
    if not stamp:
        return "–"
    try:
        return dt.datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return stamp


def url_part(text: str) -> str:
    """One URL path segment (an individual id may hold any character, '/' included)."""
    return quote(str(text), safe="")


def preset_of(name: str | None) -> Preset | None:
    """The preset of that name, or None (a result stored by a preset this version lacks)."""
    return PRESETS.get(name or "")


def score_name(preset: str | None) -> str:
    """What a score of this preset is, in a word or two ("P(same)", "cosine") for the pages."""
    found = preset_of(preset)
    return found.score_name if found is not None else "score"


def score_meaning(preset: str | None) -> str:
    found = preset_of(preset)
    return found.score_meaning if found is not None else f"scores of preset '{preset}'"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["score_name"] = score_name
templates.env.globals["score_meaning"] = score_meaning
templates.env.filters["score"] = lambda value: "–" if value is None else f"{value:.3f}"
templates.env.filters["urlpart"] = url_part
templates.env.filters["when"] = when


def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    context.update(
        # a refusal of a form posted from this page (errors.back_with_notice)
        notice=getattr(request.app.state, "notices", {}).get(request.query_params.get("notice", "")),
        user=current_user(request),
        # the templates show the forms that change something to those who may use them
        signed_in=may(request, "reviewer"),
        admin=may(request, "admin"),
        reviewer=reviewer_of(request),
        config=request.app.state.config,
        request_path=request.url.path,
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def query_or_404(catalog: Catalog, query_id: int) -> dict:
    query = catalog.query(query_id)
    if query is None:
        raise HTTPException(404, f"No query photo #{query_id}.")
    return query


def next_waiting(catalog: Catalog, after: int) -> int | None:
    """The next query waiting for a decision (after ``after``, else the first one)."""
    waiting = [q["id"] for q in catalog.queries(status=["ready", "failed"], limit=10_000) if q["id"] != after]
    later = [i for i in waiting if i > after]
    return (later or waiting or [None])[0]


def with_params(url: str, **params) -> str:
    """``url`` with query parameters set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in params]
    query += [(k, str(v)) for k, v in params.items() if v is not None]
    return urlunsplit(("", "", parts.path, urlencode(query), ""))


def groups_url(dataset: str, **params) -> str:
    return with_params("/groups", dataset=dataset, **params)


def grouped_with_others(request: Request, dataset: str, query_ids: set[int]) -> bool:
    """Whether the dataset's grouping puts one of ``query_ids`` in a group of several photos."""
    jobs = request.app.state.jobs
    with jobs.group_lock:
        pending = jobs.grouping(dataset)
        groups = pending.groups() if pending is not None else []
    return any(len(group.query_ids) > 1 and query_ids & set(group.query_ids) for group in groups)


def photos_filed(request: Request, catalog: Catalog, dataset: str, query_ids: set[int], *, regroup: bool) -> None:
    """Photos just filed leave the dataset's grouping at once; ``regroup``: a full regroup
    (against the gallery that now holds them) follows in the background."""
    jobs = request.app.state.jobs
    with jobs.group_lock:
        pending = jobs.grouping(dataset)
        reduced = without_queries(pending, query_ids, pair_answers(catalog, dataset)) if pending else None
        jobs.invalidate(dataset, reduced)
    if regroup:
        jobs.request_grouping(dataset, next_url=groups_url(dataset))
