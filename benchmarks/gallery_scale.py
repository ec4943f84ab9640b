"""How a gallery's build time, memory and query time grow from 10k to 1M photos (synthetic vectors).

    python benchmarks/gallery_scale.py [--sizes 10000,100000,200000,1000000] [--nprobe 8,16,32]

The photos are 1280-d vectors (EfficientNet-Lite0's width) drawn as nested Gaussian clusters, the
shape a re-identification embedding has: N/1000 "scenes" (a site, a pose; centres N(0, 1)), 100
identities per scene (centre = scene + N(0, 0.5^2)), 10 photos per identity (identity + N(0, 0.35^2)).
A query is a fresh photo of a random known identity. Each size runs in its own process, so its
peak RSS (ru_maxrss) is that build's alone. What is timed is the gallery's own code, the same
calls Gallery.build makes after extraction: ``VectorIndex.build`` (exact up to 50,000 photos,
IVF above) and ``DatasetPart.fit_to`` with the offline preset (threshold simulation on a bounded
sample of pseudo-queries through the index).

Printed per size: build time (index, fit), peak RSS (of the whole process, so it includes the
exact reference index built for the recall: one more copy of the vectors), the mean latency of a single query's global
top-100 (one query per search call, as an upload), and recall@100 against exact search over the
same vectors (a flat index, 200 queries). At the largest size it also prints latency and recall
for each ``--nprobe``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

DIM = 1280
PHOTOS_PER_IDENTITY = 10
IDENTITIES_PER_SCENE = 100


def make_photos(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, callable]:
    """(vectors, identity of each, a function drawing fresh query photos)."""
    rng = np.random.default_rng(seed)
    identities = size // PHOTOS_PER_IDENTITY
    scenes = max(1, identities // IDENTITIES_PER_SCENE)
    scene_centres = rng.standard_normal((scenes, DIM), dtype=np.float32)
    identity_scene = rng.integers(scenes, size=identities)
    identity_centres = scene_centres[identity_scene] + 0.5 * rng.standard_normal((identities, DIM), dtype=np.float32)
    owner = np.repeat(np.arange(identities), PHOTOS_PER_IDENTITY)[:size]
    vectors = np.empty((size, DIM), dtype=np.float32)
    for start in range(0, size, 65536):  # chunked: no float64 copy of a million vectors
        stop = min(start + 65536, size)
        vectors[start:stop] = identity_centres[owner[start:stop]] + 0.35 * rng.standard_normal(
            (stop - start, DIM), dtype=np.float32
        )

    def queries(count: int) -> np.ndarray:
        chosen = rng.integers(identities, size=count)
        return identity_centres[chosen] + 0.35 * rng.standard_normal((count, DIM), dtype=np.float32)

    return vectors, np.array([f"id{i}" for i in owner], dtype=object), queries


def run_size(size: int, nprobes: list[int]) -> dict:
    import faiss

    from wildreid.gallery.index import VectorIndex, normalize
    from wildreid.gallery.part import DatasetPart
    from wildreid.presets import get_preset

    faiss.omp_set_num_threads(2)  # building and the fit's batched searches use both cores
    vectors, identities, draw = make_photos(size)
    started = time.perf_counter()
    index = VectorIndex.build(vectors)
    index_s = time.perf_counter() - started
    queries = draw(200)
    exact = faiss.IndexFlatIP(DIM)
    for start in range(0, size, 65536):  # the reference index, without a normalised copy of all
        exact.add(normalize(vectors[start : start + 65536]))
    del vectors
    _, truth = exact.search(normalize(queries), 100)
    del exact
    group = DatasetPart("synthetic", np.arange(size).astype(object), identities, None, index)
    started = time.perf_counter()
    fit = group.fit_to(get_preset("offline"), None)
    fit_s = time.perf_counter() - started
    rows = {}
    for nprobe in nprobes if not index.exact else [0]:
        if nprobe:
            index.index.nprobe = nprobe
        # One query per call, on one thread: an upload is a single query, and OpenMP threads
        # spinning on a busy 2-core machine cost more than they bring on a single vector.
        faiss.omp_set_num_threads(1)
        index.search(queries[:5], 100)  # warm
        started = time.perf_counter()
        found = [index.search(query[None], 100)[1][0] for query in queries]
        latency_ms = (time.perf_counter() - started) / len(queries) * 1000
        faiss.omp_set_num_threads(2)
        recall = float(np.mean([len(set(f) & set(t)) / 100 for f, t in zip(found, truth)]))
        rows[nprobe] = {"latency_ms": latency_ms, "recall_at_100": recall}
    return {
        "size": size,
        "index": "exact" if index.exact else f"ivf{index.index.nlist}",
        "index_s": index_s,
        "fit_s": fit_s,
        "threshold": fit.threshold,
        "pseudo_queries": int(len(fit.pseudo_queries)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "search": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,200000,1000000")
    parser.add_argument("--nprobe", default="8,16,32")
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    nprobes = [int(n) for n in arguments.nprobe.split(",")]
    if arguments.single:
        print(json.dumps(run_size(arguments.single, nprobes)))
        return
    sizes = [int(s) for s in arguments.sizes.split(",")]
    for size in sizes:
        probes = nprobes if size == max(sizes) else [16]
        command = [sys.executable, __file__, "--single", str(size), "--nprobe", ",".join(map(str, probes))]
        process = subprocess.run(command, capture_output=True, text=True)
        if process.returncode:
            raise SystemExit(f"size {size} failed:\n{process.stderr[-3000:]}")
        row = json.loads(process.stdout.strip().splitlines()[-1])
        for nprobe, search in row["search"].items():
            probe = f"nprobe {nprobe:>2}" if int(nprobe) else "exact   "
            print(
                f"{row['size']:>9,} photos  {row['index']:<8} index {row['index_s']:7.1f} s  "
                f"fit {row['fit_s']:6.1f} s  "
                f"peak RSS {row['peak_rss_gb']:5.2f} GB  {probe}  top-100 {search['latency_ms']:6.2f} ms/query  "
                f"recall@100 {search['recall_at_100']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
