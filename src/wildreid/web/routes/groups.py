"""Review that learns: the waiting photos proposed as groups, the pair-question queue, a whole
group confirmed in one action, a group split, individuals merged and split, and the history of
changes with undo of the last one.

The grouping of a dataset's waiting photos lives in memory (``JobRunner.groupings``); when it is
missing or out of date the page hands over to a grouping job and comes back when it is done.
Answers regroup it at once (no gallery refit); filing photos takes them out of it at once and
asks for a full regroup in the background (the gallery now holds them).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from wildreid.catalog.changes import (
    PENDING,
    answer_counts,
    answer_pair,
    confirm_group,
    entry_details,
    merge_individuals,
    pair_answers,
    split_group,
    split_individual,
    undo_last,
)
from wildreid.catalog.photos import SHA256_PATTERN
from wildreid.catalog.store import Catalog
from wildreid.decide.queue import ANSWERS
from wildreid.presets import get_preset
from wildreid.review.identify import catalog_cache_dir
from wildreid.review.pending import ALONE, KNOWN, PendingGrouping, answered_individuals, pending_queries
from wildreid.web.matches import evidence_png, match_picture, match_pictures_available
from wildreid.web.pages import CatalogDep, groups_url, page, photos_filed, url_part, with_params
from wildreid.web.security import (
    clean_text,
    require_admin,
    require_reviewer,
    require_undo_right,
    reviewer_of,
    safe_next,
)

router = APIRouter()
CANDIDATES_OFFERED = 5  # known individuals offered when confirming a group as one of them


# ------------------------------------------------------------------------------------------------
# the grouping of a dataset's waiting photos


def _dataset(catalog: Catalog, dataset: str) -> str | None:
    """The dataset asked for (the only one when none is named), or None: the page lists them."""
    known = catalog.datasets()
    dataset = clean_text(dataset, 200)
    if not dataset:
        return known[0] if len(known) == 1 else None
    if dataset not in known:
        raise HTTPException(404, f"dataset '{dataset}': not in the catalogue; choose one of {', '.join(known)}.")
    return dataset


def _up_to_date(request: Request, catalog: Catalog, dataset: str):
    """(grouping, waiting photos, failure) with the grouping built for exactly the photos waiting
    now; or a redirect to the job that is (re)building it."""
    jobs = request.app.state.jobs
    waiting = pending_queries(catalog, dataset)
    ids = frozenset(query["id"] for query in waiting)
    pending = jobs.grouping(dataset)
    if pending is not None and frozenset(pending.query_ids) == ids:
        return pending, waiting, None
    if not waiting:
        return None, waiting, None
    failure = jobs.grouping_failure(dataset, ids)
    if failure is not None:
        return None, waiting, failure
    job = jobs.request_grouping(dataset, next_url=with_params(request.url.path + "?" + request.url.query))
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def _regrouping(request: Request, dataset: str) -> bool:
    jobs = request.app.state.jobs
    with jobs.lock:
        return any(job.dataset == dataset and job.status in ("queued", "running") for job in jobs.jobs.values())


def _counters(catalog: Catalog, pending: PendingGrouping | None, waiting: list[dict], dataset: str) -> dict:
    counts = answer_counts(catalog, dataset)
    return {
        "waiting": len(waiting),
        "settled": pending.settled() if pending else 0,
        # photos, not pairs: bounded by the photos waiting, and not growing with every "different"
        "questions": pending.photos_with_questions() if pending else 0,
        "answers": counts["answers"],
        "settled_per_answer": counts["settled_per_answer"],
    }


def _entry(catalog: Catalog, history_id: int | None) -> dict | None:
    return entry_details(catalog.history_entry(history_id)) if history_id else None


def _offered(queries: list[dict], first: str | None, answers: list[dict]) -> list[dict]:
    """Known individuals to offer for a group: its own, then its photos' best candidates; never
    one a reviewer answered "different" (or "not this one") about one of its photos, exactly as
    the grouping keeps them apart (``answered_individuals``)."""
    apart: set[str] = set()
    for query in queries:
        apart |= answered_individuals(answers, query["id"])[1]
    best: dict[str, float] = {}
    for query in queries:
        for candidate in (query["result"] or {}).get("candidates", []):
            identity, score = candidate["individual_id"], candidate["score"]
            if identity not in apart:
                best[identity] = max(best.get(identity, float("-inf")), score)
    ranked = sorted(best, key=lambda identity: -best[identity])
    if first is not None:
        ranked = [first] + [identity for identity in ranked if identity != first]
    return [{"id": identity, "score": best.get(identity)} for identity in ranked[:CANDIDATES_OFFERED]]


@router.get("/groups", response_class=HTMLResponse)
def groups_page(
    request: Request, catalog: CatalogDep, dataset: str = "", done: int | None = None, undone: int | None = None
):
    chosen = _dataset(catalog, dataset)
    if chosen is None:
        return page(
            request,
            "groups.html",
            dataset=None,
            datasets=[(name, len(pending_queries(catalog, name))) for name in catalog.datasets()],
        )
    found = _up_to_date(request, catalog, chosen)
    if isinstance(found, Response):
        return found
    pending, waiting, failure = found
    by_id = {query["id"]: query for query in waiting}
    jobs = request.app.state.jobs
    with jobs.group_lock:
        proposed = pending.groups() if pending else []
        counters = _counters(catalog, pending, waiting, chosen)
        grouped = set(pending.nodes) if pending else set()
    answers = pair_answers(catalog, chosen)
    groups = []
    for number, group in enumerate(proposed, start=1):
        members = [by_id[q] for q in group.query_ids]
        groups.append(
            {
                "number": number,
                "kind": group.kind,
                "queries": members,
                "individual": catalog.individual(group.individual_id) if group.individual_id else None,
                "cover": next(iter(catalog.images(group.individual_id)), None) if group.individual_id else None,
                "cohesion": group.cohesion,
                "individual_probability": group.individual_probability,
                "settled": group.settled,
                "offered": _offered(members, group.individual_id, answers),
            }
        )
    return page(
        request,
        "groups.html",
        dataset=chosen,
        groups=[g for g in groups if g["kind"] != ALONE],
        alone=[g for g in groups if g["kind"] == ALONE],
        ungrouped=[query for query in waiting if query["id"] not in grouped] if pending or failure else [],
        failure=failure,
        counters=counters,
        regrouping=_regrouping(request, chosen),
        last=catalog.last_change(),
        done=_entry(catalog, done),
        undone=_entry(catalog, undone),
        here=groups_url(chosen),
        KNOWN=KNOWN,
    )


@router.post("/groups/regroup", dependencies=[Depends(require_reviewer)])
def regroup(request: Request, catalog: CatalogDep, dataset: Annotated[str, Form()]):
    """Group again from scratch (after a failure, or to take new catalogue photos into account)."""
    chosen = _dataset(catalog, dataset) or ""
    jobs = request.app.state.jobs
    with jobs.group_lock:
        jobs.grouping_failures.pop(chosen, None)
    job = jobs.request_grouping(chosen, next_url=groups_url(chosen))
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/groups/confirm", dependencies=[Depends(require_reviewer)])
def confirm(
    request: Request,
    catalog: CatalogDep,
    dataset: Annotated[str, Form()],
    query_ids: Annotated[list[int], Form()],
    target: Annotated[str, Form()],
    individual_id: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    notes: Annotated[str, Form()] = "",
):
    """File the group's photos (as the page showed them) under one individual, in one action."""
    if target not in ("new", "known"):
        raise HTTPException(400, f"target: '{clean_text(target, 20)}' is not one of new, known.")
    chosen = _dataset(catalog, dataset) or ""
    if target == "known" and not individual_id.strip():
        raise HTTPException(400, "individual: choose the known individual the photos show.")
    entry = confirm_group(
        catalog,
        query_ids,
        reviewer=reviewer_of(request),
        preset=request.app.state.config.preset,
        individual_id=individual_id.strip() if target == "known" else None,
        name=clean_text(name, 200),
        notes=clean_text(notes, 2000),
    )
    photos_filed(request, catalog, chosen, set(query_ids), regroup=True)
    return RedirectResponse(groups_url(chosen, done=entry["id"]), status_code=303)


