"""The gallery: the database side of identification, fitted once, saved, and grown in place.

    gallery = Gallery.build(dataset, get_preset("fusion"), cache_dir=...)   # descriptors, index, fit
    gallery.save("herd.gallery")
    gallery = Gallery.load("herd.gallery")
    result = gallery.identify(query_table)       # pays only for the queries
    gallery.add(new_photos)                      # appended; refitted when grown by REFIT_GROWTH

Every front end (``wildreid identify``, ``identify --gallery``, ``watch``, the catalogue and the
web app, the benchmarks) goes through this object; ``pipeline.identify`` is ``build`` then
``identify`` on the same dataset.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from wildreid.data.dataset import DATABASE, NEW_INDIVIDUAL, QUERY, Dataset
from wildreid.data.regions import BBOX, REGION_SOURCE, SEGMENTATION, Region, region_keys, regions_of
from wildreid.data.views import known_views, photo_views
from wildreid.decide.cluster import METHODS as GROUPING_METHODS
from wildreid.decide.decision import decide
from wildreid.decide.grouping import DatasetGrouping, Grouping
from wildreid.decide.simulate import LinkChoice
from wildreid.decide.thresholds import ThresholdChoice
from wildreid.describe.backbones import Backbone, load_backbone
from wildreid.describe.extract import default_device, extract_embeddings
from wildreid.describe.foreground import table_regions
from wildreid.describe.mirror import MirroredMethod, mirrored_backbone
from wildreid.describe.trained import TrainedOn, trained_on
from wildreid.gallery.calibration import Calibration
from wildreid.gallery.index import VectorIndex, normalize
from wildreid.gallery.part import GROUPING_IDENTITIES, DatasetPart, PartFit, Side
from wildreid.gallery.result import IdentifyResult, Ranking
from wildreid.local.base import LocalFeatures, get_method
from wildreid.local.cache import local_features
from wildreid.local.lnbnn import KeypointIndex
from wildreid.presets import Preset, require_weights
from wildreid.util.files import atomic_folder, jsonable

FORMAT_VERSION = 1
# A group's calibration and threshold are refitted when it has grown by this fraction since they
# were fitted: a quarter more photos (e.g. 400 -> 500) shifts the simulated open set enough to
# matter; below it, refitting on every addition would make each confirmation cost a full fit.
REFIT_GROWTH = 0.25
NEAR_DUPLICATE_COLUMNS = ("clip", "video", "date")
MIN_HELD_OUT_IMAGES = 10  # fewer held-out photos than this cannot calibrate anything
ALL = "all"  # the one group when queries may match any dataset
FITTED = "fitted"  # identify(threshold=FITTED): the thresholds fitted on the gallery


class GalleryError(ValueError):
    """A gallery that cannot be used as asked; the message says what to do."""


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
        if backbone is None:
            require_weights(preset)  # every missing weights file named at once, before any work
        backbone = backbone or load_backbone(
            preset.backbone, preprocess=preset.preprocess, device=device or default_device()
        )
        table = database.database if isinstance(database, Dataset) else database
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
        photos = _with_group(photos.reset_index(drop=True), self.preset.same_dataset_only)
        if photos["identity"].isna().any() or (photos["identity"].astype(str).str.strip() == "").any():
            rows = photos.index[photos["identity"].isna()].tolist()[:5]
            raise GalleryError(f"photos without an identity (rows {rows}): only labelled photos join a gallery.")
        photos, regions = self._regions(photos, cache_dir, progress, self.timings)
        started = time.perf_counter()
        extraction = extract_embeddings(
            photos["path"].tolist(),
            self.backbone,
            cache_dir=cache_dir,
            progress=progress,
            num_workers=self.loader_workers,
            regions=regions,
            **self.preset.extraction_options(),
        )
        self.timings["extract_s"] = self.timings.get("extract_s", 0) + time.perf_counter() - started
        self.timings["images_extracted"] = self.timings.get("images_extracted", 0) + extraction.extracted
        self.timings["extraction"] = extraction.settings
        photos["sha256"] = extraction.hashes
        failed = _failures(photos, extraction.failures, DATABASE)
        self.failures = pd.concat([self.failures, failed], ignore_index=True) if len(failed) else self.failures
        # The same photo (bytes) with the same region is already in the gallery: skipped. Two
        # detections in one photo are two regions, so both stay.
        keys = extraction.keys
        known = set(zip(self.table["group"], self._keys(self.table)))
        fresh = extraction.ok & np.array([(g, k) not in known for g, k in zip(photos["group"], keys)])
        fresh &= ~pd.Series(list(zip(photos["group"], keys))).duplicated().to_numpy()
        skipped = int((extraction.ok & ~fresh).sum())
        vectors = extraction.embeddings[fresh]
        photos = photos[fresh].reset_index(drop=True)
        photos["near_duplicate"] = near_duplicate_groups(photos) if len(photos) else None

        paths, kept_regions = photos["path"].tolist(), regions_of(photos, self.preset.region_margin)
        features = self._local_features(paths, cache_dir, progress, kept_regions)
        side, mirrored = self._sides(paths, kept_regions, vectors, features, cache_dir, progress)
        seen = trained_on(self.backbone.name)
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
        self.table = pd.concat([self.table, photos[list(_empty_table().columns)]], ignore_index=True)
        refitted = []
        for name in touched:
            group = self.groups[name]
            grown = group.fit is not None and group.size >= (1 + REFIT_GROWTH) * max(group.fit.images, 1)
            if group.fit is None or refit or (refit is None and grown):
                self._fit(group, seen)
                refitted.append(name)
        return {"added": len(photos), "skipped_duplicates": skipped, "failed": len(failed), "refitted": refitted}

    def refit(self, groups: list[str] | None = None) -> list[str]:
        """Fit calibration and thresholds again on the gallery as it is now."""
        seen = trained_on(self.backbone.name)
        names = groups or list(self.groups)
        for name in names:
            if name not in self.groups:
                raise GalleryError(f"no group '{name}' in this gallery; it has {', '.join(self.groups) or 'none'}.")
            self._fit(self.groups[name], seen)
        return names

    @property
    def notes(self) -> list[str]:
        """What a user should know about how the groups were fitted."""
        return [note for group in self.groups.values() for note in group.notes]

    def _fit(self, group: DatasetPart, seen: TrainedOn | None) -> PartFit:
        started = time.perf_counter()
        group.notes = []
        group.askable = _askable(group, self.table, seen, group.name, group.notes)
        if group.size == 0:
            group.fit = PartFit(-np.inf, None, None, np.zeros(0, np.int64), 0, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        else:
            group.fit_to(self.preset, self.method, extra_methods=self.extra_methods)
        if group.fit.choice is not None and group.fit.choice.note:
            group.notes.append(f"{group.name}: {group.fit.choice.note}")
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
        method = self.preset.grouping if grouping is FITTED else grouping
        if method not in (None, *GROUPING_METHODS):
            raise GalleryError(f"grouping '{method}': choose one of {', '.join(GROUPING_METHODS)} or none.")
        started = time.perf_counter()
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
        k = top_k or self.preset.top_k
        foreground: dict = {}
        table, regions = self._regions(table, cache_dir, progress, foreground)
        extraction = extract_embeddings(
            table["path"].tolist(),
            self.backbone,
            cache_dir=cache_dir,
            progress=progress,
            description="query descriptors",
            num_workers=self.loader_workers,
            regions=regions,
            **self.preset.extraction_options(),
        )
        timings = {
            **foreground,
            "extract_s": time.perf_counter() - started,
            "images_extracted": extraction.extracted,
            "extraction": extraction.settings,
        }
        started = time.perf_counter()
        features = self._local_features(table["path"].tolist(), cache_dir, progress, regions)
        side, mirrored = self._sides(
            table["path"].tolist(), regions, extraction.embeddings, features, cache_dir, progress
        )
        query_views = known_views(table["view"])
        notes = list(self.notes)
        ranking = Ranking.empty(len(table), k)
        thresholds, choices, calibrations, groupings = {}, {}, {}, {}
        query_thresholds = np.full(len(table), np.nan)
        prediction = np.full(len(table), NEW_INDIVIDUAL, dtype=object)
        usable = extraction.ok
        for name in dict.fromkeys(table["group"]):
            group = self.groups[name]
            members = np.flatnonzero((table["group"] == name).to_numpy())
            thresholds[name] = _chosen_threshold(threshold, group)
            if group.fit.choice is not None and threshold == FITTED:
                choices[name] = group.fit.choice
            if group.fit.calibration is not None and self.method is not None:
                calibrations[name] = group.fit.calibration
            query_thresholds[members] = np.nan if thresholds[name] is None else thresholds[name]
            asked = members[usable[members]]
            evidence = {
                "views": query_views[asked] if query_views is not None else None,
                "extra": side.take(asked).extra,
                "extra_methods": self.extra_methods,
                "mirrored": mirrored.take(asked) if mirrored is not None else None,
            }
            fallbacks = group.view_masks(evidence["views"], self.preset)[2]
            if fallbacks:
                notes.append(
                    f"{name}: {len(fallbacks)} quer{'y' if len(fallbacks) == 1 else 'ies'} of view(s) "
                    f"{', '.join(sorted(set(fallbacks)))} had no database photo of a compatible view and "
                    "were compared with every photo."
                )
            vectors = extraction.embeddings[asked]
            asked_features = [features[r] for r in asked] if features is not None else None
            grouped = method is not None and len(asked) > 0
            found, _ = group.rank(
                vectors,
                asked_features,
                self.preset,
                self.method,
                max(k, GROUPING_IDENTITIES) if grouped else k,
                **evidence,
            )
            ranking.identities[asked] = found.identities[:, :k]
            ranking.scores[asked] = found.scores[:, :k]
            ranking.matches[asked] = np.where(
                found.best_images[:, :k] >= 0, group.image_ids[np.maximum(found.best_images[:, :k], 0)], None
            )
            prediction[asked] = decide(found.identities[:, 0], found.scores[:, 0], thresholds[name])
            if grouped:
                groupings[name] = self._group_queries(
                    group, name, method, thresholds[name], asked, table, vectors, asked_features, found, evidence
                )
                for node, row in enumerate(asked):
                    identity = groupings[name].identity_of(node)
                    prediction[row] = NEW_INDIVIDUAL if identity is None else identity
        timings["match_s"] = time.perf_counter() - started
        errors = [extraction.failures.get(row, "") for row in range(len(table))]
        return IdentifyResult(
            dataset=Dataset(
                pd.concat(
                    [self.database_rows(), table.assign(split=QUERY).drop(columns=["group", "view"])], ignore_index=True
                ),
                "gallery",
            ),
            preset=self.preset,
            queries=table[["image_id", "dataset"] + ([BBOX, REGION_SOURCE] if regions is not None else [])],
            prediction=prediction,
            ranking=ranking,
            query_thresholds=query_thresholds,
            errors=errors,
            thresholds=thresholds,
            threshold_choices=choices,
            failures=_failures(table, extraction.failures, QUERY),
            timings=timings,
            calibrations=calibrations,
            notes=notes,
            grouping=Grouping(groupings) if method is not None else None,
        )

    def _group_queries(
        self, group: DatasetPart, name, method, threshold, asked, table, vectors, features, found, evidence: dict
    ) -> DatasetGrouping:
        """Group one dataset's queries with each other and with their best known individuals;
        ``threshold``: the new_individual threshold this run decides with (None: closed set);
        ``evidence``: the queries' views, extra features and mirrored side (DatasetPart.rank's)."""
        if group.fit.calibration is None or method not in group.fit.links:
            raise GalleryError(
                f"the gallery's fit of '{name}' has no linking threshold for '{method}' grouping (it was fitted "
                f"for {', '.join(group.fit.links) or 'no grouping'}); pass --grouping "
                f"{next(iter(group.fit.links), 'none')}, or build the gallery with a preset that groups by '{method}'."
            )
        graph = group.match_graph(vectors, features, found, self.preset, self.method, **evidence)
        return DatasetGrouping.fit(
            name,
            asked,
            table["image_id"].to_numpy()[asked],
            graph,
            method=method,
            link_threshold=group.fit.links[method].threshold,
            known_threshold=group.known_probability(threshold, self.method),
        )

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
                    "fitted_images": group.fit.images if group.fit else None,
                    "fitted_at": group.fit.fitted_at if group.fit else None,
                    "refit_due_at": int(np.ceil((1 + REFIT_GROWTH) * max(group.fit.images, 1))) if group.fit else None,
                }
                for name, group in self.groups.items()
            },
        }

    def save(self, folder: str | Path) -> Path:
        """Write the gallery atomically: a reader sees the previous gallery or this one, whole."""
        folder = Path(folder)
        if folder.exists() and not (folder / "gallery.json").is_file() and any(folder.iterdir()):
            raise GalleryError(
                f"{folder}: exists and is not a gallery; its content would be replaced. Choose "
                "a new or empty folder, or an earlier gallery's."
            )
        with atomic_folder(folder) as temporary:
            record = {
                **self.info(),
                "preset_settings": self.preset.to_dict(),
                "notes": self.notes,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "group_files": {},
            }
            self.table.to_csv(temporary / "images.csv", index=False)
            self.failures.to_csv(temporary / "failures.csv", index=False)
            for number, (name, group) in enumerate(self.groups.items()):
                part = temporary / f"group-{number}"
                part.mkdir()
                group.index.save(part / "vectors.faiss")
                if group.features is not None:
                    _save_features(part / "local_features.npz", group.features)
                for method, found in group.extra.items():
                    _save_features(part / f"local_features-{method}.npz", found)
                if group.mirrored is not None:
                    np.save(part / "mirrored_vectors.npy", group.mirrored.vectors)
                    if group.mirrored.features is not None:
                        _save_features(part / "mirrored_local_features.npz", group.mirrored.features)
                    for method, found in group.mirrored.extra.items():
                        _save_features(part / f"mirrored_local_features-{method}.npz", found)
                np.save(part / "askable.npy", group.askable if group.askable is not None else np.ones(group.size, bool))
                record["group_files"][name] = {"folder": part.name, "fit": _fit_record(group.fit), "notes": group.notes}
            (temporary / "gallery.json").write_text(json.dumps(jsonable(record), indent=2), encoding="utf-8")
        return folder

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
        record_path = folder / "gallery.json"
        if not record_path.is_file():
            raise GalleryError(
                f"{folder}: not a gallery (no gallery.json). Build one with "
                f"`wildreid gallery build ROOT --out {folder}`."
            )
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise GalleryError(f"{record_path}: damaged ({error}); rebuild the gallery.") from None
        if record.get("format_version") != FORMAT_VERSION:
            raise GalleryError(
                f"{folder}: gallery format {record.get('format_version')}, this wildreid reads format "
                f"{FORMAT_VERSION}; rebuild it with `wildreid gallery build ROOT --out {folder}`."
            )
        settings = Preset.from_dict(record["preset_settings"])
        if preset is not None and preset != settings.name:
            raise GalleryError(
                f"{folder} was built with preset '{settings.name}', not '{preset}': its calibration "
                f"and thresholds belong to '{settings.name}'. Use --preset {settings.name}, or build "
                f"a gallery with `wildreid gallery build ROOT --out DIR --preset {preset}`."
            )
        backbone = backbone or load_backbone(
            settings.backbone, preprocess=settings.preprocess, device=device or default_device()
        )
        if backbone.cache_key != record["backbone_fingerprint"]:
            raise GalleryError(
                f"{folder} was built with descriptor {record['backbone']} "
                f"(fingerprint {record['backbone_fingerprint']}); this run uses {backbone.name} "
                f"({backbone.cache_key}). Its vectors would not be comparable: use the same "
                "descriptor, or rebuild the gallery with this one."
            )
        table = pd.read_csv(folder / "images.csv", dtype=str, keep_default_na=False, na_values=[""])
        failures = pd.read_csv(folder / "failures.csv", dtype=str, keep_default_na=False)
        gallery = cls(settings, backbone, table, {}, failures=failures)
        if gallery.method is not None and gallery.method.config_key() != record["local_features"]:
            raise GalleryError(
                f"{folder}: its keypoints were extracted as {record['local_features']}, this wildreid "
                f"extracts {gallery.method.config_key()}; rebuild the gallery."
            )
        saved_extra = record.get("extra_local_features", {})
        for name, method in gallery.extra_methods.items():
            if saved_extra.get(name) != method.config_key():
                raise GalleryError(
                    f"{folder}: its {name} keypoints were extracted as {saved_extra.get(name)}, this wildreid "
                    f"extracts {method.config_key()}; rebuild the gallery."
                )
        for name, files in record["group_files"].items():
            part = folder / files["folder"]
            rows = table[table["group"] == name]
            near = rows["near_duplicate"].to_numpy(dtype=object)
            near = np.where(pd.isna(near), None, near) if rows["near_duplicate"].notna().any() else None
            features = _load_features(part / "local_features.npz") if (part / "local_features.npz").is_file() else None
            views = known_views(rows["view"])
            extra = {name: _load_features(part / f"local_features-{name}.npz") for name in gallery.extra_methods}
            mirrored = None
            if (part / "mirrored_vectors.npy").is_file():
                flipped = part / "mirrored_local_features.npz"
                mirrored = Side(
                    np.load(part / "mirrored_vectors.npy"),
                    _load_features(flipped) if flipped.is_file() else None,
                    {
                        name: _load_features(part / f"mirrored_local_features-{name}.npz")
                        for name in gallery.extra_methods
                    },
                )
            group = DatasetPart(
                name,
                rows["image_id"].to_numpy(dtype=object),
                rows["identity"].to_numpy(dtype=object),
                near,
                VectorIndex.load(part / "vectors.faiss"),
                features,
                KeypointIndex(features) if features is not None else None,
                fit=_fit_from_record(files["fit"]),
                askable=np.load(part / "askable.npy"),
                notes=files.get("notes", []),
                views=views,
                extra=extra,
                mirrored=mirrored,
            )
            if group.index.size != group.size:
                raise GalleryError(
                    f"{folder}: group '{name}' lists {group.size} photos but its index holds "
                    f"{group.index.size}; the gallery is damaged, rebuild it."
                )
            gallery.groups[name] = group
        return gallery


# ---------------------------------------------------------------------------------------------
# helpers


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


def _failures(table: pd.DataFrame, failures: dict[int, str], split: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (table["image_id"].iloc[row], split, table["path"].iloc[row], reason)
            for row, reason in sorted(failures.items())
        ],
        columns=["image_id", "split", "path", "reason"],
    )


def _chosen_threshold(setting, group: DatasetPart):
    if setting == FITTED:
        return group.fit.threshold
    if isinstance(setting, dict):
        if group.name not in setting:
            raise GalleryError(
                f"no threshold given for dataset '{group.name}' (thresholds given for "
                f"{sorted(setting)}); add '{group.name}=VALUE'."
            )
        return float(setting[group.name])
    return None if setting is None else float(setting)


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


def _save_features(path: Path, features: list[LocalFeatures | None]) -> None:
    counts = np.array([-1 if f is None else len(f) for f in features], dtype=np.int64)
    present = [f for f in features if f is not None]
    dim = next((f.descriptors.shape[1] for f in present), 0)
    np.savez(
        path,
        counts=counts,
        keypoints=np.concatenate([f.keypoints for f in present]) if present else np.zeros((0, 2), np.float32),
        descriptors=(np.concatenate([f.descriptors for f in present]) if present else np.zeros((0, dim))).astype(
            np.float16
        ),
        scales=np.array([1.0 if f is None else f.scale for f in features]),
        sizes=np.array(
            [(0, 0) if f is None or f.image_size is None else f.image_size for f in features], dtype=np.int64
        ).reshape(-1, 2),
    )


def _load_features(path: Path) -> list[LocalFeatures | None]:
    with np.load(path) as content:
        counts, keypoints = content["counts"], content["keypoints"]
        descriptors, scales, sizes = content["descriptors"].astype(np.float32), content["scales"], content["sizes"]
    features, start = [], 0
    for count, scale, size in zip(counts, scales, sizes):
        if count < 0:
            features.append(None)
            continue
        features.append(
            LocalFeatures(
                keypoints[start : start + count],
                descriptors[start : start + count],
                float(scale),
                tuple(int(v) for v in size) if size.any() else None,
            )
        )
        start += count
    return features


def _fit_record(fit: PartFit | None) -> dict | None:
    if fit is None:
        return None
    choice = fit.choice
    return {
        "threshold": "none" if fit.threshold is None else fit.threshold,
        "images": fit.images,
        "fitted_at": fit.fitted_at,
        "seconds": fit.seconds,
        "top_m": fit.top_m,
        "pseudo_queries": fit.pseudo_queries.tolist(),
        "calibration": json.loads(fit.calibration.to_json()) if fit.calibration else None,
        "links": {
            method: {**link.summary(), "grid": link.grid.tolist(), "curve": link.curve.tolist()}
            for method, link in fit.links.items()
        },
        "choice": None
        if choice is None
        else {
            **choice.summary(),
            "grid": choice.grid.tolist(),
            "curve_score": choice.curve_score.tolist(),
            "curve_baks": choice.curve_baks.tolist(),
            "curve_baus": choice.curve_baus.tolist(),
        },
    }


def _fit_from_record(record: dict | None) -> PartFit | None:
    if record is None:
        return None
    choice = record["choice"]
    if choice is not None:
        choice = ThresholdChoice(
            *(_number(choice[k]) for k in ("threshold", "simulated_score", "simulated_baks", "simulated_baus")),
            *(np.asarray(choice[k], dtype=float) for k in ("grid", "curve_score", "curve_baks", "curve_baus")),
            note=choice.get("note", ""),
        )
    calibration = Calibration.from_json(json.dumps(record["calibration"])) if record["calibration"] else None
    links = {  # absent in galleries fitted before grouping existed
        method: LinkChoice(
            float(link["threshold"]),
            _number(link["simulated_ari"]),
            np.asarray(link["grid"], float),
            np.asarray(link["curve"], float),
            link.get("note", ""),
        )
        for method, link in record.get("links", {}).items()
    }
    return PartFit(
        _number(record["threshold"]),
        choice,
        calibration,
        np.asarray(record["pseudo_queries"], np.int64),
        record["images"],
        record["fitted_at"],
        record.get("seconds", 0.0),
        links,
        record.get("top_m", 1),
    )


def _number(value):
    """A threshold back from JSON: "none" is a closed set, null the -inf that jsonable wrote."""
    if value == "none":
        return None
    return -np.inf if value is None else float(value)
