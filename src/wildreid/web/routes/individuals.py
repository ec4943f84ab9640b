"""Browsing individuals: the searchable list, one individual's gallery, renaming."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup

from wildreid.catalog.changes import entry_details, merged_into
from wildreid.web.maps import MapPoint, sightings_svg, tile_origin
from wildreid.web.pages import CatalogDep, page, url_part, when
from wildreid.web.security import clean_text, require_reviewer, reviewer_of

router = APIRouter()
INDIVIDUALS_SHOWN = 200  # per list page; the search narrows it down


@router.get("/individuals", response_class=HTMLResponse)
def individuals(request: Request, catalog: CatalogDep, q: str = ""):
    q = clean_text(q, 200)
    found = catalog.individuals(q, limit=INDIVIDUALS_SHOWN + 1)
    return page(
        request, "individuals.html", q=q, individuals=found[:INDIVIDUALS_SHOWN], more=len(found) > INDIVIDUALS_SHOWN
    )


@router.get("/individuals/{individual_id:anytext}", response_class=HTMLResponse)
def individual(
    request: Request,
    individual_id: str,
    catalog: CatalogDep,
    added: int | None = None,
    done: int | None = None,
    undone: int | None = None,
):
    found = catalog.individual(individual_id)
    if found is None:
        merge = merged_into(catalog, individual_id)
        if merge is not None:
            raise HTTPException(
                404,
                f"{individual_id} was merged into {merge['into'] or 'another individual'} by {merge['reviewer']} "
                f"at {when(merge['made_at'])} (history #{merge['id']}; undoing that merge brings it back).",
            )
        raise HTTPException(404, "No such individual.")
    decisions = {d["image_id"]: d for d in catalog.decisions(individual_id=individual_id)}
    photos = [{**image, "decision": decisions.get(image["id"])} for image in catalog.images(individual_id)]
    here = f"/individuals/{url_part(individual_id)}"
    points = _map_points(photos)
    return page(
        request,
        "individual.html",
        individual=found,
        photos=photos,
        added=added,
        done=entry_details(catalog.history_entry(done)) if done else None,
        undone=entry_details(catalog.history_entry(undone)) if undone else None,
        last=catalog.last_change(),
        here=here,
        sightings_map=Markup(sightings_svg(points, tiles=request.app.state.config.map_tiles)),
        unplaced=len(photos) - len(points),
        map_tiles=tile_origin(request.app.state.config.map_tiles) if request.app.state.config.map_tiles else "",
    )


def _map_points(photos: list[dict]) -> list[MapPoint]:
    """A point per photo with a position: its own (EXIF GPS or typed), else its site's."""
    points = []
    for photo in photos:
        latitude, longitude = photo["latitude"], photo["longitude"]
        if latitude is None or longitude is None:
            latitude, longitude = photo["site_latitude"], photo["site_longitude"]
        if latitude is None or longitude is None:
            continue
        when = f"seen {photo['sighting_date']}" if photo["sighting_date"] else "date not recorded"
        where = f" at {photo['location']}" if photo["location"] else ""
        points.append(MapPoint(latitude, longitude, f"photo #{photo['id']}: {when}{where}"))
    return points


@router.post("/individuals/{individual_id:anytext}", dependencies=[Depends(require_reviewer)])
def edit_individual(
    request: Request,
    individual_id: str,
    catalog: CatalogDep,
    name: Annotated[str, Form()] = "",
    notes: Annotated[str, Form()] = "",
):
    catalog.update_individual(
        individual_id, name=clean_text(name, 200), notes=clean_text(notes, 2000), reviewer=reviewer_of(request)
    )
    return RedirectResponse(f"/individuals/{url_part(individual_id)}", status_code=303)