@router.post("/groups/split", dependencies=[Depends(require_reviewer)])
def split(
    request: Request,
    catalog: CatalogDep,
    dataset: Annotated[str, Form()],
    query_ids: Annotated[list[int], Form()],
    moved: Annotated[list[int], Form()] = [],  # noqa: B006 - FastAPI copies defaults
):
    """Move the ticked photos out of a proposed group ("different" from the rest)."""
    chosen = _dataset(catalog, dataset) or ""
    if not moved:
        raise HTTPException(400, "split: tick the photos to move out of the group first.")
    jobs = request.app.state.jobs
    with jobs.group_lock:
        entry = split_group(catalog, dataset=chosen, moved=moved, kept=query_ids, reviewer=reviewer_of(request))
        _reapply(request, catalog, chosen)
    return RedirectResponse(groups_url(chosen, done=entry["id"]), status_code=303)


def _reapply(request: Request, catalog: Catalog, dataset: str) -> None:
    """The stored answers, applied again to the grouping held (call under group_lock)."""
    pending = request.app.state.jobs.grouping(dataset)
    if pending is not None:
        pending.apply_answers(pair_answers(catalog, dataset))


# ------------------------------------------------------------------------------------------------
# pair questions


@router.get("/pairs", response_class=HTMLResponse)
def pairs_page(
    request: Request, catalog: CatalogDep, dataset: str = "", answered: int | None = None, repeated: bool = False
):
    chosen = _dataset(catalog, dataset)
    if chosen is None:
        return RedirectResponse("/groups", status_code=303)
    found = _up_to_date(request, catalog, chosen)
    if isinstance(found, Response):
        return found
    pending, waiting, failure = found
    jobs = request.app.state.jobs
    question = None
    with jobs.group_lock:
        counters = _counters(catalog, pending, waiting, chosen)
        questions = pending.questions() if pending else []
        if questions:
            first = questions[0]
            labels = pending.grouping.clustering.labels
            members = {
                side: sorted(
                    pending.nodes[n] for n in range(pending.grouping.graph.queries) if labels[n] == labels[node]
                )
                for side, node in (("left", first.left), ("right", first.right))
            }
            question = {
                "left": pending.describe(first.left),
                "right": pending.describe(first.right),
                "probability": first.probability,
                "linkage": first.linkage,
                "kind": first.kind,
                "members": members,
            }
    context = {}
    if question is not None:
        by_id = {query["id"]: query for query in waiting}
        left = by_id[question["left"][1]]
        kind, other = question["right"]
        if kind == "query":
            right = {"query": by_id[other], "sha256": by_id[other]["sha256"]}
        else:
            right = {"individual": catalog.individual(other), "sha256": _photo_of(catalog, left, other)}
        context = {
            "left": left,
            "right": right,
            "left_group": [by_id[q] for q in question["members"]["left"] if q != left["id"]],
            "right_group": [by_id[q] for q in question["members"]["right"] if kind != "query" or q != other],
            "match_picture": match_pictures_available(get_preset(request.app.state.config.preset)),
        }
    return page(
        request,
        "pairs.html",
        dataset=chosen,
        question=question,
        counters=counters,
        failure=failure,
        answered=_entry(catalog, answered),
        repeated=repeated,
        last=catalog.last_change(),
        here=with_params("/pairs", dataset=chosen),
        **context,
    )


