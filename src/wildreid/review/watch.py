"""Photos identified as they arrive in a folder: field cameras, camera-trap card dumps, monitoring.

``Watcher`` polls a folder (recursively). A photo is read once it has *settled*: its size and
modification time are unchanged between two polls and it was last written at least
``settle_seconds`` ago, so a file still being copied is never read half done. Settled photos are
identified in batches against a gallery; each result is appended to ``results.csv`` (the columns
of candidates.csv; ``image_id`` is the photo's path inside the folder) as one write of one line,
flushed to disk before the next. The results file is the record of what is done: after a kill,
a restart skips every photo with a line and a torn last line is cut off, so no photo is lost and
none is recorded twice. A photo that cannot be read gets a line too (flag ``unreadable_image``),
so it is reported once; it is tried again only once its size or time stamp changes (a copy that
stalled past ``settle_seconds``, then went on), or, after a restart, its bytes.

Photos are keyed by content too, as the caches are: each line carries the photo's ``sha256``, and
a photo whose bytes were answered before under another name (renamed, copied) is not identified
again: its line repeats that answer and names the first photo in ``same_photo``. The header must
be ours: a results.csv of another program, or of an earlier wildreid without ``sha256``, is
refused before anything is written, and no line of another width than the header is appended.

Only photos inside the folder are read: a symbolic link that leads outside it (or that loops) is
refused before it is opened, reported once with its reason, and left alone (the same rule as the
datasets', data/dataset.py; ``allow_outside_paths`` lifts it). Photos are read through their real
path, so a link re-pointed after the check is not followed.

With a catalogue (``catalog``, and the gallery from ``catalog_gallery``), the photos go through
the review service (service.py): the gallery is kept up to date with reviewers' confirmations,
and every photo also becomes a query waiting for review in the web app, its result stored.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from wildreid.data.dataset import is_link_loop, leads_outside, read_text_csv
from wildreid.data.images import IMAGE_SUFFIXES, content_hash
from wildreid.data.places import PLACE_COLUMNS
from wildreid.gallery.gallery import Gallery
from wildreid.review.service import ReviewService
from wildreid.util.files import atomic_path

RESULTS = "results.csv"
SHA256, SAME_PHOTO = "sha256", "same_photo"  # results.csv's own columns, after candidates.csv's
# What tells our results.csv from any other file: a header without them is never appended to.
OWN_COLUMNS = ("image_id", "prediction", "flags", "error", SHA256, SAME_PHOTO)
BATCH = 32  # photos identified together: one model call, one shortlist search


def check_folder(folder: str | Path) -> Path:
    """The folder to watch, refused with a message when it is not one (a link that loops...)."""
    folder = Path(folder)
    if is_link_loop(folder):
        raise ValueError(
            f"{folder}: a symbolic link that loops (it leads back to itself); point it at the "
            "real folder, or give that instead."
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder to watch.")
    return folder


def check_results(out: str | Path) -> list[str] | None:
    """The columns of the results file in ``out`` (None: there is none yet, or it is empty), after
    cutting off a torn last line. ``out`` that is a file, and a results.csv that is not ours (or
    an earlier wildreid's, without the sha256 column), are refused before anything is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"{out}: is a file, not a folder. --out is the folder that holds {RESULTS}: give a new "
            f"folder, or the one holding an earlier {RESULTS}."
        )
    results = out / RESULTS
    if results.is_dir():
        raise ValueError(f"{results}: is a folder, not a results file; move it away or give another --out.")
    if not results.exists():
        return None
    try:
        data = results.read_bytes()
    except OSError as error:
        raise ValueError(f"{results}: cannot be read ({error.strerror or error}).") from None
    if not data:
        return None  # holds nothing to lose: written afresh
    first, newline, _ = data.partition(b"\n")
    header = first.decode("utf-8", errors="replace").rstrip("\r").split(",")
    if newline and header[0] == "image_id" and set(OWN_COLUMNS) <= set(header):
        if not data.endswith(b"\n"):  # a kill inside a write: the torn line goes
            with open(results, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                os.fsync(handle.fileno())
        return header
    if newline and {"image_id", "prediction", "error"} <= set(header):
        raise ValueError(
            f"{results}: written by an earlier wildreid, without the '{SHA256}' column that "
            "recognises a renamed photo; nothing was added to it. Give another --out, or move the "
            "file aside (the photos it lists are then identified again)."
        )
    shown = first[:60].decode("utf-8", errors="replace")
    raise ValueError(
        f"{results}: not a results file of `wildreid watch` (its first line is '{shown}'); "
        "nothing was added to it. Give another --out, or move the file away."
    )


class Watcher:
    def __init__(
        self,
        folder: str | Path,
        out: str | Path,
        gallery: Gallery,
        *,
        catalog=None,
        dataset: str | None = None,
        cache_dir=None,
        settle_seconds: float = 2.0,
        allow_outside_paths: bool = False,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
    ):
        self.folder, self.out = check_folder(folder), Path(out)
        self.results = self.out / RESULTS
        self.columns = check_results(self.out)  # first: a foreign file is refused before any work
        self.top, self.allow_outside_paths = os.path.realpath(self.folder), allow_outside_paths
        self.refused: dict[str, str] = {}  # photo -> why it is not read, reported once
        self.gallery, self.catalog, self.dataset, self.cache_dir = gallery, catalog, dataset, cache_dir
        self.service = None
        if catalog is not None:
            self.service = ReviewService(
                gallery.preset, backbone=gallery.backbone, cache_dir=cache_dir, gallery=gallery
            )
        self.settle_seconds, self.report, self.clock = settle_seconds, report, clock
        self.seen: dict[str, tuple[int, int]] = {}  # photo -> (size, mtime) at the last poll
        self.done: set[str] = set()  # photos whose last line is an answer
        # photo -> (size, mtime) when it could not be read, retried once either changes (a copy
        # that stalled past settle_seconds, then went on); after a restart: its recorded sha256
        self.failed: dict[str, tuple[int, int] | str] = {}
        self.by_content: dict[str, dict[str, str]] = {}  # sha256 -> the line of its first answer
        if self.columns is not None:
            for line in read_text_csv(self.results, "results file").to_dict("records"):
                self._remember({str(k): str(v) for k, v in line.items()})

    def _remember(self, line: dict[str, str], stat: tuple[int, int] | None = None) -> None:
        name = line["image_id"]
        if line["error"]:
            self.done.discard(name)
            self.failed[name] = stat if stat is not None else line[SHA256]
        else:
            self.done.add(name)
            self.failed.pop(name, None)
            if line[SHA256] and not line[SAME_PHOTO]:
                self.by_content.setdefault(line[SHA256], line)

    def settled(self) -> list[Path]:
        """New photos whose size and time stamp held still since the last poll and that were last
        written at least settle_seconds ago (a photo that could not be read: only once it changed)."""
        ready, now, current = [], self.clock(), {}
        for path in sorted(self.folder.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            name = path.relative_to(self.folder).as_posix()
            if name in self.done or not self._allowed(path, name) or not path.is_file():
                continue
            try:
                stat = path.stat()
            except OSError:
                continue  # gone between the listing and now
            key = (stat.st_size, stat.st_mtime_ns)
            if name in self.failed and not self._changed_since_failure(path, name, key):
                continue
            current[name] = key
            if self.seen.get(name) == current[name] and now - stat.st_mtime >= self.settle_seconds:
                ready.append(path)
        self.seen = current
        return ready

    def _changed_since_failure(self, path: Path, name: str, stat: tuple[int, int]) -> bool:
        remembered = self.failed[name]
        if isinstance(remembered, tuple):
            return remembered != stat
        if _sha256(os.path.realpath(path)) == remembered:  # before a restart: the same bytes fail the same
            self.failed[name] = stat
            return False
        del self.failed[name]
        return True

    def _allowed(self, path: Path, name: str) -> bool:
        """Whether ``path`` may be read: judged by names alone (a link to /etc/passwd is never
        opened). A refusal is reported once, and again only if the reason changes."""
        real = os.path.realpath(path)
        if is_link_loop(path):
            why = "a symbolic link that loops (it leads back to itself); point it at the real photo, or remove it"
        elif not self.allow_outside_paths and leads_outside(real, self.top):
            why = (
                f"it leads to {real}, outside the watched folder; not read. Move the photo into the "
                "folder, or pass --allow-outside-paths if reading files elsewhere is intended"
            )
        else:
            self.refused.pop(name, None)
            return True
        if self.refused.get(name) != why:
            self.refused[name] = why
            self.report(f"refused {name}: {why}.")
        return False

    def poll(self) -> int:
        """Identify the photos that have settled; return how many were recorded."""
        ready = self.settled()
        for start in range(0, len(ready), BATCH):
            self._identify([p for p in ready[start : start + BATCH]])
        return len(ready)

    def run(self, poll_seconds: float = 1.0, *, once: bool = False) -> None:
        """Poll until interrupted; ``once``: until every photo present has been recorded."""
        while True:
            self.poll()
            if once and not self.seen:
                return
            time.sleep(poll_seconds if not once else min(poll_seconds, self.settle_seconds))

    def _identify(self, paths: list[Path]) -> None:
        names = [p.relative_to(self.folder).as_posix() for p in paths]
        # the real path, checked in settled(): a link re-pointed since is not followed
        reals = [os.path.realpath(p) for p in paths]
        digests = [_sha256(p) for p in reals]
        # A photo whose bytes were answered before (renamed, copied) is not identified again: its
        # line names the first; so is one that repeats another photo of this batch.
        fresh: dict[str, int] = {}
        for position, digest in enumerate(digests):
            if digest not in self.by_content and (not digest or digest not in fresh):
                fresh[digest or f"unread {position}"] = position
        first = sorted(fresh.values())
        if first:
            queries = pd.DataFrame({"image_id": [names[i] for i in first], "path": [reals[i] for i in first]})
            if self.dataset is not None:
                queries["dataset"] = self.dataset
            elif len(self.gallery.groups) == 1:
                queries["dataset"] = next(iter(self.gallery.groups))
            if self.service is not None:
                # Filed as queries waiting for review, on the catalogue's gallery brought up to
                # date first (reviewers may have confirmed photos since the last batch).
                result = self.service.identify(self.catalog, queries, file_as="wildreid watch").result
                self.gallery = self.service.gallery
            else:
                result = self.gallery.identify(queries, cache_dir=self.cache_dir, progress=False)
            rows = result.candidates.assign(**{SHA256: [digests[i] for i in first], SAME_PHOTO: ""})
            for row, position in enumerate(first):
                line = self._append(rows.iloc[[row]], self.seen.pop(names[position], None))
                if line["error"]:
                    self.report(f"skipped {names[position]}: {line['error']}")
                else:
                    score = line["top1_score"]
                    shown = f"score {float(score):.3f}" if score else "no candidate"
                    self.report(f"{names[position]}: {line['prediction']} ({shown})")
        for position, (name, digest) in enumerate(zip(names, digests)):
            earlier = self.by_content.get(digest) if digest else None
            if position in fresh.values() or earlier is None:
                continue  # identified above; or the same bytes as a photo that failed: next poll
            same = pd.DataFrame([{**earlier, "image_id": name, SAME_PHOTO: earlier["image_id"]}])
            self._append(same, self.seen.pop(name, None))
            self.report(f"{name}: the same photo as {earlier['image_id']} ({earlier['prediction']})")

    def _append(self, row: pd.DataFrame, stat: tuple[int, int] | None) -> dict[str, str]:
        """One result line, in one write, on disk before the next (the header with the first);
        returns it as written. A line that does not fit the file's header is never written."""
        if self.columns is not None:
            # A results.csv begun before wildreid read EXIF goes on without its place columns.
            row = row[[c for c in row.columns if c in self.columns or c not in PLACE_COLUMNS]]
        if self.columns is None:
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.results) as temporary:
                temporary.write_text(",".join(row.columns) + "\n", encoding="utf-8")
            self.columns = list(row.columns)
        if set(row.columns) != set(self.columns):
            raise ValueError(
                f"{self.results}: its columns are not the ones this run writes (it was written "
                f"with other settings: a preset or --top-k); nothing was added to it. Give another "
                f"--out, or move the file aside.\n  file: {','.join(self.columns)}\n  "
                f"this run: {','.join(row.columns)}"
            )
        text = row[self.columns].to_csv(header=False, index=False, lineterminator="\n")  # as candidates.csv
        fields = list(csv.reader(io.StringIO(text)))
        if len(fields) != 1 or len(fields[0]) != len(self.columns):
            raise ValueError(f"{self.results}: a line of another width than the header was about to be written.")
        descriptor = os.open(self.results, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(descriptor, text.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        line = dict(zip(self.columns, fields[0]))
        self._remember(line, stat)
        return line


def _sha256(path: str | Path) -> str:
    """The photo's content key (as the caches key photos), or "" when it cannot be read."""
    try:
        return content_hash(Path(path).read_bytes())
    except OSError:
        return ""
