"""The review service: identification against a catalogue, one flow for the web app, `watch`
and `catalog identify`.

``ReviewService.identify`` is, in this order, what each of them needs of:

1. sync: the catalogue's gallery brought up to date (``catalog_gallery``), so photos reviewers
   confirmed are matched from the next call on;
2. file: the photos stored in the catalogue as queries waiting for review (``file_as``: `watch`;
   the web app's upload request has filed its photos already and passes their ``query_ids``);
3. identify: every photo described, ranked and decided, once;
4. store: each filed photo's result (its candidates) stored with it.

``ReviewService.group`` groups a dataset's waiting photos; with ``keep_waiting`` the service
keeps what identify computed for each filed photo and the grouping reuses it (waiting.py), so an
upload costs the same however many photos wait for review. The service holds the gallery between
calls: the web app keeps one for the server's life, `watch` one per run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wildreid.catalog.changes import answers_in_force
from wildreid.catalog.photos import sniff_image_type
from wildreid.catalog.store import Catalog
from wildreid.describe.backbones import Backbone
from wildreid.gallery.gallery import Gallery
from wildreid.gallery.queries import ranking_depth, ranking_rows
from wildreid.gallery.result import IdentifyResult
from wildreid.presets import Preset
from wildreid.review.identify import candidates_of, catalog_gallery, catalog_gallery_folder, log
from wildreid.review.learning import answered_waiting_photos
from wildreid.review.pending import PendingGrouping, group_pending
from wildreid.review.waiting import WaitingPhotos
from wildreid.util.lock import exclusive

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Identified:
    result: IdentifyResult
    query_ids: list[int] = field(default_factory=list)  # the photos' queries in the catalogue (filed ones)
    answers: list[dict] = field(default_factory=list)  # per filed photo: the result stored with it


class ReviewService:
    def __init__(
        self,
        preset: Preset,
        *,
        backbone: Backbone,
        cache_dir: str | Path,
        gallery: Gallery | None = None,
        loader_workers: int | None = None,
        keep_waiting: bool = False,
    ):
        """``gallery``: the catalogue's, already loaded (brought up to date at the first sync);
        ``loader_workers``: image-loading processes per extraction (0 in a server's threads,
        where forking is unsafe); ``keep_waiting``: keep what grouping the filed photos needs."""
        self.preset, self.backbone, self.cache_dir = preset, backbone, Path(cache_dir)
        self.gallery, self.loader_workers = gallery, loader_workers
        self.waiting: dict[str, WaitingPhotos] | None = {} if keep_waiting else None  # per dataset

    def sync(self, catalog: Catalog, progress: Progress | None = None) -> Gallery:
        """The catalogue's gallery, brought up to date (a no-op when no photo changed)."""
        self.gallery = catalog_gallery(
            catalog,
            self.preset,
            backbone=self.backbone,
            cache_dir=self.cache_dir,
            gallery=self.gallery,
            progress=progress,
        )
        self.gallery.loader_workers = self.loader_workers
        return self.gallery

    def learn(self, catalog: Catalog) -> Gallery:
        """A new gallery object: the catalogue's saved gallery refitted with what the reviewers'
        answers in force teach its adapter (learning.py), saved, and returned for ``install``.
        Works on its own copy, so uploads go on with the gallery in memory meanwhile; holds the
        gallery's lock from the read to the write, as every writer of it does."""
        folder = catalog_gallery_folder(self.cache_dir, self.preset)
        answers = answers_in_force(catalog)  # read first: answers given meanwhile count next time
        photos = answered_waiting_photos(catalog)
        with exclusive(folder, "the catalogue's gallery", wait=log.warning):
            gallery = Gallery.load(folder, backbone=self.backbone, preset=self.preset.name)
            gallery.loader_workers = self.loader_workers
            _, unreadable = gallery.teach(photos, cache_dir=self.cache_dir)
            for path, reason in unreadable.items():
                log.warning("learning from answers: %s left out, unreadable (%s)", path, reason)
            gallery.refit()
            gallery.learned_answers = answers
            gallery.save(folder)
        return gallery

    def install(self, gallery: Gallery) -> None:
        """Answer with ``gallery`` from the next call on (one assignment: a call under way keeps
        the gallery it started with). It is brought up to date with the catalogue at the next
        sync, which adds any photo filed while it was refitted."""
        gallery.loader_workers = self.loader_workers
        self.gallery = gallery

    def identify(
        self,
        catalog: Catalog,
        queries: pd.DataFrame,
        *,
        file_as: str | None = None,
        query_ids: list[int] | None = None,
        cache_queries: bool = True,
        sync: bool = True,
        progress: Progress | None = None,
    ) -> Identified:
        """Sync, file, identify and store ``queries`` (image_id, path, dataset; see
        ``catalog.dataset.query_table``). ``file_as``: file each photo as a query uploaded by this
        name; ``query_ids``: the photos' queries, filed already; neither: nothing is stored.
        ``cache_queries=False``: the photos' descriptors are not looked up in or written to the
        embedding cache (an upload is new: reading the whole cache would cost more than describing
        it). ``sync=False``: the caller brought the gallery up to date already."""
        if sync or self.gallery is None:
            self.sync(catalog, progress)
        if file_as is not None:
            query_ids = [_file(catalog, path, name, dataset, file_as) for path, name, dataset in _rows(queries)]
        if progress:
            progress("identifying", 0, len(queries))
        gallery = self.gallery
        photos = gallery.describe(queries, cache_dir=self.cache_dir if cache_queries else None, progress=False)
        depth = ranking_depth(gallery.preset.top_k, gallery.grouping_method())
        ranked = gallery.rank(photos, depth)
        result = gallery.answer(photos, ranked)
        if progress:
            progress("identifying", len(queries), len(queries))
        if not query_ids:
            return Identified(result)
        answers = candidates_of(result, catalog)
        for query_id, answer in zip(query_ids, answers):
            catalog.set_query_result(query_id, answer, error=answer["error"] or None)
        if self.waiting is not None:
            self._remember(catalog, query_ids, photos, ranked, (gallery.state, depth))
        return Identified(result, list(query_ids), answers)

    def _remember(self, catalog: Catalog, query_ids: list[int], photos, ranked, ranked_for: tuple) -> None:
        """Keep what grouping these filed photos needs, per dataset (see waiting.py)."""
        hashes = [catalog.query(query_id)["sha256"] for query_id in query_ids]
        ids = list(zip(photos.table["image_id"].astype(str), hashes))
        datasets = photos.table["dataset"].tolist()
        for dataset in dict.fromkeys(datasets):
            rows = [row for row, value in enumerate(datasets) if value == dataset]
            self.waiting.setdefault(dataset, WaitingPhotos()).remember(
                [ids[row] for row in rows], photos.take(rows), ranking_rows(ranked, rows), ranked_for
            )

    def group(self, catalog: Catalog, dataset: str) -> PendingGrouping:
        """Group the waiting photos of ``dataset`` against the gallery, brought up to date first."""
        self.sync(catalog)
        memory = self.waiting.setdefault(dataset, WaitingPhotos()) if self.waiting is not None else None
        return group_pending(catalog, self.gallery, dataset, cache_dir=self.cache_dir, memory=memory)


def _rows(queries: pd.DataFrame):
    return zip(queries["path"], queries["image_id"], queries["dataset"])


def _file(catalog: Catalog, path, name: str, dataset: str, uploaded_by: str) -> int:
    """Store one photo as a query waiting for review; its id."""
    data = Path(path).read_bytes()
    kind = sniff_image_type(data) or Path(path).suffix.lstrip(".").lower()
    return catalog.add_query(data, kind, dataset=dataset, original_name=name, uploaded_by=uploaded_by)["id"]