def _photo_of(catalog: Catalog, query: dict, individual_id: str) -> str | None:
    """The photo to show of a known individual beside a query: its best match to the query when
    the identification named one, else its first photo."""
    for candidate in (query["result"] or {}).get("candidates", []):
        if candidate["individual_id"] == individual_id and candidate.get("sha256"):
            return candidate["sha256"]
    photos = catalog.images(individual_id)
    return photos[0]["sha256"] if photos else None


@router.post("/pairs", dependencies=[Depends(require_reviewer)])
def answer(
    request: Request,
    catalog: CatalogDep,
    dataset: Annotated[str, Form()],
    left: Annotated[int, Form()],
    answer: Annotated[str, Form()],
    right_query: Annotated[int | None, Form()] = None,
    right_individual: Annotated[str, Form()] = "",
):
    """One answer: stored with who and when, and applied to the grouping at once. A pair already
    answered is not stored again (``changes.answer_pair``): the same answer is shown as given
    already, and the opposite one refused (409) until the first is undone."""
    if answer not in ANSWERS:
        raise HTTPException(400, f"answer: '{clean_text(answer, 20)}' is not one of {', '.join(ANSWERS)}.")
    chosen = _dataset(catalog, dataset) or ""
    jobs = request.app.state.jobs
    stale = (
        "The waiting photos were regrouped since this question was shown (photos filed, or undone); "
        "open the next question again."
    )
    with jobs.group_lock:
        pending = jobs.grouping(chosen)
        waiting = frozenset(query["id"] for query in pending_queries(catalog, chosen))
        if pending is None or pending.grouping is None or frozenset(pending.query_ids) != waiting:
            raise HTTPException(409, stale)
        left_node = pending.node_of_query(left)
        right_node = (
            pending.node_of_query(right_query)
            if right_query is not None
            else pending.node_of_individual(right_individual)
        )
        if left_node is None or right_node is None or left_node == right_node:
            raise HTTPException(409, stale)
        probability = pending.probability(left_node, right_node)
        settled = pending.answer(left_node, right_node, answer)
        try:
            entry = answer_pair(
                catalog,
                dataset=chosen,
                query_id=left,
                other_query_id=right_query,
                individual_id=(right_individual.strip() or None) if right_query is None else None,
                answer=answer,
                reviewer=reviewer_of(request),
                probability=probability,
                settled=settled,
            )
        except BaseException:
            _reapply(request, catalog, chosen)  # the answer was not stored: nor is it applied
            raise
        if entry["repeated"]:
            _reapply(request, catalog, chosen)  # nothing new was stored: the stored answers hold
    if not entry["repeated"]:
        jobs.maybe_learn()  # every so many answers the gallery learns from them, in the background
    return RedirectResponse(
        with_params("/pairs", dataset=chosen, answered=entry["id"], repeated=1 if entry["repeated"] else None),
        status_code=303,
    )


