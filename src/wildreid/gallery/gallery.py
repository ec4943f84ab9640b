"""The gallery: the database side of identification, fitted once, saved, and grown in place.

    gallery = Gallery.build(dataset, get_preset("fusion"), cache_dir=...)   # descriptors, index, fit
    gallery.save("herd.gallery")
    gallery = Gallery.load("herd.gallery")
    result = gallery.identify(query_table)       # pays only for the queries
    gallery.add(new_photos)                      # appended; refitted when grown by REFIT_GROWTH

Every front end (``wildreid identify``, ``identify --gallery``, ``watch``, the catalogue and the
web app, the benchmarks) goes through this object; ``pipeline.identify`` is ``build`` then
``identify`` on the same dataset. Over 600 lines: it is the one object of that life cycle (build,
add, teach, refit, describe, rank, answer, save, load); the work of each step lives in the modules
it calls (part.py, adaptation.py, queries.py, storage.py).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd

from wildreid.data.dataset import DATABASE, Dataset
from wildreid.data.regions import BBOX, REGION_SOURCE, SEGMENTATION, Region, region_keys, regions_of
from wildreid.data.views import known_views, photo_views
from wildreid.decide.cluster import METHODS as GROUPING_METHODS
from wildreid.decide.grouping import Grouping
from wildreid.decide.ranking import IdentityRanking
from wildreid.describe.backbones import Backbone, load_backbone
from wildreid.describe.extract import Extraction, default_device, extract_embeddings
from wildreid.describe.foreground import table_regions
from wildreid.describe.input_size import at_size, read_at_input_size
from wildreid.describe.mirror import MirroredMethod, mirrored_backbone
from wildreid.describe.trained import TrainedOn, trained_on
from wildreid.gallery.errors import GalleryError
from wildreid.gallery.guard_rails import thin_evidence
from wildreid.gallery.index import VectorIndex, normalize
from wildreid.gallery.part import DatasetPart, PartFit, Side, Taught
from wildreid.gallery.queries import (
    FITTED,
    QueryPhotos,
    answer_queries,
    failure_table,
    group_photos,
    rank_queries,
    ranking_depth,
)
from wildreid.gallery.query_pairs import PairMemory
from wildreid.gallery.result import IdentifyResult
from wildreid.gallery.storage import (
    FORMAT_VERSION,
    RECORD,
    check_keypoint_methods,
    read_part,
    read_record,
    read_tables,
    reading,
    record_preset,
    verify_files,
    write_gallery,
)
from wildreid.local.base import LocalFeatures, get_method
from wildreid.local.cache import local_features
from wildreid.local.lnbnn import KeypointIndex
from wildreid.presets import Preset, require_weights

# A group's calibration and threshold are refitted when it has grown by this fraction since they
# were fitted: a quarter more photos (e.g. 400 -> 500) shifts the simulated open set enough to
# matter; below it, refitting on every addition would make each confirmation cost a full fit.
REFIT_GROWTH = 0.25
NEAR_DUPLICATE_COLUMNS = ("clip", "video", "date")
MIN_HELD_OUT_IMAGES = 10  # fewer held-out photos than this cannot calibrate anything
ALL = "all"  # the one group when queries may match any dataset
_SERIALS = itertools.count()  # numbers each Gallery object of this process (see Gallery.state)


class Gallery:
    def __init__(
        self,
        preset: Preset,
        backbone: Backbone,
        table: pd.DataFrame,
        groups: dict[str, DatasetPart],
        *,
        failures: pd.DataFrame | None = None,
        timings: dict | None = None,
    ):
        self.preset, self.backbone = preset, backbone
        # image_id, identity, dataset, group, path, sha256, near_duplicate, bbox, segmentation,
        # region_source (the last three empty for whole photos; regions.py), view (views.py)
        self.table = table
        for column in (BBOX, SEGMENTATION, REGION_SOURCE, "view"):
            if column not in self.table:  # a gallery saved before regions (or views) were kept
                self.table[column] = None
        self.groups = groups
        self.failures = failures if failures is not None else _no_failures()
        self.timings = timings or {}
        self.method = get_method(preset.local, **preset.local_options) if preset.local else None
        self.extra_methods = {name: get_method(name) for name in preset.extra_local}
        # Image-loading processes per extraction (None: extract.py's default); 0 in a server's
        # threads, where forking is unsafe.
        self.loader_workers: int | None = None
        # The catalogue's images_signature() when a catalogue last brought this gallery up to
        # date (catalog/identify.py); None: not known, compare photo by photo.
        self.catalog_signature: tuple | None = None
        self.serial, self.revision = next(_SERIALS), 0  # see state
        # What a user should know about the files it was loaded from (storage.verify_files).
        self.file_notes: list[str] = []
        # How many reviewers' answers the catalogue held when it last taught this gallery
        # (review/service.py's learn); saved, so a restarted server knows how many are new.
        self.learned_answers = 0

    @property
    def state(self) -> tuple[int, int]:
        """Changes whenever the answers to a query may: another gallery object, or photos added
        or refitted in this one. Rankings made against one state hold for as long as it does."""
        return self.serial, self.revision

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        database: Dataset | pd.DataFrame,
        preset: Preset,
        *,
        backbone: Backbone | None = None,
        cache_dir=None,
        device: str | None = None,
        progress: bool = True,
    ) -> "Gallery":
        """Describe the labelled photos (rows with split 'database' of a Dataset, or a table of
        image_id, identity, path[, dataset, clip/date]) and fit every group."""
        started = time.perf_counter()
        table = database.database if isinstance(database, Dataset) else database
        if backbone is None:
            backbone = preset_backbone(preset, table, device)
        # A model given in place of the preset's, or read at a size chosen for these photos: the
        # gallery says which, and describes its queries the same way.
        if backbone.name != preset.backbone or preset.input_size is not None:
            preset = preset.replace(backbone=backbone.name, preprocess=backbone.preprocess)
        gallery = cls(preset, backbone, _empty_table(), {})
        gallery.timings["load_backbone_s"] = time.perf_counter() - started
        gallery.add(table, cache_dir=cache_dir, progress=progress, refit=True)
        gallery.timings["build_s"] = time.perf_counter() - started
        return gallery

    def add(self, photos: pd.DataFrame, *, cache_dir=None, progress: bool = True, refit: bool | None = None) -> dict:
        """Append labelled photos (image_id, identity, path[, dataset, clip/date]) to the index
        and keypoints without refitting. A group that is new, or has grown by REFIT_GROWTH since
        its fit, is (re)fitted; ``refit=True`` refits every group touched, ``False`` only new
        ones (a group cannot answer before its first fit).
        Photos already in the gallery (same bytes, same group) are skipped. Returns counts."""
        self.revision += 1
        photos = _with_group(photos.reset_index(drop=True), self.preset.same_dataset_only)
        if photos["identity"].isna().any() or (photos["identity"].astype(str).str.strip() == "").any():
            rows = photos.index[photos["identity"].isna()].tolist()[:5]
            raise GalleryError(f"photos without an identity (rows {rows}): only labelled photos join a gallery.")
        photos, regions = self._regions(photos, cache_dir, progress, self.timings)
        extraction = self._describe_database(photos, regions, cache_dir, progress)
        photos["sha256"] = extraction.hashes
        failed = failure_table(photos, extraction.failures, DATABASE)
        self.failures = pd.concat([self.failures, failed], ignore_index=True) if len(failed) else self.failures
        # The same photo (bytes) with the same region is already in the gallery: skipped. Two
        # detections in one photo are two regions, so both stay.
        keys = extraction.keys
        known = set(zip(self.table["group"], self._keys(self.table)))
        fresh = extraction.ok & np.array([(g, k) not in known for g, k in zip(photos["group"], keys)])
        fresh &= ~pd.Series(list(zip(photos["group"], keys))).duplicated().to_numpy()
        skipped = int((extraction.ok & ~fresh).sum())
        conflicts = self._label_conflicts(photos, keys, extraction.ok, fresh)
        vectors = extraction.embeddings[fresh]
        photos = photos[fresh].reset_index(drop=True)
        photos["near_duplicate"] = near_duplicate_groups(photos) if len(photos) else None
        touched = self._join_parts(photos, vectors, cache_dir, progress)
        self.table = pd.concat([self.table, photos[list(_empty_table().columns)]], ignore_index=True)
        refitted = []
        seen = trained_on(self.backbone.name)
        for name in touched:
            group = self.groups[name]
            grown = group.fit is not None and group.size >= (1 + REFIT_GROWTH) * max(group.fit.images, 1)
            if group.fit is None or refit or (refit is None and grown):
                self._fit(group, seen)
                refitted.append(name)
        return {
            "added": len(photos),
            "skipped_duplicates": skipped,
            "failed": len(failed),
            "refitted": refitted,
            "label_conflicts": conflicts,
        }

    def _label_conflicts(self, photos: pd.DataFrame, keys, ok: np.ndarray, fresh: np.ndarray) -> list[str]:
        """A skipped photo (the same bytes and region as one already kept) labelled with another
        identity: the gallery keeps the first label, and the user must hear that the two disagree
        (one of them is a labelling mistake, or one photo was filed under two names)."""
        first = {
            (group, key): (image_id, identity)
            for group, key, image_id, identity in zip(
                self.table["group"], self._keys(self.table), self.table["image_id"], self.table["identity"]
            )
        }
        said = []
        for row, (group, key, image_id, identity) in enumerate(
            zip(photos["group"], keys, photos["image_id"], photos["identity"])
        ):
            if not ok[row]:
                continue
            if fresh[row]:
                first[(group, key)] = (image_id, identity)
                continue
            kept_id, kept_identity = first.get((group, key), (image_id, identity))
            if str(kept_identity) != str(identity):
                said.append(
                    f"{image_id} (labelled {identity}) is the same photo as {kept_id}, already labelled "
                    f"{kept_identity}: not added, the gallery keeps {kept_identity}. If {kept_identity} is wrong, "
                    "correct the labels and build the gallery again."
                )
        return said

    def _extract(self, paths: list, regions, cache_dir, progress: bool, description: str | None = None) -> Extraction:
        """Global vectors of ``paths`` as this gallery describes every photo (its backbone,
        loader processes and the preset's extraction options)."""
        named = {"description": description} if description else {}
        return extract_embeddings(
            paths,
            self.backbone,
            cache_dir=cache_dir,
            progress=progress,
            num_workers=self.loader_workers,
            regions=regions,
            **named,
            **self.preset.extraction_options(),
        )

    def _describe_database(self, photos: pd.DataFrame, regions, cache_dir, progress: bool) -> Extraction:
        started = time.perf_counter()
        extraction = self._extract(photos["path"].tolist(), regions, cache_dir, progress)
        self.timings["extract_s"] = self.timings.get("extract_s", 0) + time.perf_counter() - started
        self.timings["images_extracted"] = self.timings.get("images_extracted", 0) + extraction.extracted
        self.timings["extraction"] = extraction.settings
        return extraction

    def _join_parts(self, photos: pd.DataFrame, vectors: np.ndarray, cache_dir, progress: bool) -> list[str]:
        """Append new photos (and their vectors) to their dataset parts, making the parts that
        are new; return the parts touched."""
        paths, kept_regions = photos["path"].tolist(), regions_of(photos, self.preset.region_margin)
        features = self._local_features(paths, cache_dir, progress, kept_regions)
        side, mirrored = self._sides(paths, kept_regions, vectors, features, cache_dir, progress)
        touched = []
        for name in dict.fromkeys(photos["group"]):
            rows = np.flatnonzero((photos["group"] == name).to_numpy())
            part = photos.iloc[rows]
            group_features = [features[r] for r in rows] if features is not None else None
            near = part["near_duplicate"].to_numpy(dtype=object) if part["near_duplicate"].notna().any() else None
            views = known_views(part["view"])
            extra = side.take(rows).extra
            flipped = mirrored.take(rows) if mirrored is not None else None
            if name in self.groups:
                self.groups[name].add(
                    part["image_id"].to_numpy(dtype=object),
                    part["identity"].to_numpy(dtype=object),
                    near,
                    vectors[rows],
                    group_features or [],
                    views=views,
                    extra=extra,
                    mirrored=flipped,
                )
            else:
                self.groups[name] = DatasetPart(
                    name,
                    part["image_id"].to_numpy(dtype=object),
                    part["identity"].to_numpy(dtype=object),
                    near,
                    VectorIndex.build(vectors[rows]),
                    group_features,
                    KeypointIndex(group_features) if group_features is not None else None,
                    views=views,
                    extra=extra,
                    mirrored=flipped,
                )
            touched.append(name)
        return touched

    def teach(
        self, photos: pd.DataFrame, *, cache_dir=None, progress: bool = False
    ) -> tuple[dict[str, int], dict[str, str]]:
        """Photos outside the database that reviewers' answers labelled (image_id, path, identity
        [, dataset]; decide/answers.py): what the adaptation stage learns from besides the
        database at the next fit (:meth:`refit`). They replace what was taught before (the answers
        are read whole each time); a group given none forgets its taught photos. Photos that
        cannot be read are left out. Returns (the photos kept per group, {path: why} of those
        left out)."""
        table = self._query_table(photos[["image_id", "path", *(["dataset"] if "dataset" in photos else [])]])
        table["identity"] = photos["identity"].astype(str).to_numpy()
        table, regions = self._regions(table, cache_dir, progress, {})
        extraction = self._extract(table["path"].tolist(), regions, cache_dir, progress, "photos labelled by reviewers")
        vectors = normalize(extraction.embeddings) if len(table) else np.zeros((0, self.backbone.dim), np.float32)
        kept = {}
        for name, group in self.groups.items():
            rows = np.flatnonzero((table["group"] == name).to_numpy() & extraction.ok)
            group.taught = None
            if len(rows):
                group.taught = Taught(
                    table["image_id"].to_numpy(dtype=object)[rows],
                    table["identity"].to_numpy(dtype=object)[rows],
                    vectors[rows].astype(np.float32),
                )
            kept[name] = len(rows)
        unreadable = {str(table["path"].iloc[row]): reason for row, reason in extraction.failures.items()}
        return kept, unreadable

    def refit(self, groups: list[str] | None = None) -> list[str]:
        """Fit calibration and thresholds again on the gallery as it is now."""
        self.revision += 1
        seen = trained_on(self.backbone.name)
        names = groups or list(self.groups)
        for name in names:
            if name not in self.groups:
                raise GalleryError(f"no group '{name}' in this gallery; it has {', '.join(self.groups) or 'none'}.")
            self._fit(self.groups[name], seen)
        return names

    @property
    def notes(self) -> list[str]:
        """What a user should know about how the groups were fitted (and the files read)."""
        return [*self.file_notes, *self.fit_notes]

    @property
    def fit_notes(self) -> list[str]:
        return [note for group in self.groups.values() for note in group.notes]

    def _fit(self, group: DatasetPart, seen: TrainedOn | None) -> PartFit:
        started = time.perf_counter()
        group.notes = []
        group.askable = _askable(group, self.table, seen, group.name, group.notes)
        if group.size == 0:
            group.fit = PartFit(-np.inf, None, None, np.zeros(0, np.int64), 0, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        else:
            group.fit_to(self.preset, self.method, extra_methods=self.extra_methods)
            if group.adapter is not None:  # its vectors mean nothing to another backbone's
                group.adapter.fingerprint = self.backbone.cache_key
                if group.fit.adaptation is not None:
                    group.fit.adaptation["fingerprint"] = self.backbone.cache_key
        if group.fit.choice is not None and group.fit.choice.note:
            group.notes.append(f"{group.name}: {group.fit.choice.note}")
        if group.size:
            calibration = group.fit.calibration
            positives = calibration.positives if calibration is not None else None
            group.notes += thin_evidence(group.name, group.identities, positives, calibrated=bool(self.preset.local))
        self.timings[f"fit_{group.name}_s"] = time.perf_counter() - started
        return group.fit

    def _local_features(
        self, paths: list[str], cache_dir, progress: bool, regions: list[Region | None] | None, method=None
    ) -> list[LocalFeatures | None] | None:
        """Keypoints of the preset's local method, or of ``method`` (an extra or mirrored one)."""
        method = method or self.method
        if method is None:
            return None
        if not self.preset.region_keypoints:
            regions = None
        started = time.perf_counter()
        features = local_features(paths, method, cache_dir=cache_dir, progress=progress, regions=regions)
        self.timings["local_features_s"] = self.timings.get("local_features_s", 0) + time.perf_counter() - started
        return features

    def _sides(self, paths, regions, vectors, features, cache_dir, progress: bool) -> tuple[Side, Side | None]:
        """The photos (their regions) as taken, with the extra methods' features, and, for
        mirrored matching, flipped left-right (descriptor and every keypoint method of the
        flipped region)."""
        extra = {
            name: self._local_features(paths, cache_dir, progress, regions, m) for name, m in self.extra_methods.items()
        }
        side = Side(vectors, features, extra)
        if not self.preset.mirror:
            return side, None
        started = time.perf_counter()
        flipped = extract_embeddings(
            paths,
            mirrored_backbone(self.backbone),
            cache_dir=cache_dir,
            progress=progress,
            description="mirrored descriptors",
            num_workers=self.loader_workers,
            regions=regions,
            **self.preset.extraction_options(),
        )
        self.timings["extract_s"] = self.timings.get("extract_s", 0) + time.perf_counter() - started
        mirrored = Side(
            normalize(flipped.embeddings),
            self._local_features(paths, cache_dir, progress, regions, MirroredMethod(self.method))
            if self.method
            else None,
            {
                name: self._local_features(paths, cache_dir, progress, regions, MirroredMethod(m))
                for name, m in self.extra_methods.items()
            },
        )
        return side, mirrored

    def _regions(self, table: pd.DataFrame, cache_dir, progress: bool, timings: dict):
        """The table with its region columns (the preset's automatic foreground filled in where a
        row has no region), and per row its Region (None: the whole photo). The foreground's time
        goes into ``timings``."""
        table, regions, record = table_regions(
            table,
            self.preset.region_margin,
            self.preset.foreground,
            cache_dir=cache_dir,
            device=str(next(self.backbone.model.parameters()).device),
            progress=progress,
        )
        if record is not None:
            timings["foreground_s"] = timings.get("foreground_s", 0) + record.seconds
            timings["foreground_computed"] = timings.get("foreground_computed", 0) + record.computed
        return table, regions

    def _keys(self, table: pd.DataFrame) -> list[str]:
        """Each gallery photo's cache key: its content hash, joined with its region if it has one."""
        return region_keys(table["sha256"].tolist(), regions_of(table, self.preset.region_margin))

    # ------------------------------------------------------------------ queries

    def identify(
        self,
        queries: Dataset | pd.DataFrame,
        *,
        cache_dir=None,
        threshold=FITTED,
        top_k: int | None = None,
        grouping=FITTED,
        progress: bool = True,
    ) -> IdentifyResult:
        """Rank the gallery's identities for each query and decide: the best identity, or
        new_individual below its group's threshold; with grouping, queries are grouped with each
        other and with known individuals and each takes its group's answer. ``queries``: a Dataset
        (its query rows) or a table with image_id, path[, dataset]. ``threshold``: FITTED (the
        gallery's), or a number, {dataset: number}, None (closed set). ``grouping``: FITTED (the
        preset's), "average", "single", or None (each query decided alone)."""
        method = self.grouping_method(grouping)
        photos = self.describe(queries, cache_dir=cache_dir, progress=progress)
        k = top_k or self.preset.top_k
        ranked = self.rank(photos, ranking_depth(k, method))
        return self.answer(photos, ranked, threshold=threshold, top_k=k, grouping=method)

    def grouping_method(self, grouping=FITTED) -> str | None:
        """The linkage a grouping setting means (FITTED: the preset's; None: no grouping)."""
        method = self.preset.grouping if grouping is FITTED else grouping
        if method not in (None, *GROUPING_METHODS):
            raise GalleryError(f"grouping '{method}': choose one of {', '.join(GROUPING_METHODS)} or none.")
        return method

    def describe(self, queries: Dataset | pd.DataFrame, *, cache_dir=None, progress: bool = True) -> QueryPhotos:
        """The query photos described for this gallery: their regions, descriptors, keypoints
        (and mirrored ones), views; the first step of :meth:`identify`."""
        started = time.perf_counter()
        table = self._query_table(queries)
        foreground: dict = {}
        table, regions = self._regions(table, cache_dir, progress, foreground)
        extraction = self._extract(table["path"].tolist(), regions, cache_dir, progress, "query descriptors")
        timings = {
            **foreground,
            "extract_s": time.perf_counter() - started,
            "images_extracted": extraction.extracted,
            "extraction": extraction.settings,
        }
        started = time.perf_counter()
        paths = table["path"].tolist()
        features = self._local_features(paths, cache_dir, progress, regions)
        side, mirrored = self._sides(paths, regions, extraction.embeddings, features, cache_dir, progress)
        timings["match_s"] = time.perf_counter() - started  # keypoints count as matching time, as they did
        return QueryPhotos(table, regions, side, mirrored, extraction.ok, extraction.failures, extraction.keys, timings)

    def rank(self, photos: QueryPhotos, depth: int) -> IdentityRanking:
        """Each described photo's ``depth`` best identities in its dataset part (one row per
        photo; none for a photo that could not be read); the second step of :meth:`identify`."""
        return rank_queries(self, photos, depth)

    def answer(
        self,
        photos: QueryPhotos,
        ranked: IdentityRanking,
        *,
        threshold=FITTED,
        top_k: int | None = None,
        grouping=FITTED,
        pairs: PairMemory | None = None,
    ) -> IdentifyResult:
        """Decide (and group) the photos from their ranking, made at ``queries.ranking_depth``;
        the last step of :meth:`identify`. ``pairs``: comparisons between them remembered from
        an earlier grouping of (some of) them."""
        method = self.grouping_method(grouping)
        k = top_k or self.preset.top_k
        return answer_queries(self, photos, ranked, threshold=threshold, top_k=k, method=method, pairs=pairs)

    def group(
        self, photos: QueryPhotos, ranked: IdentityRanking, *, grouping=FITTED, pairs: PairMemory | None = None
    ) -> Grouping:
        """The grouping :meth:`answer` would make (fitted thresholds), without the decisions."""
        return group_photos(self, photos, ranked, method=self.grouping_method(grouping), pairs=pairs)

    def _query_table(self, queries: Dataset | pd.DataFrame) -> pd.DataFrame:
        """The queries' table with its dataset part (``group``) and view; refused when a dataset
        has no part here."""
        table = queries.queries if isinstance(queries, Dataset) else queries
        table = table.reset_index(drop=True)
        if "dataset" not in table:
            if len(self.groups) > 1 and self.preset.same_dataset_only:
                raise GalleryError(
                    f"the gallery holds several datasets ({', '.join(self.groups)}); say which one "
                    "the queries belong to (a 'dataset' column, or --dataset)."
                )
            table = table.assign(dataset=next(iter(self.groups), ALL))
        table = _with_group(table, self.preset.same_dataset_only)
        unknown = sorted(set(table["group"]) - set(self.groups))
        if unknown:
            raise GalleryError(
                f"no database photos for dataset(s) {', '.join(map(str, unknown))} in this gallery "
                f"(it has {', '.join(self.groups) or 'none'}); add labelled photos of them first "
                "(`wildreid gallery add`)."
            )
        return table

    def database_rows(self) -> pd.DataFrame:
        """The gallery's photos as database rows of a Dataset table."""
        return self.table.drop(columns=["group", "sha256", "near_duplicate", "view"]).assign(split=DATABASE)

    # ------------------------------------------------------------------ saving

    def info(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "preset": self.preset.name,
            "backbone": self.backbone.name,
            "backbone_fingerprint": self.backbone.cache_key,
            "local_features": self.method.config_key() if self.method else None,
            "extra_local_features": {name: m.config_key() for name, m in self.extra_methods.items()},
            "images": int(len(self.table)),
            "identities": int(self.table["identity"].nunique()),
            "groups": {
                name: {
                    "images": group.size,
                    "identities": int(len(set(group.identities))),
                    "index": "exact" if group.index.exact else "ivf",
                    "threshold": group.fit.threshold if group.fit else None,
                    "top_m": group.fit.top_m if group.fit else None,
                    "adaptation": group.adapter.name if group.adapter is not None else "none",
                    "fitted_images": group.fit.images if group.fit else None,
                    "fitted_at": group.fit.fitted_at if group.fit else None,
                    "refit_due_at": int(np.ceil((1 + REFIT_GROWTH) * max(group.fit.images, 1))) if group.fit else None,
                }
                for name, group in self.groups.items()
            },
        }

    def save(self, folder: str | Path) -> Path:
        """Write the gallery atomically: a reader sees the previous gallery or this one, whole."""
        record = {
            **self.info(),
            "preset_settings": self.preset.to_dict(),
            "notes": self.fit_notes,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "learned_answers": self.learned_answers,
        }
        written = write_gallery(Path(folder), record, self.table, self.failures, self.groups)
        self.file_notes = []  # its files are now the ones just written, with their checksums
        return written

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        backbone: Backbone | None = None,
        device: str | None = None,
        preset: str | None = None,
    ) -> "Gallery":
        """Open a saved gallery. ``backbone``: reuse a loaded model (it must be the one the
        gallery was built with); ``preset``: the preset the caller expects (refused if another)."""
        folder = Path(folder)
        record = read_record(folder)  # a damaged gallery is refused before the model is loaded
        file_notes = verify_files(folder, record)
        with reading(folder / RECORD, folder, "field"):
            settings = record_preset(record)
        if preset is not None and preset != settings.name:
            raise GalleryError(
                f"{folder} was built with preset '{settings.name}', not '{preset}': its calibration "
                f"and thresholds belong to '{settings.name}'. Use --preset {settings.name}, or build "
                f"a gallery with `wildreid gallery build ROOT --out DIR --preset {preset}`."
            )
        if backbone is None:
            device = device or default_device()
            backbone = load_backbone(settings.backbone, preprocess=settings.preprocess, device=device)
        elif settings.input_size is not None and settings.preprocess is not None:
            # A model loaded once for many galleries reads this one's pictures at the size it chose.
            backbone = at_size(backbone, settings.preprocess.size)
        if backbone.cache_key != record["backbone_fingerprint"]:
            raise GalleryError(
                f"{folder} was built with descriptor {record['backbone']} "
                f"(fingerprint {record['backbone_fingerprint']}); this run uses {backbone.name} "
                f"({backbone.cache_key}). Its vectors would not be comparable: use the same "
                "descriptor, or rebuild the gallery with this one."
            )
        for name, files in record["group_files"].items():
            adapted = (files.get("fit") or {}).get("adaptation") or {}
            if adapted.get("fingerprint") not in (None, backbone.cache_key):
                raise GalleryError(
                    f"{folder}: the adapter of group '{name}' was fitted on vectors of descriptor "
                    f"{adapted['fingerprint']}, not this run's {backbone.name} ({backbone.cache_key}); "
                    "rebuild the gallery with this descriptor."
                )
        table, failures = read_tables(folder, record)
        gallery = cls(settings, backbone, table, {}, failures=failures)
        gallery.file_notes = file_notes
        gallery.learned_answers = int(record.get("learned_answers", 0))  # absent before learning from answers
        check_keypoint_methods(folder, record, gallery.method, gallery.extra_methods)
        for name, files in record["group_files"].items():
            gallery.groups[name] = read_part(folder, name, files, table, gallery.extra_methods)
        return gallery


# ---------------------------------------------------------------------------------------------
# helpers


def preset_backbone(preset: Preset, database: pd.DataFrame, device: str | None = None) -> Backbone:
    """The preset's model, reading pictures at the size its ``input_size`` asks for these database
    photos (describe/input_size.py); every missing weights file is named at once, before any work."""
    require_weights(preset)
    backbone = load_backbone(preset.backbone, preprocess=preset.preprocess, device=device or default_device())
    return read_at_input_size(backbone, preset.input_size, database, preset.region_margin)


def near_duplicate_groups(table: pd.DataFrame) -> np.ndarray | None:
    """Images of one clip (or video, or date) are near-duplicates: the first such column present."""
    for column in NEAR_DUPLICATE_COLUMNS:
        if column in table and table[column].notna().any():
            return table[column].to_numpy(dtype=object)
    return None


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            name: pd.Series(dtype=object)
            for name in (
                "image_id",
                "identity",
                "dataset",
                "group",
                "path",
                "sha256",
                "near_duplicate",
                BBOX,
                SEGMENTATION,
                REGION_SOURCE,
                "view",
            )
        }
    )


