"""The catalogue's photos as a gallery, and answers as the catalogue stores them.

The gallery is kept beside the catalogue (``<catalogue>.cache/gallery-<preset>``) and brought up
to date before each use: photos added since (imports, reviewers' confirmations) are appended
without refitting; a photo removed or moved to another individual means a rebuild. The review
service (service.py) keeps the returned gallery in memory and passes it back in.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from wildreid.catalog.dataset import PREFIX, catalog_image_id, catalog_photos, query_table
from wildreid.catalog.store import Catalog, CatalogError
from wildreid.describe.backbones import Backbone, load_backbone
from wildreid.describe.extract import default_device
from wildreid.describe.input_size import read_at_input_size
from wildreid.gallery.gallery import ALL, Gallery, GalleryError
from wildreid.gallery.guard_rails import thin_evidence_notes
from wildreid.gallery.result import IdentifyResult
from wildreid.presets import Preset
from wildreid.review.descriptors import prepare_descriptors
from wildreid.util.lock import exclusive

log = logging.getLogger(__name__)


def catalog_cache_dir(catalog_path: str | Path) -> Path:
    """The catalogue's own cache (descriptors, pictures), beside it: derived data, safe to delete."""
    catalog_path = Path(catalog_path)
    return catalog_path.with_name(catalog_path.name + ".cache")


def catalog_gallery_folder(cache_dir: str | Path, preset: Preset) -> Path:
    """Where the catalogue's gallery of ``preset`` is kept."""
    return Path(cache_dir) / f"gallery-{preset.name}"


def catalog_gallery(
    catalog: Catalog,
    preset: Preset,
    *,
    backbone: Backbone,
    cache_dir: str | Path,
    gallery: Gallery | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Gallery:
    """The catalogue's photos as a gallery, up to date: ``gallery`` (one kept in memory), else the
    saved one, else a new one; saved again when it changed."""
    folder = catalog_gallery_folder(cache_dir, preset)
    # Read before the photos: a change made in between shows as a new signature next time.
    signature = catalog.images_signature()
    if gallery is not None and len(gallery.table) and gallery.catalog_signature == signature:
        # The per-upload fast path: the same count, newest id and number of photo changes as
        # when the gallery was last brought up to date mean nothing to do (one aggregate query,
        # not 3,776 rows).
        return gallery
    gallery = _synced(catalog, preset, backbone, cache_dir, folder, gallery, progress)
    gallery.catalog_signature = signature
    return gallery


def _synced(catalog, preset, backbone, cache_dir, folder, gallery, progress) -> Gallery:
    images = catalog.images()  # one query: the check below must stay cheap, it runs per upload
    if not images:
        raise CatalogError(f"{catalog.path}: the catalogue has no photos yet; add some with `wildreid catalog import`.")
    # Held from the read to the write: a second process on the same catalogue (the web app and
    # `watch --catalog` run side by side) would otherwise save its own version over this one's.
    # It waits rather than fails: both keep the same derived gallery up to date, and the one that
    # waits then adds only what the other did not.
    with exclusive(folder, "the catalogue's gallery", wait=log.warning):
        if gallery is None and (folder / "gallery.json").is_file():
            try:
                gallery = Gallery.load(folder, backbone=backbone, preset=preset.name)
            except GalleryError:
                gallery = None  # built by another wildreid or descriptor, or damaged: rebuilt below
        if gallery is not None:
            held = dict(zip(gallery.table["image_id"], zip(gallery.table["identity"], gallery.table["sha256"])))
            current = {f"{PREFIX}{image['id']}": (image["individual_id"], image["sha256"]) for image in images}
            # An undone confirmation deletes photos, and SQLite may hand their ids out again: the
            # content hash tells a reused id from the photo the gallery holds.
            if any(current.get(image_id) != held_as for image_id, held_as in held.items()):
                gallery = None  # a photo left the catalogue or changed individual: refit from scratch
            else:
                images = [image for image in images if f"{PREFIX}{image['id']}" not in held]
                if not images:
                    if gallery.file_notes:  # saved by an earlier wildreid: record its checksums now
                        gallery.save(folder)
                    return gallery
        photos = catalog_photos(catalog, images)
        report = (lambda done, total: progress("describing catalogue photos", done, total)) if progress else None
        if gallery is None:
            # The size the pictures are read at is chosen from the catalogue's photos when its
            # gallery is built, and kept as it grows (Gallery.load reads it back); the shared
            # model itself is not changed.
            sized = read_at_input_size(dataclasses.replace(backbone), preset.input_size, photos, preset.region_margin)
            prepare_descriptors(catalog, sized, cache_dir, progress=report)
            gallery = Gallery.build(photos, preset, backbone=sized, cache_dir=cache_dir, progress=False)
        else:
            prepare_descriptors(catalog, gallery.backbone, cache_dir, progress=report)
            gallery.add(photos, cache_dir=cache_dir, progress=False)
        gallery.save(folder)
    return gallery


def identify_with_catalog(
    catalog: Catalog,
    query_paths: Sequence[str | Path],
    preset: Preset,
    *,
    query_ids: Sequence[str] | None = None,
    dataset: str | None = None,
    backbone: Backbone | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IdentifyResult:
    """`wildreid catalog identify`: rank the catalogue's individuals for each query photo, with
    the review service (nothing filed or stored). ``progress(stage, done, total)``."""
    from wildreid.review.service import ReviewService  # the service builds on this module

    queries = query_table(catalog, query_paths, query_ids=query_ids, dataset=dataset)
    backbone = backbone or load_backbone(
        preset.backbone, preprocess=preset.preprocess, device=device or default_device()
    )
    service = ReviewService(preset, backbone=backbone, cache_dir=cache_dir or catalog_cache_dir(catalog.path))
    return service.identify(catalog, queries, progress=progress).result


def candidates_of(result: IdentifyResult, catalog: Catalog) -> list[dict]:
    """Per query (in order): the prediction and its ranked candidates as plain JSON-able data,
    each candidate with its best-matching catalogue photo."""
    answers = []
    for position, image_id in enumerate(result.queries["image_id"]):
        candidates = []
        for rank, (identity, score, match) in enumerate(result.ranking.candidates(position), start=1):
            catalogued = catalog_image_id(match)
            image = catalog.image(catalogued) if catalogued is not None else None
            candidates.append(
                {
                    "rank": rank,
                    "individual_id": identity,
                    "score": score,
                    "image_id": image["id"] if image else None,
                    "sha256": image["sha256"] if image else None,
                }
            )
        threshold = result.query_thresholds[position]
        error = result.errors[position]
        answers.append(
            {
                "image_id": image_id,
                "prediction": result.prediction[position],
                "threshold": None if pd.isna(threshold) else float(threshold),
                "flags": "unreadable_image" if error else "",
                "error": error,
                "preset": result.preset.name,
                "candidates": candidates,
                # what the reviewer should know about how far to trust these scores
                "warnings": thin_evidence_notes(result.notes, str(result.queries["dataset"].iloc[position]))
                + thin_evidence_notes(result.notes, ALL),
            }
        )
    return answers
