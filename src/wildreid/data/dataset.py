"""Datasets: one internal table, loaded from three layouts, validated before any heavy work.

The internal form is a pandas table with one row per image and these columns:

    image_id   str   unique; kept exactly as written in the source (the submission echoes it)
    identity   str   the individual; None where unknown (queries of a real competition)
    path       str   absolute path of the image file
    split      str   "database" or "query"
    dataset    str   the group a query is compared within (AnimalCLEF: LynxID2025, ...)

plus whatever optional columns the source had (date, orientation, species, viewpoint, ...).
Two of them mean a region of the photo (regions.py): ``bbox`` ([x, y, w, h] in pixels) and
``segmentation`` (a COCO mask); they are checked here and kept in canonical form.
A query row *may* carry an identity: that is ground truth for evaluation only and is never used
to make a prediction.
"""

from __future__ import annotations

import errno
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from wildreid.data.images import IMAGE_SUFFIXES
from wildreid.data.regions import BBOX, SEGMENTATION, check_boxes_inside, normalise_region_columns

DATABASE = "database"
QUERY = "query"
NEW_INDIVIDUAL = "new_individual"

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message says where and what to do."""


@dataclass
class Dataset:
    """The images of one run: a validated table (see module docstring) and where it came from."""

    table: pd.DataFrame
    source: str

    @property
    def database(self) -> pd.DataFrame:
        return self.table[self.table["split"] == DATABASE]

    @property
    def queries(self) -> pd.DataFrame:
        return self.table[self.table["split"] == QUERY]

    @property
    def dataset_names(self) -> list[str]:
        return list(dict.fromkeys(self.table["dataset"]))

    def subset(self, mask: pd.Series) -> "Dataset":
        """The rows where the boolean ``mask`` (aligned with the table) is true."""
        return Dataset(self.table[mask].reset_index(drop=True), self.source)


# --------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    source: str | Path, *, query_dir: str | Path | None = None, allow_outside_paths: bool = False, **csv_options: Any
) -> Dataset:
    """Load any supported layout.

    - ``source`` is a CSV file: columns named by ``csv_options`` (see :func:`load_csv`);
    - ``source`` is a folder with ``metadata.csv`` (AnimalCLEF2025 layout);
    - ``source`` is a folder of identity folders and ``query_dir`` a folder of query images.

    Every image must lie inside the dataset's folder (symbolic links resolved), so that a
    metadata file cannot make wildreid read (or ``catalog import`` copy) files elsewhere;
    ``allow_outside_paths`` lifts that rule for data the user knows to be spread out.
    """
    source = Path(source)
    if query_dir is not None:
        return load_folders(source, query_dir, allow_outside_paths=allow_outside_paths)
    for candidate in (source, source / "metadata.csv"):
        _refuse_unreachable(candidate)
    if source.is_file():
        return load_csv(source, allow_outside_paths=allow_outside_paths, **csv_options)
    if (source / "metadata.csv").is_file():
        return load_csv(source / "metadata.csv", allow_outside_paths=allow_outside_paths, **csv_options)
    if not source.exists():
        raise DatasetError(
            f"{source}: no such file or folder. Give a metadata CSV, a folder "
            "holding metadata.csv, or a database folder with --query-dir."
        )
    raise DatasetError(
        f"{source}: this folder has no metadata.csv. Give the CSV file itself (with --path-column, "
        "--identity-column, --split-column if its columns are named differently), or use the "
        "folder-per-identity layout by also passing --query-dir QUERY_FOLDER."
    )


def _refuse_unreachable(path: Path) -> None:
    """A path that exists as a name but cannot be followed (a symbolic-link loop, no permission)
    is a DatasetError saying so, not 'no such file' or a traceback later."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DatasetError(
                f"{path}: a symbolic link that loops (it leads back to itself); point it "
                "at the real file or folder, or give that instead."
            ) from None
        if error.errno != errno.ENOTDIR:
            raise DatasetError(f"{path}: cannot be read ({error.strerror}).") from None