def _no_failures() -> pd.DataFrame:
    return pd.DataFrame(columns=["image_id", "split", "path", "reason"])


def _with_group(table: pd.DataFrame, same_dataset_only: bool) -> pd.DataFrame:
    table = table.copy()
    if "dataset" not in table:
        table["dataset"] = "photos"
    if "image_id" not in table:
        table["image_id"] = table["path"].astype(str)
    table["image_id"] = table["image_id"].astype(str)
    table["group"] = table["dataset"].astype(str) if same_dataset_only else ALL
    table["view"] = photo_views(table)
    return table


def _askable(
    group: DatasetPart, table: pd.DataFrame, seen: TrainedOn | None, name: str, notes: list
) -> np.ndarray | None:
    """The photos a calibration may ask as pseudo-queries (None: all of them).

    A descriptor fine-tuned on this database has memorised it: its scores between those photos are
    far higher than a new photo will get, so a calibration and a threshold fitted on them are
    optimistic (NyalaData: simulated score 0.50, real 0.33). The photos training held out for
    validation behave like new ones, so they are used when there are enough of them.
    """
    if seen is None or group.size == 0:
        return None
    hashes = table.loc[table["group"] == name, "sha256"].to_numpy(dtype=object)
    trained = np.array([h in seen.trained for h in hashes])
    if not trained.any():
        return None
    held_out = np.array([h in seen.held_out for h in hashes])
    if held_out.sum() >= MIN_HELD_OUT_IMAGES:
        notes.append(
            f"{name}: the descriptor was trained on {trained.sum()} of the {len(hashes)} database "
            f"images; calibration and threshold use the {held_out.sum()} it held out."
        )
        return held_out
    notes.append(
        f"{name}: the descriptor was trained on {trained.sum()} of the {len(hashes)} database "
        f"images and held out {held_out.sum()} (fewer than {MIN_HELD_OUT_IMAGES}), so calibration "
        "and threshold are fitted on photos it has memorised and will be optimistic; train with "
        "--val-fraction 0.15 (the default) to avoid this."
    )
    return None
