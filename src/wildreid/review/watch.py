"""Photos identified as they arrive in a folder: field cameras, camera-trap card dumps, monitoring.

``Watcher`` polls a folder (recursively). A photo is read once it has *settled*: its size and
modification time are unchanged between two polls and it was last written at least
``settle_seconds`` ago, so a file still being copied is never read half done. Settled photos are
identified in batches against a gallery; each result is appended to ``results.csv`` (the columns
of candidates.csv; ``image_id`` is the photo's path inside the folder) as one write of one line,
flushed to disk before the next. The results file is the record of what is done: after a kill,
a restart skips every photo with a line and a torn last line is cut off, so no photo is lost and
none is recorded twice. A photo that cannot be read gets a line too (flag ``unreadable_image``),
so it is reported once and not retried.

Only photos inside the folder are read: a symbolic link that leads outside it (or that loops) is
refused before it is opened, reported once with its reason, and left alone (the same rule as the
datasets', data/dataset.py; ``allow_outside_paths`` lifts it). Photos are read through their real
path, so a link re-pointed after the check is not followed.

With a catalogue (``catalog``, and the gallery from ``catalog_gallery``), the photos go through
the review service (service.py): the gallery is kept up to date with reviewers' confirmations,
and every photo also becomes a query waiting for review in the web app, its result stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from wildreid.data.dataset import is_link_loop, leads_outside
from wildreid.data.images import IMAGE_SUFFIXES
from wildreid.gallery.gallery import Gallery
from wildreid.review.service import ReviewService
from wildreid.util.files import atomic_path

RESULTS = "results.csv"
BATCH = 32  # photos identified together: one model call, one shortlist search


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
    ):
        self.folder, self.out = Path(folder), Path(out)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: no such folder to watch.")
        self.top, self.allow_outside_paths = os.path.realpath(self.folder), allow_outside_paths
        self.refused: dict[str, str] = {}  # photo -> why it is not read, reported once
        self.gallery, self.catalog, self.dataset, self.cache_dir = gallery, catalog, dataset, cache_dir
        self.service = None
        if catalog is not None:
            self.service = ReviewService(
                gallery.preset, backbone=gallery.backbone, cache_dir=cache_dir, gallery=gallery
            )
        self.settle_seconds, self.report = settle_seconds, report
        self.results = self.out / RESULTS
        self.seen: dict[str, tuple[int, int]] = {}  # photo -> (size, mtime) at the last poll
        self.done = self._recorded()

    def _recorded(self) -> set[str]:
        """The photos with a line in results.csv; a torn last line (a kill mid-write) is cut off."""
        if not self.results.is_file():
            return set()
        data = self.results.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.results, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                os.fsync(handle.fileno())
        table = pd.read_csv(self.results, dtype=str, keep_default_na=False)
        return set(table["image_id"])

    def settled(self) -> list[Path]:
        """New photos whose size and time stamp held still since the last poll and that were last
        written at least settle_seconds ago."""
        ready, now, current = [], time.time(), {}
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
            current[name] = (stat.st_size, stat.st_mtime_ns)
            if self.seen.get(name) == current[name] and now - stat.st_mtime >= self.settle_seconds:
                ready.append(path)
        self.seen = current
        return ready

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
        queries = pd.DataFrame({"image_id": names, "path": [os.path.realpath(p) for p in paths]})
        if self.dataset is not None:
            queries["dataset"] = self.dataset
        elif len(self.gallery.groups) == 1:
            queries["dataset"] = next(iter(self.gallery.groups))
        if self.service is not None:
            # Filed as queries waiting for review, on the catalogue's gallery brought up to date
            # first (reviewers may have confirmed photos since the last batch).
            result = self.service.identify(self.catalog, queries, file_as="wildreid watch").result
            self.gallery = self.service.gallery
        else:
            result = self.gallery.identify(queries, cache_dir=self.cache_dir, progress=False)
        rows = result.candidates
        for position, name in enumerate(names):
            self._append(rows.iloc[[position]])
            self.done.add(name)
            self.seen.pop(name, None)
            row = rows.iloc[position]
            if row["error"]:
                self.report(f"skipped {name}: {row['error']}")
            else:
                self.report(f"{name}: {row['prediction']} (score {row['top1_score']:.3f})")

    def _append(self, row: pd.DataFrame) -> None:
        """One result line, in one write, on disk before the next (the header with the first)."""
        if not self.results.is_file():
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.results) as temporary:
                temporary.write_text(",".join(row.columns) + "\n", encoding="utf-8")
        line = row.to_csv(header=False, index=False, lineterminator="\n")  # as candidates.csv writes it
        descriptor = os.open(self.results, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(descriptor, line.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
