"""A gallery on disk: one folder, written atomically.

    gallery.json             what was built, with which preset and descriptor; each part's fit
    images.csv, failures.csv the photos (``Gallery.table``) and those that could not be read
    group-<n>/               per dataset part: vectors.faiss, keypoints (.npz), askable.npy,
                             and, with mirrored matching, the flipped photos' vectors and keypoints;
                             adapter.npz when the part compares through an adapter (the index
                             keeps the backbone's vectors; the adapted index is made on reading);
                             taught.npz: photos labelled by reviewers' answers, for the adapter

The folder says which preset, descriptor and keypoint methods it was built with; reading it back
refuses any other, since its vectors and fits would not be comparable.

Its files are bound together: gallery.json lists every other file with its size and SHA-256
(``files``) and holds the SHA-256 of its own content (``record_sha256``). The rows of images.csv
are the rows of the index in order, so images.csv re-sorted by hand (as a spreadsheet saves it)
would silently give other photos' identities to the vectors; a file that disagrees with its
checksum is refused instead, as are a damaged file, a missing one and a hand-edited gallery.json
(:class:`UnreadableGallery`, one message naming the file). Galleries saved before the checksums
were recorded are read with a note that hand edits cannot be detected in them; they get their
checksums at their next `gallery add` or `gallery refit` (or build them again).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from wildreid.data.views import known_views
from wildreid.decide.simulate import LinkChoice
from wildreid.decide.thresholds import ThresholdChoice
from wildreid.describe.adapters import load_adapter, save_adapter
from wildreid.gallery.calibration import Calibration
from wildreid.gallery.errors import GalleryError, UnreadableGallery
from wildreid.gallery.index import VectorIndex
from wildreid.gallery.part import DatasetPart, PartFit, Side, Taught
from wildreid.local.base import LocalFeatures
from wildreid.local.lnbnn import KeypointIndex
from wildreid.presets import Preset
from wildreid.util.files import atomic_folder, jsonable

FORMAT_VERSION = 1
RECORD = "gallery.json"
PART_FOLDER = re.compile(r"group-[0-9]+")
# The columns of images.csv a gallery cannot be read without (regions and views are optional:
# galleries saved before them lack them).
TABLE_COLUMNS = ("image_id", "identity", "dataset", "group", "path", "sha256", "near_duplicate")


def rebuild_advice(folder: Path) -> str:
    return f"build the gallery again (`wildreid gallery build ROOT --out {folder}`)"


def check_target(folder: Path) -> None:
    """Refuse to write a gallery where something else is: called before any descriptor is
    computed, and again by the write itself."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GalleryError(f"{folder}: is a file, not a gallery folder. Choose a new or empty folder for --out.")
    if folder.is_dir() and not (folder / RECORD).is_file() and any(folder.iterdir()):
        raise GalleryError(
            f"{folder}: exists and is not a gallery; its content would be replaced. Choose "
            "a new or empty folder, or an earlier gallery's."
        )


def write_gallery(folder: Path, record: dict, table: pd.DataFrame, failures: pd.DataFrame, groups: dict) -> Path:
    """Write a gallery atomically: a reader sees the previous gallery or this one, whole.
    ``record``: the gallery.json content, without its "group_files", "files" and "record_sha256"
    (added here)."""
    folder = Path(folder)
    check_target(folder)
    with atomic_folder(folder) as temporary:
        record = {**record, "group_files": {}}
        table.to_csv(temporary / "images.csv", index=False)
        failures.to_csv(temporary / "failures.csv", index=False)
        for number, (name, group) in enumerate(groups.items()):
            part = temporary / f"group-{number}"
            part.mkdir()
            _write_part(part, group)
            record["group_files"][name] = {"folder": part.name, "fit": fit_record(group.fit), "notes": group.notes}
        record["files"] = {
            file.relative_to(temporary).as_posix(): {"bytes": file.stat().st_size, "sha256": file_sha256(file)}
            for file in sorted(temporary.rglob("*"))
            if file.is_file()
        }
        content = jsonable(record)
        assert isinstance(content, dict)
        content["record_sha256"] = record_sha256(content)
        (temporary / RECORD).write_text(json.dumps(content, indent=2), encoding="utf-8")
    return folder


def file_sha256(path: Path) -> str:
    with open(path, "rb") as content:
        return hashlib.file_digest(content, "sha256").hexdigest()


