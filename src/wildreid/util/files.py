"""Atomic file writing: a reader (or a re-run after a crash) sees the old file or the new one,
never half of one."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    os.chmod(temporary, FILE_MODE & ~current_umask())
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_csv_atomic(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)


# Modes a plain open() or mkdir() would use before the umask. tempfile makes its files 0600 and
# its folders 0700 whatever the umask, which would leave run outputs, galleries and reports
# unreadable to colleagues on a shared station server; the files we rename into place get the
# mode the user's umask asks for instead.
FILE_MODE = 0o666
FOLDER_MODE = 0o777


def current_umask() -> int:
    """The process umask. Linux shows it in /proc (read without changing it, so threads are
    safe); elsewhere os.umask is the only getter: it sets a value, so the old one is put back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temporary_folder(prefix: str, parent: Path) -> Path:
    """tempfile.mkdtemp beside the final place, with the mode the umask gives a new folder."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, FOLDER_MODE & ~current_umask())
    return folder


STAGING = ".wildreid-new-"  # prefixes of the temporary folders beside a folder being replaced
RETIRED = ".wildreid-old-"


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block ends without error it takes the
    place of ``path`` (an earlier folder there is removed, never mixed with the new one). On an
    error the temporary folder is deleted and ``path`` stays as it was. Readers see the old folder
    or the new one; a crash between the two renames leaves the old one under a .wildreid-old-
    name, put back by the next call (:func:`remove_leftovers`)."""
    path = Path(path)
    remove_leftovers(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temporary_folder(STAGING + path.name + ".", path.parent)
    try:
        yield staging
        for file in staging.rglob("*"):
            if file.is_file():
                with open(file, "rb") as written:
                    os.fsync(written.fileno())
        _swap_in(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, path: Path) -> None:
    retired = None
    if path.is_dir():
        retired = Path(tempfile.mkdtemp(prefix=RETIRED + path.name + ".", dir=path.parent))
        os.replace(path, retired / "old")
    try:
        os.replace(staging, path)
    except OSError:
        if retired is not None:  # put the earlier folder back
            os.replace(retired / "old", path)
            shutil.rmtree(retired, ignore_errors=True)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def remove_leftovers(path: Path) -> None:
    """Temporary folders of an earlier atomic_folder(path) that was killed; an earlier folder
    killed between the two renames is first put back in place."""
    for retired in path.parent.glob(f"{RETIRED}{path.name}.*"):
        if not path.exists() and (retired / "old").is_dir():
            os.replace(retired / "old", path)
    for prefix in (STAGING, RETIRED):
        for leftover in path.parent.glob(f"{prefix}{path.name}.*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)


def jsonable(value: object) -> object:
    """JSON has no NaN/inf: write them as null (numpy scalars as plain numbers)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return jsonable(value.item())
    return value