@router.get("/pairs/match/{left}/{right}.png")
def pair_match_png(request: Request, left: str, right: str, catalog: CatalogDep):
    """The keypoint matches of two photos (by content hash), with the preset's local method."""
    if not (SHA256_PATTERN.fullmatch(left) and SHA256_PATTERN.fullmatch(right)):
        raise HTTPException(404, "No such photo.")
    # Only what a question shows: a waiting photo on the left (drawing is CPU-heavy, and
    # anyone may look at the pages).
    if not any(query["sha256"] == left for query in catalog.queries(status=list(PENDING), limit=1_000_000)):
        raise HTTPException(404, "No keypoint-match picture for these photos.")
    config = request.app.state.config
    left_file, right_file = catalog.stored_file(left), catalog.stored_file(right)
    picture = (
        match_picture(
            left_file,
            right_file,
            preset=get_preset(config.preset),
            cache_dir=config.cache_dir or catalog_cache_dir(config.catalog),
        )
        if left_file is not None and right_file is not None
        else None
    )
    if picture is None:
        raise HTTPException(404, "No keypoint-match picture for these photos.")
    return evidence_png(picture)


# ------------------------------------------------------------------------------------------------
# individuals: merge and split


MERGE_CHOICES = 60  # individuals listed to choose from; the search narrows them down
PHOTOS_SIDE_BY_SIDE = 6  # photos of each individual shown side by side before a merge


