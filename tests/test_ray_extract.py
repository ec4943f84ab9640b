"""Distributed extraction on a local Ray cluster (2 CPUs, one cluster for the module): the same
vectors and keypoints as single-process extraction, resume after a killed driver, a job that
survives a killed worker, bad images reported and skipped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")  # the test extra installs it; a bare core install has no Ray

from wildreid.describe.distributed import RayUnavailable, extract_with_ray, require_ray  # noqa: E402
from wildreid.describe.extract import EmbeddingCache, content_hashes, extract_embeddings  # noqa: E402
from wildreid.presets import get_preset  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def photos(shared_data: Path, name: str, count: int, start: int = 0) -> list[str]:
    return [str(path) for path in sorted((shared_data / name / "images").iterdir())[start : start + count]]


def shard_hashes(folder: Path) -> Counter:
    """Every hash in every shard: each shard must load (none torn), each hash once (none duplicated)."""
    counts = Counter()
    for shard in sorted(folder.glob("shard-*.npz")):
        with np.load(shard, allow_pickle=False) as content:
            counts.update(content["hashes"].tolist())
            assert len(content["vectors"]) == len(content["hashes"])
    return counts


def assert_each_once(cache_dir: Path, backbone, paths: list[str]) -> None:
    counts = shard_hashes(cache_dir / backbone.cache_key)
    assert set(counts) == set(content_hashes(paths)[0])
    assert max(counts.values()) == 1, [h for h, n in counts.items() if n > 1]


def test_vectors_and_keypoints_equal_single_process(cluster, shared_data, lite0_backbone, tmp_path):
    import torch

    from wildreid.local.base import get_method
    from wildreid.local.cache import _cache_file, _load, local_features

    paths = photos(shared_data, "NyalaData", 12)
    summary = extract_with_ray(
        paths, "efficientnet-lite0", local="rootsift", cache_dir=tmp_path / "ray", batch_size=4, progress=False
    )
    assert (summary.computed, summary.local_computed, summary.failed) == (12, 12, 0)

    # The same batch size and one thread, as a Ray actor with num_cpus=1 runs: oneDNN chooses its fp32
    # convolution by batch size and thread count, and sums in another order (~3e-6 apart; docs/scale.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = extract_embeddings(paths, lite0_backbone, cache_dir=tmp_path / "single", batch_size=4, progress=False)
    finally:
        torch.set_num_threads(threads)
    distributed = EmbeddingCache(tmp_path / "ray", lite0_backbone.cache_key).load()
    for digest, vector in zip(single.hashes, single.embeddings):
        np.testing.assert_allclose(distributed[digest], vector, rtol=0, atol=1e-6)

    method = get_method("rootsift")
    local_features(paths, method, cache_dir=tmp_path / "single", progress=False)
    for digest in single.hashes:
        ours = _load(_cache_file(tmp_path / "ray", method, digest))
        theirs = _load(_cache_file(tmp_path / "single", method, digest))
        np.testing.assert_array_equal(ours.keypoints, theirs.keypoints)
        np.testing.assert_array_equal(ours.descriptors, theirs.descriptors)
        assert (ours.scale, ours.image_size) == (theirs.scale, theirs.image_size)

    # Everything is cached now: no work for Ray, none for the single-machine path either.
    again = extract_with_ray(paths, "efficientnet-lite0", local="rootsift", cache_dir=tmp_path / "ray", progress=False)
    assert (again.computed, again.local_computed, again.skipped) == (0, 0, 12)
    assert extract_embeddings(paths, lite0_backbone, cache_dir=tmp_path / "ray", progress=False).extracted == 0


def test_regions_on_ray_are_filed_as_on_one_machine(cluster, shared_data, lite0_backbone, tmp_path):
    """A photo and two regions of it: three cache entries, the regions' under their region keys, with
    the vectors and keypoints a single process computes; an identify with the regions then extracts nothing."""
    import torch

    from wildreid.data.regions import Region, region_keys, upright_size
    from wildreid.local.base import get_method
    from wildreid.local.cache import local_features

    path = photos(shared_data, "NyalaData", 1)[0]
    width, height = upright_size(Path(path).read_bytes())
    regions = [None, Region((0, 0, width / 2, height), margin=0.0), Region((width / 2, 0, width / 2, height))]
    paths = [path] * 3
    summary = extract_with_ray(
        paths,
        "efficientnet-lite0",
        local="rootsift",
        cache_dir=tmp_path,
        batch_size=4,
        progress=False,
        regions=regions,
    )
    assert (summary.computed, summary.local_computed, summary.failed) == (3, 3, 0)
    keys = region_keys(content_hashes([path])[0] * 3, regions)
    distributed = EmbeddingCache(tmp_path, lite0_backbone.cache_key).load()
    assert set(distributed) == set(keys) and len(set(keys)) == 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = extract_embeddings(paths, lite0_backbone, regions=regions, batch_size=4, progress=False)
        assert (
            extract_embeddings(paths, lite0_backbone, regions=regions, cache_dir=tmp_path, progress=False).extracted
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    for key, vector in zip(single.keys, single.embeddings):
        np.testing.assert_allclose(distributed[key], vector, rtol=0, atol=1e-5)
    method = get_method("rootsift")
    cached = local_features(paths, method, cache_dir=tmp_path, regions=regions, progress=False)
    fresh = local_features(paths, method, regions=regions, progress=False)
    for ours, theirs in zip(cached, fresh):
        np.testing.assert_array_equal(ours.keypoints, theirs.keypoints)


DRIVER = """
import sys
from wildreid.describe.distributed import extract_with_ray
extract_with_ray(sys.argv[3:], "efficientnet-lite0", cache_dir=sys.argv[2], address=sys.argv[1], workers=1,
                 batch_size=2, flush_every=2, progress=False)
