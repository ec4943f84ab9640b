"""The start page, uploading photos, and following their identification job."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from wildreid.catalog.store import Catalog
from wildreid.data.images import read_photo_place
from wildreid.web.jobs import Job, new_job_id
from wildreid.web.pages import CatalogDep, grouped_with_others, groups_url, page
from wildreid.web.security import UploadRejected, check_photo, clean_text, display_name, require_reviewer, reviewer_of

router = APIRouter()
JOB_ID = re.compile(r"[0-9a-f]{16}")


@router.get("/", response_class=HTMLResponse)
def home(request: Request, catalog: CatalogDep):
    return page(
        request,
        "home.html",
        datasets=catalog.datasets(),
        sites=[site["name"] for site in catalog.sites()],
        counts=catalog.counts(),
        waiting=catalog.queries(status=["ready", "failed", "skipped", "queued"]),
    )


@router.post("/uploads", dependencies=[Depends(require_reviewer)])
def upload(
    request: Request,
    catalog: CatalogDep,
    photos: Annotated[list[UploadFile], File(description="one or more photos")],
    dataset: Annotated[str, Form()] = "",
    sighting_date: Annotated[str, Form()] = "",
    location: Annotated[str, Form()] = "",
):
    config = request.app.state.config
    if len(photos) > config.max_files:
        raise HTTPException(
            400,
            f"photos: {len(photos)} files in one upload; the limit is "
            f"{config.max_files}. Upload them in smaller batches.",
        )
    dataset = _chosen_dataset(catalog, dataset)
    checked_date = _checked_date(sighting_date)
    job = Job(new_job_id(), [], dataset=dataset)
    for photo in photos:
        label = display_name(photo.filename)
        data = photo.file.read(config.max_upload_bytes + 1)  # +1: enough to see it is too big
        try:
            extension = check_photo(data, label, max_bytes=config.max_upload_bytes, max_pixels=config.max_pixels)
        except UploadRejected as error:
            job.rejected.append(str(error))
            continue
        # Each photo's own EXIF time and GPS come first: a batch spans days and sites. The typed
        # date and place are for the photos whose camera did not record them.
        camera = read_photo_place(data)
        query = catalog.add_query(
            data,
            extension,
            dataset=dataset,
            original_name=label,
            sighting_date=checked_date if camera.capture_time is None else None,
            location=clean_text(location, 200) if camera.latitude is None else None,
            uploaded_by=reviewer_of(request),
            job_id=job.id,
        )
        job.query_ids.append(query["id"])
    if not job.query_ids:
        raise HTTPException(400, "No photo accepted. " + " ".join(job.rejected))
    job.total = len(job.query_ids)
    request.app.state.jobs.submit(job)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def job_state(request: Request, catalog: Catalog, job_id: str) -> dict:
    if not JOB_ID.fullmatch(job_id):
        raise HTTPException(404, "No such upload job.")
    queries = catalog.queries(job_id=job_id, limit=10_000)
    job = request.app.state.jobs.get(job_id)
    if job is None and not queries:
        raise HTTPException(
            404,
            "No such upload job (it may have been forgotten after a restart; its photos are listed on the home page).",
        )
    state = (
        job.to_dict()
        if job
        else {
            "id": job_id,
            "status": "queued" if any(q["status"] == "queued" for q in queries) else "done",
            "stage": "",
            "done": 0,
            "total": len(queries),
            "error": "",
            "rejected": [],
        }
    )
    state["queries"] = [
        {"id": q["id"], "status": q["status"], "name": q["original_name"], "url": f"/review/{q['id']}"} for q in queries
    ]
    finished = state["status"] in ("done", "failed")
    if job is not None and job.kind == "group":
        state["next_url"] = job.next_url if finished else None
        return state
    ready = [q for q in queries if q["status"] in ("ready", "failed")]
    state["next_url"] = None
    if finished and queries:
        # Photos the grouping put together with others are reviewed as groups; else one by one.
        dataset = queries[0]["dataset"]
        if grouped_with_others(request, dataset, {q["id"] for q in queries}):
            state["next_url"] = groups_url(dataset)
        elif ready:
            state["next_url"] = f"/review/{ready[0]['id']}"
    return state


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, catalog: CatalogDep):
    return page(request, "job.html", job=job_state(request, catalog, job_id))


@router.get("/api/jobs/{job_id}")
def job_api(request: Request, job_id: str, catalog: CatalogDep):
    return job_state(request, catalog, job_id)


def _chosen_dataset(catalog: Catalog, dataset: str) -> str:
    known = catalog.datasets()
    if not known:
        raise HTTPException(
            400, "The catalogue is empty: import photos of known individuals first (wildreid catalog import)."
        )
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
        raise HTTPException(400, f"sighting date: '{clean_text(text, 40)}' is not a date; use YYYY-MM-DD.") from None
