"""The review queue, one query's candidates, the decision, and the keypoint-match pictures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from wildreid.catalog.changes import entry_details
from wildreid.presets import get_preset
from wildreid.review.identify import catalog_cache_dir
from wildreid.web.matches import match_picture, match_pictures_available
from wildreid.web.pages import CatalogDep, next_waiting, page, photos_filed, query_or_404, url_part
from wildreid.web.security import clean_text, require_token, reviewer_of

router = APIRouter()


@router.get("/review", response_class=HTMLResponse)
def review_list(request: Request, catalog: CatalogDep):
    return page(
        request,
        "review_list.html",
        waiting=catalog.queries(status=["ready", "failed", "queued"]),
        skipped=catalog.queries(status="skipped"),
        decided=catalog.decisions()[-50:][::-1],
    )


@router.get("/review/{query_id}", response_class=HTMLResponse)
def review(request: Request, query_id: int, catalog: CatalogDep, decided: int | None = None, undone: int | None = None):
    query = query_or_404(catalog, query_id)
    ranked = (query["result"] or {}).get("candidates", [])
    counts = catalog.photo_counts([candidate["individual_id"] for candidate in ranked])
    candidates = []
    for candidate in ranked:
        individual = catalog.individual(candidate["individual_id"]) or {}
        candidates.append(
            {**candidate, "name": individual.get("name", ""), "photo_count": counts[candidate["individual_id"]]}
        )
    just_decided = catalog.decisions(query_id=decided)[-1:] if decided else []
    return page(
        request,
        "review.html",
        query=query,
        candidates=candidates,
        history=catalog.decisions(query_id=query_id),
        just_decided=just_decided,
        next_id=next_waiting(catalog, query_id),
        match_pictures=match_pictures_available(get_preset(request.app.state.config.preset)),
        last=catalog.last_change() if just_decided else None,
        done=None,
        undone=entry_details(catalog.history_entry(undone)) if undone else None,
    )


@router.post("/review/{query_id}", dependencies=[Depends(require_token)])
def decide(
    request: Request,
    query_id: int,
    catalog: CatalogDep,
    action: Annotated[str, Form()],
    individual_id: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    notes: Annotated[str, Form()] = "",
):
    if action not in ("match", "new", "skip"):
        raise HTTPException(400, f"action: '{clean_text(action, 20)}' is not one of match, new, skip.")
    query = query_or_404(catalog, query_id)
    used = (query["result"] or {}).get("preset") or request.app.state.config.preset  # the preset that ranked it
    decision = catalog.decide(
        query_id,
        action,
        reviewer=reviewer_of(request),
        preset=used,
        individual_id=individual_id.strip() or None,
        name=clean_text(name, 200),
        notes=clean_text(notes, 2000),
    )
    if decision["individual_id"]:
        photos_filed(request, catalog, query["dataset"], {query_id}, regroup=False)
    next_id = next_waiting(catalog, query_id)
    if next_id is not None:
        return RedirectResponse(f"/review/{next_id}?decided={query_id}", status_code=303)
    if decision["individual_id"]:
        return RedirectResponse(
            f"/individuals/{url_part(decision['individual_id'])}?added={decision['image_id']}", status_code=303
        )
    return RedirectResponse("/review", status_code=303)


@router.get("/review/{query_id}/match/{rank}.png")
def match_png(request: Request, query_id: int, rank: int, catalog: CatalogDep):
    config = request.app.state.config
    query = query_or_404(catalog, query_id)
    candidates = (query["result"] or {}).get("candidates", [])
    if not 1 <= rank <= len(candidates) or not candidates[rank - 1].get("sha256"):
        raise HTTPException(404, "No such candidate.")
    candidate_file = catalog.stored_file(candidates[rank - 1]["sha256"])
    picture = (
        match_picture(
            catalog.photo_path(query["stored_path"]),
            candidate_file,
            preset=get_preset(config.preset),
            cache_dir=config.cache_dir or catalog_cache_dir(config.catalog),
        )
        if candidate_file
        else None
    )
    if picture is None:
        raise HTTPException(404, "No keypoint-match picture for this candidate.")
    return Response(picture, media_type="image/png")
