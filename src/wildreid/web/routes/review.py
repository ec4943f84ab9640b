"""The review queue, one query's candidates, the decision, and the keypoint-match pictures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from wildreid.catalog.changes import answer_pair, entry_details, pair_answers
from wildreid.decide.queue import DIFFERENT
from wildreid.presets import get_preset
from wildreid.review.identify import catalog_cache_dir
from wildreid.review.pending import answered_individuals, pending_queries
from wildreid.web.matches import evidence_png, known_evidence, match_picture, match_pictures_available
from wildreid.web.pages import (
    CatalogDep,
    next_waiting,
    page,
    photos_filed,
    preset_of,
    query_or_404,
    url_part,
)
from wildreid.web.security import clean_text, require_reviewer, reviewer_of

router = APIRouter()
CANDIDATES_SHOWN = 5  # candidates on the page: five rows still fit one screen
PHOTOS_PER_CANDIDATE = 3  # catalogue photos shown per candidate


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
def review(
    request: Request,
    query_id: int,
    catalog: CatalogDep,
    decided: int | None = None,
    undone: int | None = None,
    answered: int | None = None,
):
    query = query_or_404(catalog, query_id)
    result = query["result"] or {}
    tied, apart = answered_individuals(pair_answers(catalog, query["dataset"]), query_id)
    ranked = result.get("candidates", [])
    counts = catalog.photo_counts([candidate["individual_id"] for candidate in ranked])
    candidates: list[dict] = []
    ruled_out: list[dict] = []
    for candidate in ranked:
        individual = catalog.individual(candidate["individual_id"]) or {}
        shown = {
            **candidate,
            "name": individual.get("name", ""),
            "photo_count": counts[candidate["individual_id"]],
            "photos": _best_photos(catalog, candidate),
            "tied": candidate["individual_id"] == tied,
        }
        # "different" / "not this one": never offered again, exactly as grouping keeps them apart
        (ruled_out if candidate["individual_id"] in apart else candidates).append(shown)
    candidates.sort(key=lambda shown: not shown["tied"])  # an answered "same" first
    config = request.app.state.config
    preset = get_preset(config.preset)
    pictures = match_pictures_available(preset)
    for shown in candidates[:CANDIDATES_SHOWN]:
        # "3 matches on the animal - weak evidence" beside the toggle, once its picture was drawn
        # (drawn on demand; the page's script says it when the toggle draws it)
        candidate_file = catalog.stored_file(shown["sha256"]) if pictures and shown.get("sha256") else None
        shown["evidence"] = candidate_file and known_evidence(
            catalog.photo_path(query["stored_path"]),
            candidate_file,
            preset=preset,
            cache_dir=config.cache_dir or catalog_cache_dir(config.catalog),
        )
    just_decided = catalog.decisions(query_id=decided)[-1:] if decided else []
    return page(
        request,
        "review.html",
        query=query,
        candidates=candidates[:CANDIDATES_SHOWN],
        ruled_out=ruled_out,
        history=catalog.decisions(query_id=query_id),
        just_decided=[{**d, "individual": catalog.individual(d["individual_id"] or "")} for d in just_decided],
        next_id=next_waiting(catalog, query_id),
        match_pictures=pictures,
        last=catalog.last_change() if just_decided or answered else None,
        done=None,
        answered=entry_details(catalog.history_entry(answered)) if answered else None,
        undone=entry_details(catalog.history_entry(undone)) if undone else None,
        preset_used=result.get("preset") or config.preset,
        here=f"/review/{query_id}",
    )


def _best_photos(catalog, candidate: dict) -> list[dict]:
    """The candidate's best-matching catalogue photo, then more of its photos (up to
    PHOTOS_PER_CANDIDATE): a reviewer judges an animal from several views, not one."""
    photos = (
        [{"sha256": candidate["sha256"], "id": candidate.get("image_id"), "best": True}]
        if candidate.get("sha256")
        else []
    )
    for image in catalog.images(candidate["individual_id"]):
        if len(photos) >= PHOTOS_PER_CANDIDATE:
            break
        if image["sha256"] != candidate.get("sha256"):
            photos.append({"sha256": image["sha256"], "id": image["id"], "best": False})
    return photos


@router.post("/review/{query_id}", dependencies=[Depends(require_reviewer)])
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


@router.post("/review/{query_id}/not", dependencies=[Depends(require_reviewer)])
def not_this_one(request: Request, query_id: int, catalog: CatalogDep, individual_id: Annotated[str, Form()]):
    """ "Not this one": the answer "different" about the photo and a candidate, stored as any pair
    answer is (``changes.answer_pair``: who, when, undoable) and applied to the dataset's grouping
    at once, so neither this page nor the groups offer that individual for the photo again."""
    query = query_or_404(catalog, query_id)
    individual_id = individual_id.strip()
    scored = {c["individual_id"]: c["score"] for c in (query["result"] or {}).get("candidates", [])}
    preset = preset_of((query["result"] or {}).get("preset") or request.app.state.config.preset)
    jobs = request.app.state.jobs
    with jobs.group_lock:
        pending = jobs.grouping(query["dataset"])
        waiting = frozenset(q["id"] for q in pending_queries(catalog, query["dataset"]))
        if pending is not None and frozenset(pending.query_ids) != waiting:
            pending = None  # out of date: rebuilt with every stored answer when next shown
        left = pending.node_of_query(query_id) if pending is not None else None
        right = pending.node_of_individual(individual_id) if pending is not None else None
        # applied first, as on the pair questions' page, to count the photos it settled
        settled = pending.answer(left, right, DIFFERENT) if pending and left is not None and right is not None else None
        try:
            entry = answer_pair(
                catalog,
                dataset=query["dataset"],
                query_id=query_id,
                individual_id=individual_id,
                answer=DIFFERENT,
                reviewer=reviewer_of(request),
                # the pair's P(same), where the preset's scores are one
                probability=scored.get(individual_id) if preset is not None and preset.local else None,
                settled=settled,
            )
        except BaseException:
            if pending is not None:  # not stored: nor applied
                pending.apply_answers(pair_answers(catalog, query["dataset"]))
            raise
        if pending is not None and entry["repeated"]:
            pending.apply_answers(pair_answers(catalog, query["dataset"]))
    if not entry["repeated"]:
        jobs.maybe_learn()  # every so many answers the gallery learns from them, in the background
    return RedirectResponse(f"/review/{query_id}?answered={entry['id']}", status_code=303)


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
    return evidence_png(picture)
