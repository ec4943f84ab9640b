"""Latency of one uploaded photo in the review web app, warm server, catalogue of all 3,776
Holstein2025 photos; and the batch rule it replaced, measured in the same run.

    python benchmarks/gallery_latency.py [--presets offline,fusion] [--photos 10] [--burst 30]
                                         [--baseline-rev 0425512] [--baseline-presets offline,fusion]

For each preset: a real uvicorn server on 127.0.0.1 (the app of `wildreid serve`) over one
catalogue; a first upload warms it (model load, the catalogue's gallery built and saved: timed
apart; with ``--work`` kept from an earlier run, the saved gallery is only loaded); then
``--photos`` single-photo uploads one after another, and a burst of ``--burst``
single-photo uploads sent back to back. The photos uploaded are Holstein2025 query photos
re-encoded (JPEG quality 92), so their bytes are new to the catalogue and every upload pays its
own extraction. Latency is from sending the upload to its job reported done (upload included),
and from the upload's answer to done (upload excluded).

Baseline: ``catalog.identify_with_catalog`` for one photo as the last commit before the gallery
ran it (a ``git worktree`` of ``--baseline-rev`` in a subprocess), on the same catalogue, twice in
one process; the second call is the warm figure (the web app called exactly this per upload).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TOKEN = "benchmark-review-token-0123456789"
HEADERS = {"X-Wildreid-Token": TOKEN, "X-Wildreid-Reviewer": "benchmark"}


def make_catalogue(folder: Path) -> Path:
    from wildreid.catalog.importer import import_dataset
    from wildreid.catalog.store import Catalog
    from wildreid.data.dataset import load_dataset

    path = folder / "holstein.sqlite"
    dataset = load_dataset(SHARED / "Holstein2025")
    with Catalog(path) as catalog:
        import_dataset(catalog, dataset, include_queries=True)
        assert catalog.counts()["images"] == len(dataset.table), catalog.counts()
    return path


def upload_photos(count: int, skip: int = 0) -> list[tuple[str, bytes]]:
    """Query photos of Holstein2025, re-encoded so their bytes are not in the catalogue."""
    from PIL import Image

    from wildreid.data.dataset import load_dataset

    queries = load_dataset(SHARED / "Holstein2025").queries["path"].tolist()[skip : skip + count]
    photos = []
    for path in queries:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "JPEG", quality=92)
        photos.append((Path(path).stem + ".jpg", buffer.getvalue()))
    return photos


def serve(catalog: Path, preset: str, cache: Path):
    import uvicorn

    from wildreid.web.app import create_app
    from wildreid.web.config import WebConfig

    application = create_app(WebConfig(catalog, token=TOKEN, preset=preset, cache_dir=cache))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def send(client, name: str, data: bytes) -> tuple[str, float]:
    response = client.post(
        "/uploads", headers=HEADERS, files=[("photos", (name, data, "image/jpeg"))], follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[-1], time.perf_counter()


def wait(client, job_id: str, timeout: float = 3600) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        state = client.get(f"/api/jobs/{job_id}").json()
        if state["status"] in ("done", "failed"):
            assert state["status"] == "done", state
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(job_id)


def measure(catalog: Path, preset: str, cache: Path, photos: int, burst: int) -> dict:
    import httpx

    server, thread, url = serve(catalog, preset, cache)
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            warm_photo, *singles = upload_photos(1 + photos)
            started = time.perf_counter()
            job, _ = send(client, *warm_photo)
            warm_s = wait(client, job) - started
            totals, after_upload = [], []
            for name, data in singles:
                started = time.perf_counter()
                job, answered = send(client, name, data)
                done = wait(client, job)
                totals.append(done - started)
                after_upload.append(done - answered)
            burst_photos = upload_photos(burst, skip=1 + photos)
            started = time.perf_counter()
            jobs = [send(client, name, data)[0] for name, data in burst_photos]
            finished = [wait(client, job) for job in jobs]
            burst_s = max(finished) - started
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    return {
        "preset": preset,
        "warm_up_s": warm_s,
        "median_s": statistics.median(totals),
        "max_s": max(totals),
        "median_without_upload_s": statistics.median(after_upload),
        "burst": burst,
        "burst_s": burst_s,
    }


BASELINE = r"""
import sys, time, json
from pathlib import Path
from wildreid.catalog import Catalog, identify_with_catalog
from wildreid.presets import get_preset
catalog_path, photo, preset, cache = sys.argv[1:5]
with Catalog(catalog_path) as catalog:
    times = []
    for _ in range(2):
        started = time.perf_counter()
        identify_with_catalog(catalog, [photo], get_preset(preset), cache_dir=cache)
        times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def measure_baseline(revision: str, catalog: Path, preset: str, cache: Path) -> list[float]:
    baseline = Path(tempfile.gettempdir()) / f"wildreid-baseline-{revision}"
    if not baseline.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), revision],
            check=True,
            capture_output=True,
        )
    name, data = upload_photos(1, skip=200)[0]
    photo = cache.parent / name
    photo.write_bytes(data)
    process = subprocess.run(
        [sys.executable, "-c", BASELINE, str(catalog), str(photo), preset, str(cache)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(baseline / "src")},
    )
    if process.returncode:
        raise SystemExit(f"baseline {preset} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="offline,fusion")
    parser.add_argument("--photos", type=int, default=10)
    parser.add_argument("--burst", type=int, default=30)
    parser.add_argument("--baseline-rev", default="0425512")
    parser.add_argument("--baseline-presets", default="offline,fusion", help="'' to skip the baseline")
    parser.add_argument("--work", type=Path, help="keep the catalogue and its caches here (a re-run then starts warm)")
    arguments = parser.parse_args()
    scratch = arguments.work or Path(tempfile.mkdtemp(prefix="wildreid-latency-"))
    try:
        started = time.perf_counter()
        catalog = scratch / "holstein.sqlite"
        if not catalog.is_file():
            scratch.mkdir(parents=True, exist_ok=True)
            catalog = make_catalogue(scratch)
            print(f"catalogue of all Holstein2025 photos imported in {time.perf_counter() - started:.0f} s", flush=True)
        for preset in arguments.presets.split(","):
            cache = scratch / "cache"  # one cache: descriptors are extracted once for both presets
            row = measure(catalog, preset, cache, arguments.photos, arguments.burst)
            print(
                f"{preset:>7} gallery: first upload (builds the gallery) {row['warm_up_s']:.1f} s; one upload "
                f"median {row['median_s']:.2f} s (max {row['max_s']:.2f} s), without the upload "
                f"{row['median_without_upload_s']:.2f} s; burst of {row['burst']}: all done in {row['burst_s']:.1f} s",
                flush=True,
            )
            if preset in arguments.baseline_presets.split(","):
                first, second = measure_baseline(arguments.baseline_rev, catalog, preset, cache)
                print(
                    f"{preset:>7} batch (before): one photo {first:.1f} s cold, {second:.1f} s warm; "
                    f"ratio warm before / gallery median {second / row['median_s']:.0f}x",
                    flush=True,
                )
    finally:
        if arguments.work is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