def record_sha256(record: dict) -> str:
    """The SHA-256 of gallery.json's content (without this checksum), independent of its layout:
    re-indenting the file changes nothing, changing a value does."""
    content = {key: value for key, value in record.items() if key != "record_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    if group.adapter is not None:  # the adapted index is made again from it and vectors.faiss
        save_adapter(part / "adapter.npz", group.adapter)
    if group.taught is not None:
        taught = group.taught
        np.savez(
            part / "taught.npz",
            image_ids=taught.image_ids.astype(str),
            labels=taught.labels.astype(str),
            vectors=taught.vectors,
        )


def read_record(folder: Path) -> dict:
    """gallery.json of a gallery folder, checked to be one this wildreid reads, unchanged since
    it was saved (when it records its checksum) and whole: every field the gallery needs, each
    group's fit readable."""
    folder = Path(folder)
    record_path = folder / RECORD
    if folder.exists() and not folder.is_dir():
        raise UnreadableGallery(f"{folder}: is a file, not a gallery folder (a gallery is a folder with {RECORD}).")
    if not record_path.is_file():
        raise UnreadableGallery(
            f"{folder}: not a gallery (no {RECORD}). Build one with `wildreid gallery build ROOT --out {folder}`."
        )
    with reading(record_path, folder):
        record = json.loads(record_path.read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise UnreadableGallery(f"{record_path}: damaged (not a JSON object); {rebuild_advice(folder)}.")
    version = record.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise UnreadableGallery(
            f"{folder}: gallery format {version}, written by a newer wildreid; this one reads format "
            f"{FORMAT_VERSION}. Upgrade wildreid, or {rebuild_advice(folder)} with this one."
        )
    if version != FORMAT_VERSION:
        raise UnreadableGallery(
            f"{folder}: gallery format {version}, this wildreid reads format {FORMAT_VERSION}; "
            f"rebuild it with `wildreid gallery build ROOT --out {folder}`."
        )
    if "record_sha256" in record or "files" in record:  # saved with checksums: both must be there
        if record.get("record_sha256") != record_sha256(record) or not isinstance(record.get("files"), dict):
            raise UnreadableGallery(
                f"{record_path}: changed since the gallery was saved (its checksum differs): edited by "
                f"hand or damaged. Its fits and file list can no longer be trusted; {rebuild_advice(folder)}."
            )
    with reading(record_path, folder, "field"):
        for key in ("backbone", "backbone_fingerprint"):
            if not isinstance(record[key], str):
                raise TypeError(f"'{key}' is not text")
        if not (record["local_features"] is None or isinstance(record["local_features"], str)):
            raise TypeError("'local_features' is not text")
        if not isinstance(record.get("extra_local_features", {}), dict):
            raise TypeError("'extra_local_features' is not an object")
        record_preset(record)
        for name, files in record["group_files"].items():
            if not PART_FOLDER.fullmatch(str(files["folder"])):
                raise ValueError(f"group '{name}': folder {files['folder']!r} is not a group-<n> folder")
            if not isinstance(files["fit"], dict):
                raise TypeError(f"group '{name}': 'fit' is {json.dumps(files['fit'])}, not a fit")
    for name, files in record["group_files"].items():
        with reading(record_path, folder, "field", where=f"the fit of group '{name}': "):
            fit_from_record(files["fit"])
    return record


def saved_preset(folder: Path) -> Preset:
    """The preset a saved gallery was built with (its gallery.json read and checked)."""
    record = read_record(folder)
    with reading(Path(folder) / RECORD, Path(folder), "field"):
        return record_preset(record)


def record_preset(record: dict) -> Preset:
    """The preset a gallery was built with, as gallery.json records it."""
    if not isinstance(record["preset_settings"], dict):
        raise TypeError("'preset_settings' is not an object")
    return Preset.from_dict(record["preset_settings"])


def verify_files(folder: Path, record: dict, *, contents: bool = True) -> list[str]:
    """Check that the gallery's files are the ones saved with gallery.json: present, of their
    size, and of their SHA-256 (a large one only with ``contents``). Raise UnreadableGallery
    naming the first that is not; return notes (a gallery saved before checksums were recorded)."""
    folder = Path(folder)
    if "files" not in record:
        # Saved before the checksums: at least every file must be there.
        needed = ["images.csv", "failures.csv"]
        needed += [f"{files['folder']}/{name}" for files in record["group_files"].values() for name in PART_FILES]
        for name in needed:
            problem = _file_problem(folder, name, {}, False)
            if problem:
                raise UnreadableGallery(f"{problem}; {rebuild_advice(folder)}.")
        return [
            f"{folder}: saved by an earlier wildreid, which did not record checksums of the gallery's "
            "files, so a file changed by hand (e.g. images.csv re-sorted) cannot be detected; the next "
            "`wildreid gallery add` or `gallery refit` records them, or build the gallery again."
        ]
    for name, saved in record["files"].items():
        problem = _file_problem(folder, name, saved, contents)
        if problem:  # one message: the first file that disagrees is enough to refuse the gallery
            raise UnreadableGallery(
                f"{problem}. The gallery's files no longer agree with each other; {rebuild_advice(folder)}."
            )
    return []


def _file_problem(folder: Path, name: str, saved: object, contents: bool) -> str | None:
    path = folder / name
    if Path(name).is_absolute() or ".." in Path(name).parts or not isinstance(saved, dict):
        return f"{folder / RECORD}: lists a file {name!r} outside the gallery"
    if path.parent != folder and not path.parent.is_dir():
        return f"{path.parent}: {'not a folder' if path.parent.exists() else 'missing'} (a folder of the gallery)"
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if "bytes" not in saved:  # a gallery saved without checksums: present is all that is known
        return None
    if size != saved.get("bytes"):
        return f"{path}: {size} bytes, saved with {saved.get('bytes')} (truncated or changed)"
    if (contents or size <= ALWAYS_HASHED_BYTES) and file_sha256(path) != saved.get("sha256"):
        return f"{path}: changed since the gallery was saved (its checksum differs; edited or re-sorted by hand?)"
    return None


# Files up to this size are checked by their checksum even in a quick check (`gallery info`): a
# re-sorted images.csv keeps its size; only the large index files are left to `gallery check`
# and to loading.
ALWAYS_HASHED_BYTES = 64 << 20
PART_FILES = ("vectors.faiss", "askable.npy")  # the files every group folder holds


@contextmanager
def reading(path: Path, folder: Path, what: str = "", *, where: str = "") -> Iterator[None]:
    """Any failure to read or make sense of ``path`` (a faiss, numpy, pandas or JSON error, a
    missing field) becomes one UnreadableGallery naming it, never a traceback."""
    try:
        yield
    except GalleryError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError, EOFError) as error:
        raise UnreadableGallery(
            f"{path}: damaged or edited by hand ({where}{_reason(error, what)}); {rebuild_advice(folder)}."
        ) from None
    except zipfile.BadZipFile as error:  # a damaged .npz
        raise UnreadableGallery(f"{path}: damaged ({error}); {rebuild_advice(folder)}.") from None


def _reason(error: Exception, what: str) -> str:
    if isinstance(error, KeyError):
        return f"no {what or 'entry'} {error.args[0]!r}" if error.args else "a missing entry"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if type(error) is RuntimeError and "faiss" in str(error):  # its message is a C++ source location
        return "not a whole FAISS index: truncated or overwritten"
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


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


def read_tables(folder: Path, record: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The gallery's photos (images.csv) and failures (failures.csv)."""
    folder = Path(folder)
    with reading(folder / "images.csv", folder):
        table = pd.read_csv(folder / "images.csv", dtype=str, keep_default_na=False, na_values=[""])
    with reading(folder / "failures.csv", folder):
        failures = pd.read_csv(folder / "failures.csv", dtype=str, keep_default_na=False)
    missing = [column for column in TABLE_COLUMNS if column not in table]
    if missing:
        raise UnreadableGallery(f"{folder / 'images.csv'}: no column {', '.join(missing)}; {rebuild_advice(folder)}.")
    strangers = sorted(set(table["group"].astype(str)) - set(record["group_files"]))
    if strangers:
        raise UnreadableGallery(
            f"{folder / 'images.csv'}: rows of group(s) {', '.join(strangers)}, which {RECORD} does not "
            f"list; {rebuild_advice(folder)}."
        )
    return table, failures


def read_part(folder: Path, name: str, files: dict, table: pd.DataFrame, extra_methods) -> DatasetPart:
    """One dataset part as saved (``files``: its entry in gallery.json's group_files), checked to
    agree with images.csv: one index row, keypoint set and flag per photo."""
    part = folder / files["folder"]
    if not part.is_dir():
        raise UnreadableGallery(f"{part}: missing (the folder of group '{name}'); {rebuild_advice(folder)}.")
    rows = table[table["group"] == name]
    near = rows["near_duplicate"].to_numpy(dtype=object)
    near = np.where(pd.isna(near), None, near) if rows["near_duplicate"].notna().any() else None

    def features_of(file: str, required: bool = False) -> list[LocalFeatures | None] | None:
        if not required and not (part / file).is_file():
            return None
        with reading(part / file, folder):
            found = load_features(part / file)
        _check_length(part / file, len(found), len(rows), folder)
        return found

    features = features_of("local_features.npz")
    mirrored = None
    if (part / "mirrored_vectors.npy").is_file():
        with reading(part / "mirrored_vectors.npy", folder):
            flipped = np.load(part / "mirrored_vectors.npy")
        _check_length(part / "mirrored_vectors.npy", len(flipped), len(rows), folder)
        mirrored = Side(
            flipped,
            features_of("mirrored_local_features.npz"),
            {method: features_of(f"mirrored_local_features-{method}.npz", True) for method in extra_methods},
        )
    with reading(part / "vectors.faiss", folder):
        index = VectorIndex.load(part / "vectors.faiss")
    with reading(part / "askable.npy", folder):
        askable = np.load(part / "askable.npy")
    _check_length(part / "askable.npy", len(askable), len(rows), folder)
    adapter = None
    if (part / "adapter.npz").is_file():
        with reading(part / "adapter.npz", folder):
            adapter = load_adapter(part / "adapter.npz")
    taught = None
    if (part / "taught.npz").is_file():
        with reading(part / "taught.npz", folder), np.load(part / "taught.npz", allow_pickle=False) as content:
            taught = Taught(content["image_ids"].astype(object), content["labels"].astype(object), content["vectors"])
        if not len(taught.vectors) == len(taught.labels) == len(taught.image_ids):
            raise UnreadableGallery(
                f"{part / 'taught.npz'}: {len(taught.vectors)} vectors for {len(taught.labels)} labels; "
                f"the file is damaged, {rebuild_advice(folder)}."
            )
    with reading(folder / RECORD, folder, "field"):
        fit = fit_from_record(files["fit"])
    group = DatasetPart(
        name,
        rows["image_id"].to_numpy(dtype=object),
        rows["identity"].to_numpy(dtype=object),
        near,
        index,
        features,
        KeypointIndex(features) if features is not None else None,
        fit=fit,
        askable=askable,
        notes=files.get("notes", []),
        views=known_views(rows["view"]) if "view" in rows else None,
        extra={method: features_of(f"local_features-{method}.npz", True) for method in extra_methods},
        mirrored=mirrored,
        taught=taught,
    )
    if group.index.size != group.size:
        raise UnreadableGallery(
            f"{folder}: group '{name}' lists {group.size} photos but its index holds "
            f"{group.index.size}; the gallery is damaged, rebuild it."
        )
    if adapter is not None:
        group.use_adapter(adapter)
    return group


def check_gallery(folder: Path, *, thorough: bool = True) -> tuple[dict, list[str]]:
    """Read every file of a saved gallery as loading it would, without its model: raise
    UnreadableGallery on the first problem; return gallery.json and notes (see verify_files).
    Not ``thorough``: the files' sizes against their checksummed record only (cheap; what
    `gallery info` checks), every file read only in a gallery saved without checksums."""
    folder = Path(folder)
    record = read_record(folder)
    notes = verify_files(folder, record, contents=thorough)
    if thorough or notes:
        table, _ = read_tables(folder, record)
        for name, files in record["group_files"].items():
            read_part(folder, name, files, table, record.get("extra_local_features", {}))
    return record, notes


def _check_length(path: Path, found: int, expected: int, folder: Path) -> None:
    if found != expected:
        raise UnreadableGallery(
            f"{path}: holds {found} photos, images.csv lists {expected}; the files do not belong "
            f"together, {rebuild_advice(folder)}."
        )


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
        "adaptation": fit.adaptation,
        "fusion_rule": fit.fusion_rule,
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
        record.get("adaptation"),  # absent in galleries fitted before adaptation existed
        record.get("fusion_rule"),  # absent in galleries fitted before learned rules existed
    )


def _number(value):
    """A threshold back from JSON: "none" is a closed set, null the -inf that jsonable wrote."""
    if value == "none":
        return None
    return -np.inf if value is None else float(value)
