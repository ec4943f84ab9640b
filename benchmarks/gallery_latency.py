"""Latency of one uploaded photo in the review web app, warm server, by how many photos already
wait for review.

    python benchmarks/gallery_latency.py [--dataset LionData] [--preset offline]
                                         [--waiting 0,100,500] [--uploads 5] [--work DIR]

The catalogue holds the dataset's database photos. For each count in ``--waiting`` a copy of it
gets that many photos waiting for review (re-encoded photos of the dataset, JPEG quality 92, so
their bytes are new: identified in one call and filed with their results, as earlier uploads
would have left them). Then a real uvicorn server (the app of `wildreid serve`) on 127.0.0.1
takes a first upload that warms it (model load, the saved gallery, and the first grouping of the
waiting photos: timed apart), and ``--uploads`` single-photo uploads one after another, each
from sending it to its job reported done (identification and the regrouping of its dataset's
waiting photos included). The photos uploaded are the dataset's query photos re-encoded at JPEG
quality 85. Each count runs in a process of its own (a process's later servers run slower than
its first). Printed per count: the median upload latency and its ratio to the first count's.

Descriptors are cached in ``--work`` (default: a temporary folder), so a second run describes
nothing again. To compare with an older commit, run a copy of this file with that commit's
package first on ``PYTHONPATH`` (it uses only what both have; ``WILDREID_SHARED_DATA`` names the
datasets' folder when the copy lives elsewhere).
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
# The real datasets (as the tests find them): a copy of this file run elsewhere names them.
SHARED = Path(os.environ.get("WILDREID_SHARED_DATA", ROOT.parent / "shared" / "data"))
TOKEN = "benchmark-review-token-0123456789"
HEADERS = {"X-Wildreid-Token": TOKEN}  # the personal API token of the catalogue's one reviewer


def make_catalogue(dataset_name: str, folder: Path) -> Path:
    """A catalogue of the dataset's database photos, alone in ``folder``."""
    from wildreid.catalog.importer import import_dataset
    from wildreid.catalog.store import Catalog
    from wildreid.catalog.users import add_user
    from wildreid.data.dataset import load_dataset

    path = folder / "catalog.sqlite"
    with Catalog(path) as catalog:
        import_dataset(catalog, load_dataset(SHARED / dataset_name))
        add_user(catalog, "benchmark", "reviewer", "benchmark-password-0123", api_token=TOKEN)
    return path


def reencoded(paths: list[str], quality: int) -> list[tuple[str, bytes]]:
    """Photos re-encoded as JPEG, so that their bytes are new to the catalogue."""
    from PIL import Image

    photos = []
    for path in paths:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "JPEG", quality=quality)
        photos.append((Path(path).stem + ".jpg", buffer.getvalue()))
    return photos


def add_waiting(catalog_path: Path, dataset: str, photos: list[tuple[str, bytes]], preset: str, cache: Path) -> None:
    """File photos as queries waiting for review, with the results identifying them gives."""
    from wildreid.catalog.store import Catalog
    from wildreid.presets import get_preset
    from wildreid.review.identify import candidates_of, identify_with_catalog

    if not photos:
        return
    with Catalog(catalog_path) as catalog:
        queries = [catalog.add_query(data, "jpg", dataset=dataset, original_name=name) for name, data in photos]
        paths = [catalog.photo_path(query["stored_path"]) for query in queries]
        result = identify_with_catalog(catalog, paths, get_preset(preset), dataset=dataset, cache_dir=cache)
        for query, answer in zip(queries, candidates_of(result, catalog)):
            catalog.set_query_result(query["id"], answer)


def serve(catalog: Path, preset: str, cache: Path):
    import uvicorn

    from wildreid.web.app import create_app
    from wildreid.web.config import WebConfig

    application = create_app(WebConfig(catalog, preset=preset, cache_dir=cache))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def send(client, name: str, data: bytes) -> str:
    response = client.post("/uploads", files=[("photos", (name, data, "image/jpeg"))], follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[-1]


def wait(client, job_id: str, timeout: float = 3600) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        state = client.get(f"/api/jobs/{job_id}").json()
        if state["status"] in ("done", "failed"):
            assert state["status"] == "done", state
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(job_id)


def measure(catalog: Path, preset: str, cache: Path, uploads: list[tuple[str, bytes]]) -> tuple[float, list[float]]:
    """(the warming upload's seconds, each further upload's seconds)."""
    import httpx

    server, thread, url = serve(catalog, preset, cache)
    try:
        with httpx.Client(base_url=url, timeout=600, headers=HEADERS) as client:
            timings = []
            for name, data in uploads:
                started = time.perf_counter()
                timings.append(wait(client, send(client, name, data)) - started)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    return timings[0], timings[1:]


def measure_count(dataset: str, preset: str, count: int, uploads: int, scratch: Path) -> dict:
    """One count of waiting photos: a fresh copy of the catalogue, that many photos filed, a
    server, its warming upload and the measured ones."""
    from wildreid.data.dataset import load_dataset

    base = scratch / "catalogue" / "catalog.sqlite"
    table = load_dataset(SHARED / dataset).table
    waiting = reencoded(table["path"].tolist()[:count], quality=92)
    photos = reencoded(table[table["split"] == "query"]["path"].tolist()[: 1 + uploads], quality=85)
    folder = scratch / f"waiting-{count}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(base.parent, folder)
    add_waiting(folder / base.name, dataset, waiting, preset, scratch / "cache")
    warm, timings = measure(folder / base.name, preset, scratch / "cache", photos)
    return {"count": count, "warm_s": warm, "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="LionData", help="a dataset folder of ../shared/data")
    parser.add_argument("--preset", default="offline")
    parser.add_argument("--waiting", default="0,100,500", help="photos waiting for review, one run per count")
    parser.add_argument("--uploads", type=int, default=5, help="uploads measured per count (their median)")
    parser.add_argument("--work", type=Path, help="keep the catalogue and descriptors here (a re-run starts warm)")
    parser.add_argument("--only", type=int, help=argparse.SUPPRESS)  # one count, in this process (see below)
    arguments = parser.parse_args()
    scratch = arguments.work or Path(tempfile.mkdtemp(prefix="wildreid-latency-"))
    if arguments.only is not None:
        row = measure_count(arguments.dataset, arguments.preset, arguments.only, arguments.uploads, scratch)
        print(json.dumps(row))
        return
    try:
        base = scratch / "catalogue" / "catalog.sqlite"
        if not base.is_file():
            make_catalogue(arguments.dataset, base.parent)
        counts = [int(count) for count in arguments.waiting.split(",")]
        medians = []
        for count in counts:
            # Each count in a process of its own: a process's later servers run slower than its
            # first (by about 30% here), which would count against whichever count came later.
            command = [sys.executable, __file__, "--only", str(count), "--work", str(scratch), "--dataset"]
            command += [arguments.dataset, "--preset", arguments.preset, "--uploads", str(arguments.uploads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{count} waiting failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            timings = row["timings"]
            medians.append(statistics.median(timings))
            print(
                f"{count:>4} waiting: first upload (warms the server) {row['warm_s']:.2f} s; upload median "
                f"{medians[-1]:.3f} s (min {min(timings):.3f}, max {max(timings):.3f}) over {len(timings)}",
                flush=True,
            )
        for count, median in zip(counts, medians):
            ratio = median / medians[0]
            print(f"{count:>4} waiting: {median:.3f} s, {ratio:.2f} x the latency with {counts[0]} waiting")
    finally:
        if arguments.work is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