"""


def test_killed_driver_resumes_from_cache(cluster, shared_data, lite0_backbone, tmp_path):
    paths = photos(shared_data, "LionData", 40)
    folder = tmp_path / "cache" / lite0_backbone.cache_key
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, cluster, str(tmp_path / "cache"), *paths], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("shard-*.npz"))) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, "the driver ended before it could be killed"
    before = sum(shard_hashes(folder).values())
    assert 0 < before < len(paths)

    summary = extract_with_ray(
        paths, "efficientnet-lite0", cache_dir=tmp_path / "cache", workers=1, batch_size=4, progress=False
    )
    assert summary.skipped == before
    assert summary.computed == len(paths) - before
    assert_each_once(tmp_path / "cache", lite0_backbone, paths)


def _descendants(pid: int) -> list[int]:
    """Processes under ``pid`` (the local cluster this test started runs under the test process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_one_embedder(folder: Path, killed: list[int], stop: threading.Event) -> None:
    """Once the driver has written a shard, SIGKILL one descriptor actor's process."""
    while not stop.is_set() and not list(folder.glob("shard-*.npz")):
        time.sleep(0.05)
    for pid in _descendants(os.getpid()):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "Embedder" in title and not stop.is_set():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return


def test_killed_worker_job_still_finishes(cluster, shared_data, lite0_backbone, tmp_path):
    paths = photos(shared_data, "LionData", 40, start=100)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_one_embedder, args=(tmp_path / "cache" / lite0_backbone.cache_key, killed, stop)
    )
    killer.start()
    try:
        summary = extract_with_ray(
            paths,
            "efficientnet-lite0",
            cache_dir=tmp_path / "cache",
            workers=2,
            batch_size=2,
            flush_every=2,
            progress=False,
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no descriptor actor was found to kill"
    assert (summary.computed, summary.failed) == (len(paths), 0)
    assert_each_once(tmp_path / "cache", lite0_backbone, paths)


def test_bad_images_reported_and_skipped(cluster, shared_data, lite0_backbone, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    good = photos(shared_data, "LionData", 5, start=300)
    for path in good:
        shutil.copy(path, folder)
    data = Path(good[0]).read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "truncated-copy.jpg").write_bytes(data[: len(data) // 2])
    (folder / "garbage.jpg").write_bytes(b"not an image at all" * 50)
    paths = sorted(str(path) for path in folder.iterdir())

    summary = extract_with_ray(paths, "efficientnet-lite0", cache_dir=tmp_path / "cache", batch_size=4, progress=False)
    bad = {str(folder / name) for name in ("empty.jpg", "truncated.jpg", "truncated-copy.jpg", "garbage.jpg")}
    assert set(summary.failures) == bad
    assert all(Path(path).name in reason for path, reason in summary.failures.items() if "same bytes" not in reason)
    assert summary.computed == 5
    single = extract_embeddings(paths, lite0_backbone, cache_dir=tmp_path / "cache", progress=False)
    assert {paths[row] for row in single.failures} == bad and single.extracted == 0
    assert "1 skipped" not in summary.line() and "4 failed" in summary.line()


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailable, match=r"pip install 'wildreid\[ray\]'"):
        require_ray()


def test_core_never_imports_ray_at_module_level():
    """Ray is imported inside functions only (a subprocess importing everything would cost ~10 s)."""
    import ast

    for module in (SRC / "wildreid").rglob("*.py"):
        todo = list(ast.parse(module.read_text(encoding="utf-8")).body)
        while todo:  # everything that runs on import: all but function bodies
            node = todo.pop()
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                todo.extend(ast.iter_child_nodes(node))
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name == "ray" or name.startswith("ray.") for name in names), module


def _tiny_dataset(shared_data: Path, root: Path) -> tuple[Path, Path]:
    """Two identities of two photos each, and two queries: a folder per identity plus a query folder."""
    lions = photos(shared_data, "LionData", 6, start=500)
    for i, path in enumerate(lions):
        folder = root / "queries" if i >= 4 else root / "database" / f"lion{i // 2}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder)
    return root / "database", root / "queries"


def test_cli_extract_on_ray(cluster, shared_data, tmp_path):
    from typer.testing import CliRunner

    from wildreid.cli.main import app

    database, queries = _tiny_dataset(shared_data, tmp_path / "data")
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(database),
            "--query-dir",
            str(queries),
            "--ray",
            cluster,
            "--local",
            "none",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "embeddings.npz"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "6 images: 6 computed, 0 skipped (already cached), 0 failed" in result.output
    assert "6 images: 0 extracted, 6 from the cache" in result.output  # --out: the single-machine pass
    with np.load(tmp_path / "embeddings.npz") as saved:
        assert saved["embeddings"].shape == (6, 1984) and saved["ok"].all()  # the default preset's descriptor


def test_cli_gallery_build_on_ray(cluster, shared_data, tmp_path):
    """The second form: the photos are described on the cluster, and the gallery is built from the
    caches it filled, extracting nothing itself."""
    from typer.testing import CliRunner

    from wildreid.cli.main import app
    from wildreid.gallery.gallery import Gallery

    database, _ = _tiny_dataset(shared_data, tmp_path / "data")
    result = CliRunner().invoke(
        app,
        [
            "gallery",
            "build",
            str(database),
            "--out",
            str(tmp_path / "g"),
            "--ray",
            cluster,
            "--preset",
            "offline",  # descriptors only: the rebuild below checks that none is extracted again
            "--cache-dir",
            str(tmp_path / "cache"),
            "--allow-outside-paths",
        ],
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "0 failed" in said and "computed" in said
    rebuilt = Gallery.build(
        Gallery.load(tmp_path / "g").database_rows(),
        get_preset("offline"),
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert rebuilt.timings["images_extracted"] == 0  # everything came from the cluster's caches


def test_cli_without_ray_is_one_clear_message(shared_data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from wildreid.cli.main import app

    monkeypatch.setitem(sys.modules, "ray", None)
    database, queries = _tiny_dataset(shared_data, tmp_path / "data")
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(database),
            "--query-dir",
            str(queries),
            "--ray",
            "auto",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 2
    assert "pip install 'wildreid[ray]'" in result.output and "Traceback" not in result.output