def read_text_csv(path: str | Path, what: str = "file", expected: str = "") -> pd.DataFrame:
    """A CSV with every cell as text: ids like "007" must survive, and identities are labels, not
    numbers. A missing or unreadable file is a DatasetError naming it (``what``: "split file"...);
    so are an empty file (``expected`` says what it should hold), text that is not UTF-8 (with the
    row) and another delimiter than the comma."""
    path = Path(path)
    _refuse_unreachable(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found.") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder; give the CSV file itself.") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the {what} ({error.strerror or error}).") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        row = data[: error.start].count(b"\n") + 1  # rows counted like every message: the header is row 1
        raise DatasetError(
            f"{path}: row {row} is not UTF-8 text (byte 0x{data[error.start]:02x}; the file is probably "
            "Latin-1 or Windows-1252). Save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 old.csv > new.csv`, "
            "or 'CSV UTF-8' in a spreadsheet."
        ) from None
    if not text.strip():
        raise DatasetError(f"{path}: the {what} is empty, not even a header row. " + (expected or "Give the CSV file."))
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DatasetError(f"{path}: not a readable CSV file ({error}).") from None
    if len(table.columns) == 1:
        header = str(table.columns[0])
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
            if delimiter in header:
                raise DatasetError(
                    f"{path}: the columns are separated by {name}, not commas (header "
                    f"'{header[:80]}'). Save it as comma-separated CSV."
                )
    return table


def load_csv(
    csv_path: str | Path,
    *,
    root: str | Path | None = None,
    image_id_column: str = "image_id",
    path_column: str = "path",
    identity_column: str = "identity",
    split_column: str = "split",
    dataset_column: str = "dataset",
    database_value: str = DATABASE,
    query_value: str = QUERY,
    check_files: bool = True,
    allow_outside_paths: bool = False,
) -> Dataset:
    """Load a metadata CSV (AnimalCLEF2025's ``metadata.csv`` is the default naming).

    Image paths are relative to ``root`` (default: the CSV's folder) and must stay inside it,
    symbolic links resolved, unless ``allow_outside_paths``. Without an image-id column the row
    number is the id; without a dataset column the dataset is the root folder's name.
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    raw = read_text_csv(csv_path)
    if raw.empty:
        raise DatasetError(
            f"{csv_path}: the file has a header but no rows: nothing to do. Add one row "
            "per image, or give the right file."
        )

    needed = {"path": path_column, "identity": identity_column, "split": split_column}
    missing = [f"'{column}' ({role})" for role, column in needed.items() if column not in raw.columns]
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; the file has "
            f"{', '.join(repr(c) for c in raw.columns)}. Rename them, or name yours with "
            "--path-column / --identity-column / --split-column."
        )

    table = pd.DataFrame(
        {
            "image_id": raw[image_id_column]
            if image_id_column in raw.columns
            else pd.Series(range(len(raw))).astype(str),
            "identity": raw[identity_column].str.strip().replace("", None),
            # realpath, not Path.resolve: a symbolic-link loop is then a missing file, not a RuntimeError.
            "path": [os.path.realpath(root / p) if p else "" for p in raw[path_column]],
            "split": raw[split_column]
            .str.strip()
            .str.lower()
            .replace({database_value.lower(): DATABASE, query_value.lower(): QUERY}),
            "dataset": raw[dataset_column] if dataset_column in raw.columns else root.resolve().name,
        }
    )
    for column in raw.columns:
        if (
            column not in {image_id_column, path_column, identity_column, split_column, dataset_column}
            and column not in table.columns
        ):
            table[column] = raw[column].replace("", None)
    dataset = Dataset(table.reset_index(drop=True), str(csv_path))
    if not allow_outside_paths:
        _refuse_outside(table["path"], raw[path_column], root, [f"row {i + 2}" for i in range(len(raw))], str(csv_path))
    validate_dataset(dataset, check_files=check_files, row_offset=2, file_label=str(csv_path))
    return dataset


def leads_outside(real: str, top: str) -> bool:
    """Whether a file whose real location is ``real`` lies outside the folder ``top``, both as
    os.path.realpath gives them (every symbolic link followed), so that a link is judged by where
    it leads, not by where it sits. Only names are compared: nothing is opened. The one rule of
    the datasets (every image inside the dataset's folder) and of `watch` (every photo inside the
    watched folder)."""
    return os.path.commonpath([top, real]) != top


def is_link_loop(path: str | Path) -> bool:
    """Whether ``path`` is a symbolic link that leads back to itself (directly or through others)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def _refuse_outside(resolved: Iterable[str], written: Iterable[str], root: Path, where: list[str], label: str) -> None:
    """DatasetError listing the images whose real location (links resolved) is outside ``root``.
    Images reached through a symbolic link (often the whole images/ folder) are listed by that
    link, once, with where it leads: listing their rows would name innocent-looking paths."""
    top = os.path.realpath(root)
    outside = [(w, p, real) for w, p, real in zip(where, written, resolved) if real and leads_outside(real, top)]
    if not outside:
        return
    through_links: dict[str, list[str]] = {}
    plain = []
    for w, p, real in outside:
        link = _symlink_on_the_way(root, p)
        if link is None:  # an absolute path: say where it really leads when that differs (a link)
            plain.append(f"  {w}: {p}" + (f" (a link to {real})" if os.path.isabs(p) and p != real else ""))
        else:
            through_links.setdefault(link, []).append(w)
    shown = [
        f"  {link} is a symlink to {os.path.realpath(root / link)}: {len(rows)} image(s) "
        f"through it ({', '.join(rows[:3])}{', ...' if len(rows) > 3 else ''})"
        for link, rows in through_links.items()
    ]
    shown += plain[:20] + ([f"  and {len(plain) - 20} more"] if len(plain) > 20 else [])
    how = "symlink(s) and path(s)" if through_links and plain else "symlink(s)" if through_links else "path(s)"
    raise DatasetError(
        f"{label}: {len(outside)} image(s) lead outside the dataset folder {top} through these "
        f"{how}:\n" + "\n".join(shown) + "\nIf reading photos there is intended, add "
        "--allow-outside-paths to the command (allow_outside_paths=True in Python); otherwise move "
        "the photos into the folder."
    )


