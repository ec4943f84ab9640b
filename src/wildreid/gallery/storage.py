"""A gallery on disk: one folder, written atomically.

    gallery.json             what was built, with which preset and descriptor; each part's fit
    images.csv, failures.csv the photos (``Gallery.table``) and those that could not be read
    group-<n>/               per dataset part: vectors.faiss, keypoints (.npz), askable.npy,
                             and, with mirrored matching, the flipped photos' vectors and keypoints

The folder says which preset, descriptor and keypoint methods it was built with; reading it back
refuses any other, since its vectors and fits would not be comparable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from wildreid.data.views import known_views
from wildreid.decide.simulate import LinkChoice
from wildreid.decide.thresholds import ThresholdChoice
from wildreid.gallery.calibration import Calibration
from wildreid.gallery.errors import GalleryError
from wildreid.gallery.index import VectorIndex
from wildreid.gallery.part import DatasetPart, PartFit, Side
from wildreid.local.base import LocalFeatures
from wildreid.local.lnbnn import KeypointIndex
from wildreid.util.files import atomic_folder, jsonable

FORMAT_VERSION = 1


def write_gallery(folder: Path, record: dict, table: pd.DataFrame, failures: pd.DataFrame, groups: dict) -> Path:
    """Write a gallery atomically: a reader sees the previous gallery or this one, whole.
    ``record``: the gallery.json content, without its "group_files" (added here)."""
    folder = Path(folder)
    if folder.exists() and not (folder / "gallery.json").is_file() and any(folder.iterdir()):
        raise GalleryError(
            f"{folder}: exists and is not a gallery; its content would be replaced. Choose "
            "a new or empty folder, or an earlier gallery's."
        )
    with atomic_folder(folder) as temporary:
        record = {**record, "group_files": {}}
        table.to_csv(temporary / "images.csv", index=False)
        failures.to_csv(temporary / "failures.csv", index=False)
        for number, (name, group) in enumerate(groups.items()):
            part = temporary / f"group-{number}"
            part.mkdir()
            _write_part(part, group)
            record["group_files"][name] = {"folder": part.name, "fit": fit_record(group.fit), "notes": group.notes}
        (temporary / "gallery.json").write_text(json.dumps(jsonable(record), indent=2), encoding="utf-8")
    return folder


def _write_part(part: Path, group: DatasetPart) -> None:
    group.index.save(part / "vectors.faiss")
    if group.features is not None:
        save_features(part / "local_features.npz", group.features)
    for method, found in group.extra.items():
        save_features(part / f"local_features-{method}.npz", found)
    if group.mirrored is not None:
        np.save(part / "mirrored_vectors.npy", group.mirrored.vectors)
        if group.mirrored.features is not None:
            save_features(part / "mirrored_local_features.npz", group.mirrored.features)
        for method, found in group.mirrored.extra.items():
            save_features(part / f"mirrored_local_features-{method}.npz", found)
    np.save(part / "askable.npy", group.askable if group.askable is not None else np.ones(group.size, bool))


def read_record(folder: Path) -> dict:
    """gallery.json of a gallery folder, checked to be one this wildreid reads."""
    record_path = folder / "gallery.json"
    if not record_path.is_file():
        raise GalleryError(
            f"{folder}: not a gallery (no gallery.json). Build one with `wildreid gallery build ROOT --out {folder}`."
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
    return record


def check_keypoint_methods(folder: Path, record: dict, method, extra_methods: dict) -> None:
    """Refuse a gallery whose keypoints another configuration extracted."""
    if method is not None and method.config_key() != record["local_features"]:
        raise GalleryError(
            f"{folder}: its keypoints were extracted as {record['local_features']}, this wildreid "
            f"extracts {method.config_key()}; rebuild the gallery."
        )
    saved_extra = record.get("extra_local_features", {})
    for name, extra in extra_methods.items():
        if saved_extra.get(name) != extra.config_key():
            raise GalleryError(
                f"{folder}: its {name} keypoints were extracted as {saved_extra.get(name)}, this wildreid "
                f"extracts {extra.config_key()}; rebuild the gallery."
            )


def read_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The gallery's photos (images.csv) and failures (failures.csv)."""
    table = pd.read_csv(folder / "images.csv", dtype=str, keep_default_na=False, na_values=[""])
    failures = pd.read_csv(folder / "failures.csv", dtype=str, keep_default_na=False)
    return table, failures


def read_part(folder: Path, name: str, files: dict, table: pd.DataFrame, extra_methods) -> DatasetPart:
    """One dataset part as saved (``files``: its entry in gallery.json's group_files)."""
    part = folder / files["folder"]
    rows = table[table["group"] == name]
    near = rows["near_duplicate"].to_numpy(dtype=object)
    near = np.where(pd.isna(near), None, near) if rows["near_duplicate"].notna().any() else None
    features = load_features(part / "local_features.npz") if (part / "local_features.npz").is_file() else None
    mirrored = None
    if (part / "mirrored_vectors.npy").is_file():
        flipped = part / "mirrored_local_features.npz"
        mirrored = Side(
            np.load(part / "mirrored_vectors.npy"),
            load_features(flipped) if flipped.is_file() else None,
            {method: load_features(part / f"mirrored_local_features-{method}.npz") for method in extra_methods},
        )
    group = DatasetPart(
        name,
        rows["image_id"].to_numpy(dtype=object),
        rows["identity"].to_numpy(dtype=object),
        near,
        VectorIndex.load(part / "vectors.faiss"),
        features,
        KeypointIndex(features) if features is not None else None,
        fit=fit_from_record(files["fit"]),
        askable=np.load(part / "askable.npy"),
        notes=files.get("notes", []),
        views=known_views(rows["view"]),
        extra={method: load_features(part / f"local_features-{method}.npz") for method in extra_methods},
        mirrored=mirrored,
    )
    if group.index.size != group.size:
        raise GalleryError(
            f"{folder}: group '{name}' lists {group.size} photos but its index holds "
            f"{group.index.size}; the gallery is damaged, rebuild it."
        )
    return group


# ---------------------------------------------------------------------------------------------
# keypoints and fits as files


def save_features(path: Path, features: list[LocalFeatures | None]) -> None:
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


def load_features(path: Path) -> list[LocalFeatures | None]:
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


def fit_record(fit: PartFit | None) -> dict | None:
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


def fit_from_record(record: dict | None) -> PartFit | None:
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
