"""Identification jobs: uploads are identified in one background thread while the page polls
``/api/jobs/<id>`` for progress.

The work is the review service's (review/service.py), which the runner keeps for the server's
life: the catalogue's gallery (the fitted database side, see gallery/), brought up to date at the
start of each job, so photos confirmed by reviewers are matched against from the next upload on;
and what the waiting photos' grouping needs (review/waiting.py). Each upload is described and
matched once, when it is identified; grouping the waiting photos of its dataset then adds only
its comparisons with them, so an upload costs the same however long the review backlog.

The grouping (review/pending.py) is kept in memory per dataset, with the reviewers' answers
applied; a grouping job rebuilds it whenever it is missing (a restart) or out of date (photos
filed, an undo), reading the answers back from the catalogue.

The job's queries are rows of the catalogue (status 'queued' until their candidates are stored),
so a server restarted mid-job picks the unfinished ones up again; only the progress counters live
in memory. One worker thread runs the jobs in turn: the model is loaded once, and CPU-heavy
extraction does not compete with itself.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wildreid.catalog.changes import answers_in_force, pair_answers
from wildreid.catalog.dataset import query_table
from wildreid.catalog.store import Catalog, CatalogError
from wildreid.describe.backbones import BackboneUnavailable
from wildreid.gallery.gallery import GalleryError
from wildreid.presets import get_preset
from wildreid.review.identify import catalog_cache_dir
from wildreid.review.pending import UPLOAD, PendingGrouping, pending_queries
from wildreid.review.service import ReviewService
from wildreid.web.config import WebConfig

log = logging.getLogger("wildreid.web")


@dataclass
class Job:
    id: str
    query_ids: list[int]
    stage: str = "waiting for earlier uploads"
    done: int = 0
    total: int = 0
    status: str = "queued"  # queued | running | done | failed
    error: str = ""
    rejected: list[str] = field(default_factory=list)  # upload messages, shown on the job page
    finished_at: float | None = None
    kind: str = "identify"  # identify (an upload) | group (the waiting photos of ``dataset``)
    dataset: str | None = None
    next_url: str | None = None  # group jobs: where the page goes when done

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "status": self.status,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "rejected": self.rejected,
            "query_ids": self.query_ids,
            "kind": self.kind,
            "dataset": self.dataset,
        }


def new_job_id() -> str:
    return secrets.token_hex(8)


class GroupingFailed(Exception):
    """The waiting photos could not be grouped; the message says why."""


class JobRunner:
    KEEP_FINISHED_S = 24 * 3600  # finished jobs are forgotten after a day (their results stay)

    def __init__(self, config: WebConfig, *, backbone=None, identify: Callable | None = None):
        self.config, self.backbone = config, backbone
        # Identification and grouping against the catalogue (worker thread only); made with the
        # model, at the first job, and kept: its gallery and the waiting photos' evidence.
        self.service: ReviewService | None = None
        # Identifies one queued upload and stores its result: (catalogue, query row) -> None.
        self.identify = identify or self._identify_upload
        # Per dataset, the grouping of its waiting photos; read and changed by requests (answers)
        # and replaced by the worker, always under group_lock.
        self.groupings: dict[str, PendingGrouping] = {}
        self.grouping_failures: dict[str, tuple[frozenset, str]] = {}  # dataset -> (waiting photos, why)
        # Bumped whenever the catalogue changes under a dataset's grouping (photos filed, an
        # undo, a merge): a grouping job that started before installs nothing, however its
        # photos compare (it may have used individuals that are gone).
        self.generations: dict[str, int] = {}
        self.group_lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        # The background refit that learns from reviewers' answers (maybe_learn); one at a time,
        # started under its own lock (not ``lock``, which every progress poll takes).
        self.learning: threading.Thread | None = None
        self.learning_lock = threading.Lock()

    @property
    def gallery(self):
        """The catalogue's gallery as the last job brought it up to date (None before any)."""
        return self.service.gallery if self.service is not None else None

    # --- called from requests

    def submit(self, job: Job) -> None:
        with self.lock:
            self._forget_old()
            self.jobs[job.id] = job
        self._ensure_thread()
        self.queue.put(job.id)

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def request_grouping(self, dataset: str, next_url: str) -> Job:
        """The job that will (re)group ``dataset``'s waiting photos: one of that dataset not
        started yet (an upload regroups its dataset when it ends), else a new one. A running job
        may have read the waiting photos already, so it does not count."""
        with self.lock:
            for job in self.jobs.values():
                if job.dataset == dataset and job.status == "queued":
                    if job.kind == "group":
                        job.next_url = next_url
                    return job
        job = Job(new_job_id(), [], kind="group", dataset=dataset, stage="waiting for earlier jobs", next_url=next_url)
        self.submit(job)
        return job

    def grouping(self, dataset: str) -> PendingGrouping | None:
        """The dataset's grouping (use it under ``group_lock``)."""
        with self.group_lock:
            return self.groupings.get(dataset)

    def invalidate(self, dataset: str, replacement: PendingGrouping | None = None) -> None:
        """The catalogue changed under ``dataset``'s grouping: drop it (or hold ``replacement``,
        built from it for the change), and keep the results of grouping jobs already started."""
        with self.group_lock:
            self.generations[dataset] = self.generations.get(dataset, 0) + 1
            if replacement is None:
                self.groupings.pop(dataset, None)
            else:
                self.groupings[dataset] = replacement

    def grouping_failure(self, dataset: str, waiting: frozenset) -> str | None:
        """Why grouping these very waiting photos failed last time (None: it did not)."""
        with self.group_lock:
            failure = self.grouping_failures.get(dataset)
        return failure[1] if failure and failure[0] == waiting else None

    def resume_unfinished(self) -> None:
        """Queue again the queries a previous server process did not finish."""
        with Catalog(self.config.catalog) as catalog:
            waiting = catalog.queries(status="queued", limit=100_000)
        by_job: dict[str, list[int]] = {}
        for query in waiting:
            by_job.setdefault(query["job_id"] or new_job_id(), []).append(query["id"])
        datasets = {query["id"]: query["dataset"] for query in waiting}
        for job_id, query_ids in by_job.items():
            self.submit(Job(job_id, query_ids, total=len(query_ids), dataset=datasets[query_ids[0]]))

    def maybe_learn(self) -> bool:
        """Refit the catalogue's gallery in the background, learning from the reviewers' answers,
        once ``config.refit_after`` answers were given since it last learned (never when 0, nor
        before the first job loaded the gallery, nor with a preset that adapts nothing). Uploads
        go on meanwhile with the gallery in memory; the refitted one is installed when done.
        Returns whether a refit was started."""
        service = self.service
        if self.config.refit_after <= 0 or service is None or service.gallery is None or service.preset.adapt == "none":
            return False
        with self.learning_lock:
            if self.learning is not None and self.learning.is_alive():
                return False
            with Catalog(self.config.catalog) as catalog:
                new = answers_in_force(catalog) - service.gallery.learned_answers
            if new < self.config.refit_after:
                return False
            self.learning = threading.Thread(target=self._learn, args=(service,), name="wildreid-learn", daemon=True)
            self.learning.start()
        return True

    def _learn(self, service: ReviewService) -> None:
        started = time.perf_counter()
        try:
            with Catalog(self.config.catalog) as catalog:
                gallery = service.learn(catalog)
            service.install(gallery)
            log.info(
                "the catalogue's gallery learned from %d answers in %.0f s",
                gallery.learned_answers,
                time.perf_counter() - started,
            )
        except Exception:  # noqa: BLE001 - the gallery in use stays; the details go to the server log
            log.exception("learning from the reviewers' answers failed; the gallery in use is unchanged")

    def stop(self) -> None:
        if self.learning is not None:
            self.learning.join(timeout=600)
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout=30)
            self.thread = None

    # --- the worker

    def _ensure_thread(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._work, name="wildreid-jobs", daemon=True)
                self.thread.start()

    def _work(self) -> None:
        while True:
            job_id = self.queue.get()
            if job_id is None:
                return
            job = self.get(job_id)
            if job is None:
                continue
            try:
                self._run(job)
                self._update(job, status="done", stage="done", finished_at=time.time())
                self.maybe_learn()
            except (BackboneUnavailable, GroupingFailed) as error:
                self._fail(job, str(error))
            except Exception:  # noqa: BLE001 - keep serving; the details go to the server log
                reference = secrets.token_hex(4)
                log.exception("job %s failed (reference %s)", job.id, reference)
                what = "grouping" if job.kind == "group" else "identification"
                self._fail(job, f"{what} failed (reference {reference}); the details are in the server log.")

    def _run(self, job: Job) -> None:
        self._update(job, status="running", stage="loading the model", done=0, total=len(job.query_ids))
        service = self._service()
        with Catalog(self.config.catalog) as catalog:
            self._update(job, stage="bringing the catalogue's gallery up to date")

            def describing(stage, done, total):
                self._update(job, stage=f"describing catalogue photos ({done} of {total}; done once)")

            service.sync(catalog, progress=describing)
            for position, query_id in enumerate(job.query_ids):
                query = catalog.query(query_id)
                if query is None or query["status"] != "queued":
                    continue
                self._update(job, stage=f"identifying photo {position + 1} of {len(job.query_ids)}", done=position)
                try:
                    # One photo at a time: progress per photo, and one bad photo fails alone.
                    self.identify(catalog, query)
                except CatalogError as error:
                    catalog.set_query_result(query_id, None, error=str(error))
            self._update(job, done=len(job.query_ids))
            datasets = [job.dataset] if job.dataset else sorted({catalog.query(q)["dataset"] for q in job.query_ids})
            for dataset in datasets:
                self._update(job, stage=f"grouping the waiting photos of {dataset}")
                problem = self._group(catalog, dataset)
                if problem and job.kind == "group":
                    raise GroupingFailed(problem)

    def _service(self) -> ReviewService:
        """The review service, made with the model the first time."""
        if self.service is None:
            preset = get_preset(self.config.preset)
            if self.backbone is None:
                from wildreid.describe.backbones import load_backbone
                from wildreid.describe.extract import default_device

                self.backbone = load_backbone(
                    preset.backbone, preprocess=preset.preprocess, device=self.config.device or default_device()
                )
            self.service = ReviewService(
                preset,
                backbone=self.backbone,
                cache_dir=self.config.cache_dir or catalog_cache_dir(self.config.catalog),
                loader_workers=0,  # in a server thread: no forked loader processes
                keep_waiting=True,
            )
        return self.service

    def _identify_upload(self, catalog: Catalog, query: dict) -> None:
        """Identify one filed upload on the gallery as the job brought it up to date, and store
        its result; the service keeps what grouping it next needs."""
        photo = catalog.photo_path(query["stored_path"])
        queries = query_table(catalog, [photo], query_ids=[f"{UPLOAD}{query['id']}"], dataset=query["dataset"])
        self.service.identify(catalog, queries, query_ids=[query["id"]], cache_queries=False, sync=False)

    def _group(self, catalog: Catalog, dataset: str) -> str | None:
        """Group ``dataset``'s waiting photos; return why it failed, or None. A failure is kept,
        so that the page says why instead of asking again."""
        waiting = None
        with self.group_lock:
            generation = self.generations.get(dataset, 0)
        try:
            # The gallery is brought up to date after the generation is read: a change made
            # before is in the gallery, one made after voids this grouping.
            pending = self.service.group(catalog, dataset)
            waiting = frozenset(pending.query_ids)
            with self.group_lock:
                if self.generations.get(dataset, 0) != generation:
                    return None  # changed meanwhile; whoever changed it asked for a new grouping
                # Answers given while this ran are in the catalogue: apply them all again.
                pending.apply_answers(pair_answers(catalog, dataset))
                self.groupings[dataset] = pending
                self.grouping_failures.pop(dataset, None)
            return None
        except (CatalogError, GalleryError) as error:
            message = f"the waiting photos of {dataset} could not be grouped: {error}"
        except Exception:  # noqa: BLE001 - identification itself succeeded; keep serving
            reference = secrets.token_hex(4)
            log.exception("grouping %s failed (reference %s)", dataset, reference)
            message = (
                f"the waiting photos of {dataset} could not be grouped (reference {reference}; see the server log)."
            )
        waiting = frozenset(q["id"] for q in pending_queries(catalog, dataset)) if waiting is None else waiting
        with self.group_lock:
            self.groupings.pop(dataset, None)
            self.grouping_failures[dataset] = (waiting, message)
        return message

    def _update(self, job: Job, **changes) -> None:
        with self.lock:
            for name, value in changes.items():
                setattr(job, name, value)

    def _fail(self, job: Job, message: str) -> None:
        # Leave no query 'queued' forever: mark them failed so a reviewer can still decide them
        # (before the job says 'failed', so a page that sees the job failed sees the queries too).
        with Catalog(self.config.catalog) as catalog:
            for query_id in job.query_ids:
                catalog.set_query_result(query_id, None, error=message)
        self._update(job, status="failed", error=message, stage="failed", finished_at=time.time())

    def _forget_old(self) -> None:
        cutoff = time.time() - self.KEEP_FINISHED_S
        for job_id in [j.id for j in self.jobs.values() if j.finished_at and j.finished_at < cutoff]:
            del self.jobs[job_id]