def _symlink_on_the_way(root: Path, written: str) -> str | None:
    """The first symbolic link on the way from ``root`` along the relative path ``written``
    (e.g. "images" when images/ is a link), or None (an absolute path, or no link)."""
    if os.path.isabs(written):
        return None
    here = Path(root)
    for part in Path(written).parts:
        here = here / part
        if here.is_symlink():
            return here.relative_to(root).as_posix()
    return None


def load_folders(
    database_dir: str | Path,
    query_dir: str | Path | None,
    *,
    check_files: bool = True,
    allow_outside_paths: bool = False,
) -> Dataset:
    """Folder-per-identity database (``database_dir/<identity>/*.jpg``) plus a folder of queries
    (None: the database alone, e.g. to build or grow a gallery).

    Query images may sit directly in ``query_dir`` (truth unknown) or in identity sub-folders
    (truth known, for evaluation; a sub-folder named ``new_individual`` holds unknown animals).
    """
    database_dir = Path(database_dir)
    query_dir = Path(query_dir) if query_dir is not None else None
    for folder, role in ((database_dir, "database"), (query_dir, "query")):
        if folder is None:
            continue
        _refuse_unreachable(folder)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: the {role} folder does not exist.")
    rows: list[
        tuple[str, str | None, Path, str]
    ] = []  # (image_id, identity, path, split); ids relative to their folder
    for identity_dir in sorted(p for p in database_dir.iterdir() if p.is_dir()):
        for image in _image_files(identity_dir):
            rows.append((f"database/{identity_dir.name}/{image.name}", identity_dir.name, image, DATABASE))
    if not rows:
        raise DatasetError(
            f"{database_dir}: no images found in identity sub-folders (expected {database_dir}/<identity>/<photo>.jpg)."
        )
    if query_dir is not None:
        for image in _image_files(query_dir, recursive=True):
            relative = image.relative_to(query_dir)
            truth = relative.parts[0] if len(relative.parts) > 1 else None
            rows.append((f"query/{relative.as_posix()}", truth, image, QUERY))
    table = pd.DataFrame(rows, columns=["image_id", "identity", "path", "split"])
    if not allow_outside_paths:  # a symbolic link inside either folder may lead anywhere
        for split, folder in ((DATABASE, database_dir), (QUERY, query_dir)):
            files = table.loc[table["split"] == split]
            if folder is None:
                continue
            _refuse_outside(
                [os.path.realpath(p) for p in files["path"]],
                [str(p) for p in files["path"]],
                folder,
                list(files["image_id"]),
                str(folder),
            )
    table["path"] = table["path"].map(os.path.realpath)
    table["dataset"] = database_dir.resolve().name
    dataset = Dataset(table, f"{database_dir} + {query_dir}" if query_dir is not None else str(database_dir))
    validate_dataset(dataset, check_files=check_files)
    return dataset


