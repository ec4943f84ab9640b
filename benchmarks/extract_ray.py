"""Single process against a local Ray cluster, in the same run: Holstein2025 (3,776 photos),
EfficientNet-Lite0 on the exact path (PIL decoding, fp32), each into an empty cache.

    python benchmarks/extract_ray.py --out bench-out/extract_ray.json          # ~10-20 min on 2 cores
    python benchmarks/extract_ray.py --dataset NyalaData --workers 2

Prints images/s of both, the Ray job's fixed overhead (cluster start, actor start-up and model
load, the driver's hashing pass) and its steady rate, the largest difference between the two
runs' vectors, and the driver-side costs the cost model in docs/scale.md needs: content hashing
(MB/s) and cache writes (descriptor shards, keypoint files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="Holstein2025")
    parser.add_argument("--images", type=int, default=0, help="first N photos only (0: all)")
    parser.add_argument("--workers", type=int, default=2, help="descriptor actors in the local cluster")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local cluster")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import ray

    from wildreid.describe.backbones import OFFLINE_LITE0, load_backbone
    from wildreid.describe.distributed import BATCHES_PER_BLOCK, extract_with_ray
    from wildreid.describe.extract import EmbeddingCache, content_hashes, extract_embeddings
    from wildreid.local.base import get_method
    from wildreid.local.cache import encode_features, store_features

    paths = sorted(str(p) for p in (SHARED / args.dataset / "images").iterdir())
    paths = paths[: args.images] if args.images else paths
    result = {
        "dataset": args.dataset,
        "images": len(paths),
        "workers": args.workers,
        "cpus": args.cpus,
        "batch_size": args.batch_size,
        "uptime_before": uptime(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(result["uptime_before"], flush=True)
    work = Path(tempfile.mkdtemp(prefix="wildreid-ray-bench-"))

    # The driver's own costs: hashing every file, writing the caches.
    started = time.perf_counter()
    hashes, _ = content_hashes(paths)
    seconds = time.perf_counter() - started
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    result["hash"] = {
        "seconds": seconds,
        "images_per_s": len(paths) / seconds,
        "mb_per_s": megabytes / seconds,
        "mean_file_kb": 1000 * megabytes / len(paths),
    }
    vectors = np.random.default_rng(0).standard_normal((512, 1280)).astype(np.float32)
    started = time.perf_counter()
    for shard in range(8):
        EmbeddingCache(work / "write-test", "shards").save([f"{shard}-{i}" for i in range(512)], vectors)
    result["shard_writes"] = {"vectors_per_s": 8 * 512 / (time.perf_counter() - started)}
    method = get_method("rootsift")
    from wildreid.data.images import decode_image, read_image_bytes

    sample = encode_features(method.extract(decode_image(read_image_bytes(paths[0]), paths[0])))
    started = time.perf_counter()
    for i in range(200):
        store_features(work / "write-test", method, f"{i:064x}", sample)
    result["keypoint_writes"] = {"files_per_s": 200 / (time.perf_counter() - started), "file_kb": len(sample) / 1e3}
    print(json.dumps({k: result[k] for k in ("hash", "shard_writes", "keypoint_writes")}), flush=True)

    # Single process, exact path, empty cache (hashing included, as in a real run).
    backbone = load_backbone(OFFLINE_LITE0)
    started = time.perf_counter()
    single = extract_embeddings(paths, backbone, cache_dir=work / "single", batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - started
    result["single"] = {"seconds": seconds, "images_per_s": len(paths) / seconds, "failed": len(single.failures)}
    print("single", json.dumps(result["single"]), flush=True)

    # Local Ray cluster: started here so its start is measured apart.
    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    cluster_start = time.perf_counter() - started
    summary = extract_with_ray(
        paths, OFFLINE_LITE0, cache_dir=work / "ray", workers=args.workers, batch_size=args.batch_size, progress=False
    )
    ray.shutdown()
    total = cluster_start + summary.seconds
    streaming = summary.seconds - summary.load_s - summary.hash_s - summary.cluster_start_s - summary.first_result_s
    # Steady rate: rows after the first result over the time after it; the rest of the wall time
    # is what a job pays whatever its size.
    first_block = min(summary.computed, args.batch_size * BATCHES_PER_BLOCK)  # results come a block at a time
    steady = (summary.computed - first_block) / streaming if streaming > 0 else float("nan")
    result["ray"] = {
        "seconds": total,
        "images_per_s": summary.computed / total,
        "failed": summary.failed,
        "cluster_start_s": cluster_start,
        "load_s": summary.load_s,
        "hash_s": summary.hash_s,
        "first_result_s": summary.first_result_s,
        "steady_images_per_s": steady,
        "fixed_overhead_s": total - summary.computed / steady,
        "summary": summary.line(),
    }
    print("ray", json.dumps(result["ray"]), flush=True)

    ours = EmbeddingCache(work / "ray", backbone.cache_key).load()
    result["max_abs_difference"] = float(
        max(np.abs(ours[h] - v).max() for h, v in zip(single.hashes, single.embeddings) if h in ours)
    )
    result["uptime_after"] = uptime()
    print(json.dumps(result, indent=2), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
