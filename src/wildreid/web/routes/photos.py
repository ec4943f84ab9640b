"""Stored photos, by content hash, and the health check."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from wildreid.catalog.photos import SHA256_PATTERN
from wildreid.web.pages import CatalogDep

router = APIRouter()
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tif": "image/tiff", "bmp": "image/bmp"}


@router.get("/photos/{sha256}")
def photo(sha256: str, catalog: CatalogDep):
    # Only a content hash is accepted, and the file is looked up in the database: nothing
    # from the URL ever becomes part of a file path.
    if not SHA256_PATTERN.fullmatch(sha256):
        raise HTTPException(404, "No such photo.")
    path = catalog.stored_file(sha256)
    if path is None or not path.is_file():
        raise HTTPException(404, "No such photo.")
    return FileResponse(
        path, media_type=MEDIA_TYPES[path.suffix[1:]], headers={"Cache-Control": "private, max-age=31536000, immutable"}
    )


@router.get("/healthz")
def health(catalog: CatalogDep):
    return {"ok": True, "schema_version": catalog.schema_version}