def load_query_photos(
    sources: list[str | Path],
    *,
    path_column: str = "path",
    image_id_column: str = "image_id",
    allow_outside_paths: bool = False,
) -> pd.DataFrame:
    """Photos to identify against a gallery: image files, folders (searched recursively) and CSV
    files with a ``path_column`` (relative to the CSV's folder; optional image id, ``dataset``,
    ``identity``, ``viewpoint``/``orientation`` columns, and a ``split`` column whose 'query' rows
    are kept). Returns a table of image_id, path[, dataset, identity, viewpoint, orientation]; ids
    are file names, paths inside a folder, or the CSV's. With several folders, ids are paths
    from their common parent folder (camA/IMG_0001.JPG, camB/IMG_0001.JPG): two cameras' cards
    often hold the same file names."""
    parts = []
    folders = [Path(source) for source in sources if Path(source).is_dir()]
    id_root = _common_parent(folders) if len(folders) > 1 else None
    for source in map(Path, sources):
        _refuse_unreachable(source)
        if source.is_dir():
            files = _image_files(source, recursive=True)
            prefix = "" if id_root is None else Path(os.path.realpath(source)).relative_to(id_root).as_posix()
            parts.append(
                pd.DataFrame(
                    {
                        "image_id": [
                            (prefix + "/" if prefix not in ("", ".") else "") + f.relative_to(source).as_posix()
                            for f in files
                        ],
                        "path": [os.path.realpath(f) for f in files],
                    }
                )
            )
        elif source.suffix.lower() == ".csv":
            raw = read_text_csv(source)
            if path_column not in raw:
                raise DatasetError(
                    f"{source}: no '{path_column}' column (it has {', '.join(map(repr, raw.columns))}); "
                    "name the column of image paths with --path-column."
                )
            if "split" in raw:
                raw = raw[raw["split"].str.strip().str.lower() == QUERY]
            table = pd.DataFrame(
                {
                    "image_id": raw[image_id_column] if image_id_column in raw else raw[path_column],
                    "path": [os.path.realpath(source.parent / p) for p in raw[path_column]],
                }
            )
            # views.py reads viewpoint and orientation
            for column in ("dataset", "identity", BBOX, SEGMENTATION, "viewpoint", "orientation"):
                if column in raw:
                    table[column] = raw[column].replace("", None).to_numpy()
            if not allow_outside_paths:
                _refuse_outside(
                    table["path"], raw[path_column], source.parent, [f"row {i + 2}" for i in raw.index], str(source)
                )
            parts.append(table)
        elif source.is_file():
            parts.append(pd.DataFrame({"image_id": [source.name], "path": [os.path.realpath(source)]}))
        else:
            raise DatasetError(f"{source}: no such photo, folder or CSV of paths.")
    photos = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["image_id", "path"])
    if photos.empty:
        raise DatasetError(
            f"no photos found in {', '.join(map(str, sources))} "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}, or a CSV of paths)."
        )
    missing = [p for p in photos["path"] if not os.path.isfile(p)]
    loops = [p for p in missing if is_link_loop(p)]
    if loops:
        raise DatasetError(
            f"{len(loops)} photo(s) are symbolic links that loop (they lead back to themselves): "
            f"{_listing(loops)}. Point each link at the real photo, or remove it."
        )
    if missing:
        raise DatasetError(f"{len(missing)} photo(s) not found: {_listing(missing)}")
    repeated = photos["image_id"][photos["image_id"].duplicated()].unique().tolist()
    if repeated:
        raise DatasetError(
            f"photo ids given twice: {_listing(repeated)}; give each photo once, or an image_id "
            "column that tells them apart."
        )
    problems = normalise_region_columns(photos, lambda index: f"photo {photos['image_id'][index]}")
    problems = problems or check_boxes_inside(photos, lambda index: f"photo {photos['image_id'][index]}")
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) with the photos' regions:\n- " + "\n- ".join(problems))
    return photos


def _common_parent(folders: list[Path]) -> Path:
    return Path(os.path.commonpath([os.path.realpath(folder) for folder in folders]))