@router.get("/merge", response_class=HTMLResponse)
def merge_picker(request: Request, catalog: CatalogDep, keep: str, absorb: str = "", q: str = ""):
    """Choose the individual to merge into ``keep`` from a list (searchable by id or name), then
    see the two side by side before merging: no id typed by hand."""
    kept = catalog.individual(keep)
    if kept is None:
        raise HTTPException(404, f"individual '{clean_text(keep, 200)}' does not exist (merged or undone since?).")
    q = clean_text(q, 200)
    choices = [
        found
        for found in catalog.individuals(q, limit=MERGE_CHOICES + 1)
        if found["id"] != kept["id"] and found["dataset"] == kept["dataset"]
    ]
    other = catalog.individual(absorb) if absorb else None
    if absorb and other is None:
        raise HTTPException(404, f"individual '{clean_text(absorb, 200)}' does not exist; choose one from the list.")
    return page(
        request,
        "merge.html",
        keep=kept,
        keep_photos=catalog.images(kept["id"])[:PHOTOS_SIDE_BY_SIDE],
        absorb=other,
        absorb_photos=catalog.images(other["id"])[:PHOTOS_SIDE_BY_SIDE] if other else [],
        choices=choices[:MERGE_CHOICES],
        more=len(choices) > MERGE_CHOICES,
        q=q,
    )


@router.post("/merge", dependencies=[Depends(require_admin)])
def merge(request: Request, catalog: CatalogDep, keep: Annotated[str, Form()], absorb: Annotated[str, Form()]):
    entry = merge_individuals(catalog, keep.strip(), clean_text(absorb, 200), reviewer=reviewer_of(request))
    _catalogue_changed(request, entry["dataset"])
    return RedirectResponse(f"/individuals/{url_part(keep.strip())}?done={entry['id']}", status_code=303)


@router.post("/split", dependencies=[Depends(require_reviewer)])
def split_one(
    request: Request,
    catalog: CatalogDep,
    individual_id: Annotated[str, Form()],
    image_ids: Annotated[list[int], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    name: Annotated[str, Form()] = "",
):
    entry = split_individual(
        catalog, individual_id, image_ids, reviewer=reviewer_of(request), name=clean_text(name, 200)
    )
    _catalogue_changed(request, entry["dataset"])
    return RedirectResponse(f"/individuals/{url_part(entry['individual_id'])}?done={entry['id']}", status_code=303)


def _catalogue_changed(request: Request, dataset: str | None) -> None:
    """The known individuals changed: the dataset's grouping (whose graph names them) is rebuilt."""
    if dataset:
        request.app.state.jobs.invalidate(dataset)


# ------------------------------------------------------------------------------------------------
# history and undo


@router.get("/history", response_class=HTMLResponse)
def history(request: Request, catalog: CatalogDep, undone: int | None = None):
    entries = catalog.history(limit=200)
    return page(
        request,
        "history.html",
        entries=entries,
        last=catalog.last_change(),
        undone=_entry(catalog, undone),
        here="/history",
    )


@router.post("/undo", dependencies=[Depends(require_undo_right)])
def undo(
    request: Request,
    catalog: CatalogDep,
    expected: Annotated[int, Form()],
    next: Annotated[str, Form()] = "/history",
):
    """Undo the last change, if it is still the one the reviewer saw."""
    jobs = request.app.state.jobs
    with jobs.group_lock:
        entry = undo_last(catalog, reviewer=reviewer_of(request), expected=expected)
        if entry["dataset"]:
            if entry["action"] in ("answer", "split_group"):
                _reapply(request, catalog, entry["dataset"])  # only constraints changed
            elif entry["action"] != "edit":
                jobs.invalidate(entry["dataset"])  # photos or individuals changed: regroup
    return RedirectResponse(with_params(safe_next(next), undone=entry["id"], done=None), status_code=303)