def _image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The photos in ``folder``; a symbolic link that loops is kept, so that validation reports
    it as a loop instead of the photo vanishing without a word."""
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and is_link_loop(p)))
    )


# --------------------------------------------------------------------------------------------
# Validation: every problem found at once, each naming where it is and what to do.


def validate_dataset(
    dataset: Dataset, *, check_files: bool = True, row_offset: int = 0, file_label: str | None = None
) -> None:
    table, label = dataset.table, file_label or dataset.source
    where = (lambda index: f"row {index + row_offset}") if row_offset else (lambda index: table["image_id"][index])
    problems: list[str] = []

    missing_ids = table.index[table["image_id"].isna() | (table["image_id"] == "")]
    if len(missing_ids):
        problems.append(f"empty image_id at {_listing(map(where, missing_ids))}; give every row an id.")
    duplicated = table[table["image_id"].duplicated(keep=False) & (table["image_id"] != "")]
    if len(duplicated):
        groups = duplicated.groupby("image_id").groups
        problems.append(
            "duplicate image_id: "
            + "; ".join(f"'{image_id}' at {_listing(map(where, rows))}" for image_id, rows in groups.items())
            + ". Each image needs its own id."
        )
    bad_split = table.index[~table["split"].isin([DATABASE, QUERY])]
    if len(bad_split):
        values = sorted(set(table["split"][bad_split].astype(str)))
        problems.append(
            f"split must be 'database' or 'query'; found {values} at "
            f"{_listing(map(where, bad_split))}. Fix the values or pass "
            "--database-value / --query-value."
        )
    unlabelled = table.index[(table["split"] == DATABASE) & table["identity"].isna()]
    if len(unlabelled):
        problems.append(
            f"database images without identity at {_listing(map(where, unlabelled))}; "
            "label them or mark them as queries."
        )
    control = table.index[table["identity"].map(lambda i: isinstance(i, str) and bool(_CONTROL_CHARACTERS.search(i)))]
    if len(control):
        problems.append(
            f"identity with a control character (line break, tab...) at {_listing(map(where, control))}"
            "; identities are one line of text (they become file names, URLs and CSV cells): "
            "remove the character."
        )
    new_label = table.index[(table["split"] == DATABASE) & (table["identity"] == NEW_INDIVIDUAL)]
    if len(new_label):
        problems.append(
            f"database images labelled '{NEW_INDIVIDUAL}' at "
            f"{_listing(map(where, new_label))}; that label is reserved for answers."
        )
    empty_path = table.index[table["path"] == ""]
    if len(empty_path):
        problems.append(f"empty path at {_listing(map(where, empty_path))}.")
    # Region cells: checked (and rewritten in canonical form) here, so a bad box is reported with
    # its row before any work; whether it fits its photo needs the photo's header (below).
    region_problems = normalise_region_columns(table, where)
    problems += region_problems
    if check_files:
        absent = [(i, p) for i, p in zip(table.index, table["path"]) if p and not os.path.isfile(p)]
        loops = [(i, p) for i, p in absent if is_link_loop(p)]
        if loops:
            problems.append(
                f"{len(loops)} image file(s) are symbolic links that loop (they lead back to "
                "themselves); point each link at the real image, or remove it:\n"
                + "\n".join(f"  {where(i)}: {p}" for i, p in loops)
            )
            looping = {i for i, _ in loops}
            absent = [(i, p) for i, p in absent if i not in looping]
        if absent and len(absent) == len(table):
            problems.append(
                f"none of the {len(table)} image files exist (e.g. {absent[0][1]}); paths "
                "are relative to the CSV's folder: check that the images were copied there."
            )
        elif absent:
            problems.append(
                f"{len(absent)} image file(s) not found (paths are relative to the CSV's "
                "folder):\n" + "\n".join(f"  {where(i)}: {p}" for i, p in absent)
            )
    if check_files and not region_problems:
        problems += check_boxes_inside(table, where)
    query_sets = set(table.loc[table["split"] == QUERY, "dataset"])
    database_sets = set(table.loc[table["split"] == DATABASE, "dataset"])
    for name in sorted(query_sets - database_sets):
        count = int(((table["split"] == QUERY) & (table["dataset"] == name)).sum())
        problems.append(
            f"dataset '{name}' has {count} queries but no database images: nothing to "
            "compare them with. Add labelled images of that dataset or remove its queries."
        )
    if problems:
        raise DatasetError(f"{label}: {len(problems)} problem(s):\n- " + "\n- ".join(problems))


def _listing(items: Iterable[object], limit: int = 20) -> str:
    texts = [str(i) for i in items]
    shown = ", ".join(texts[:limit])
    return shown + (f" and {len(texts) - limit} more" if len(texts) > limit else "")


# --------------------------------------------------------------------------------------------
# Images
