"""End-to-end extraction speed: image files on disk -> embeddings in the cache.

    python benchmarks/extract_gpu.py          # GPU: random Swin-L-384 (MegaDescriptor-L-384's architecture)
    python benchmarks/extract_gpu.py --images 1000 --seconds 120 --out bench-out/extract_gpu.json

Writes its own test images: photo-like JPEGs of 1920x1280 (quality 90, ~1 MB) and 640x480, some
with an EXIF orientation, a progressive, a CMYK and a grayscale JPEG, a few PNGs, and three
broken files (empty, truncated, not an image). Then, in this one process, on the same files:

1. reference: the reference notebook's configuration: PIL decoding (data.decode_image), the
   torchvision transforms Resize/ToTensor/Normalize (bilinear, ImageNet mean/std, the seed
   preset's preprocessing), fp32, batch 32, in DataLoader worker processes, no cache;
2. optimised: ``extract_embeddings`` with the speed options into an empty cache folder, so it
   measures file -> cache end to end (hashing, cache writes included). One-time costs
   (torch.compile, ONNX export) are paid by a warm-up run on other files and reported apart;
3. variants, one option changed each, while the time budget (--seconds) lasts: --before ones run
   ahead of the optimised run (by default compile=false: cheap, so a run cut short still has a
   figure), --variants after it (by default decode=exact: PIL decoding in 16 processes).

Prints images/s of each (all files, broken ones included, over wall time), the speed-up over the
reference, and the lowest cosine similarity between each run's embeddings and the reference's.
The model's weights are random unless --model names real ones: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # runs from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from wildreid.data.images import ImageReadError, decode_image, read_image_bytes  # noqa: E402
from wildreid.describe.backbones import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_backbone  # noqa: E402
from wildreid.describe.extract import EmbeddingCache, cache_key, extract_embeddings  # noqa: E402

GPU_DEFAULTS = dict(model="random:swin_large_patch4_window12_384", images=4000, seconds=200.0)
BIG, SMALL = (1920, 1280), (640, 480)
BASE_SIZE = (2400, 1600)
BASES = 12


# --------------------------------------------------------------------------------------------
# Test images


def _base_texture(index: int, folder: str) -> str:
    """A photo-like texture (1/f noise in colour plus sensor grain): JPEG-compresses like a
    photo, ~1 MB at 1920x1280 and quality 90."""
    rng = np.random.default_rng(1000 + index)
    width, height = BASE_SIZE
    total = np.zeros((height, width, 3), np.float32)
    amplitude = 1.0
    for octave in range(1, 8):
        small = Image.fromarray(
            rng.integers(0, 256, (max(2, height >> (8 - octave)), max(2, width >> (8 - octave)), 3), dtype=np.uint8)
        )
        total += (np.asarray(small.resize((width, height), Image.BICUBIC), np.float32) - 128) * amplitude
        amplitude *= 0.75
    total = total * 0.45 + 128 + rng.normal(0, 11, (height, width, 1)).astype(np.float32)
    path = os.path.join(folder, f"base-{index}.npy")
    np.save(path, total.clip(0, 255).astype(np.uint8))
    return path


def _photo(index: int, bases: list[str], size: tuple[int, int]) -> Image.Image:
    """A distinct crop of a base texture, scaled to ``size``, with its own colour balance."""
    rng = np.random.default_rng(index)
    base = np.load(bases[index % len(bases)], mmap_mode="r")
    widest = min(BASE_SIZE[0], BASE_SIZE[1] * size[0] // size[1])
    crop_w = int(rng.integers(min(size[0], widest), widest + 1))  # scaled down: keeps the grain
    crop_h = crop_w * size[1] // size[0]
    left = int(rng.integers(0, BASE_SIZE[0] - crop_w + 1))
    top = int(rng.integers(0, BASE_SIZE[1] - crop_h + 1))
    pixels = np.asarray(base[top : top + crop_h, left : left + crop_w], np.float32)
    pixels = pixels * rng.uniform(0.7, 1.2, 3).astype(np.float32)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return image if image.size == size else image.resize(size, Image.BICUBIC)


def _write_one(task) -> str:
    index, kind, folder, bases = task
    path = os.path.join(folder, f"{index:06d}-{kind}" + (".png" if kind == "png" else ".jpg"))
    if kind == "big":
        _photo(index, bases, BIG).save(path, "JPEG", quality=90)
    elif kind == "small":
        _photo(index, bases, SMALL).save(path, "JPEG", quality=90)
    elif kind.startswith("exif"):  # stored landscape, shown portrait: the EXIF tag must be honoured
        exif = Image.Exif()
        exif[0x0112] = int(kind[4:])
        _photo(index, bases, BIG).save(path, "JPEG", quality=90, exif=exif)
    elif kind == "progressive":
        _photo(index, bases, BIG).save(path, "JPEG", quality=90, progressive=True)
    elif kind == "cmyk":
        _photo(index, bases, SMALL).convert("CMYK").save(path, "JPEG", quality=90)
    elif kind == "gray":
        _photo(index, bases, SMALL).convert("L").save(path, "JPEG", quality=90)
    elif kind == "png":
        _photo(index, bases, SMALL).save(path, "PNG", compress_level=1)
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "truncated":
        buffer = io.BytesIO()
        _photo(index, bases, BIG).save(buffer, "JPEG", quality=90)
        Path(path).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "garbage":
        Path(path).write_bytes(np.random.default_rng(index).bytes(5000))
    return path


def image_kinds(count: int) -> list[str]:
    """About 3/4 large and 1/4 small JPEGs, 2% PNGs, 2% EXIF-rotated, and one of each special."""
    special = ["progressive", "cmyk", "gray", "empty", "truncated", "garbage"]
    kinds = []
    for index in range(max(count - len(special), 1)):
        if index % 50 == 7:
            kinds.append("png")
        elif index % 50 == 13:
            kinds.append(f"exif{6 if index % 100 == 13 else 8}")
        else:
            kinds.append("small" if index % 4 == 3 else "big")
    return (kinds + special)[:count] if count >= len(special) else kinds[:count]


def write_images(folder: Path, kinds: list[str], *, first_index: int = 0, processes: int | None = None) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    processes = processes or os.cpu_count() or 1
    context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    with context.Pool(processes) as pool:
        bases = pool.starmap(_base_texture, [(i, str(folder)) for i in range(min(BASES, max(1, len(kinds) // 8)))])
        tasks = [(first_index + i, kind, str(folder), bases) for i, kind in enumerate(kinds)]
        paths = pool.map(_write_one, tasks, chunksize=8)
    for base in bases:
        os.unlink(base)
    return paths


# --------------------------------------------------------------------------------------------
# The reference configuration


class _ReferenceFiles(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], preprocess: Preprocess):
        import torchvision.transforms as T

        self.paths = paths
        self.transform = T.Compose(
            [T.Resize(list(preprocess.size)), T.ToTensor(), T.Normalize(preprocess.mean, preprocess.std)]
        )

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, row):
        try:
            return row, self.transform(decode_image(read_image_bytes(self.paths[row]), self.paths[row]))
        except ImageReadError:
            return row, None


def _reference_collate(samples):
    good = [(row, tensor) for row, tensor in samples if tensor is not None]
    return [row for row, _ in good], torch.stack([t for _, t in good]) if good else None


def run_reference(paths: list[str], backbone, workers: int) -> tuple[np.ndarray, np.ndarray, float]:
    """fp32, batch 32, PIL + torchvision transforms; returns (embeddings, ok mask, seconds)."""
    device = next(backbone.model.parameters()).device
    embeddings = np.zeros((len(paths), backbone.dim), np.float32)
    ok = np.zeros(len(paths), bool)
    loader = torch.utils.data.DataLoader(
        _ReferenceFiles(paths, backbone.preprocess),
        batch_size=32,
        num_workers=workers,
        collate_fn=_reference_collate,
        pin_memory=device.type == "cuda",
    )
    started = time.perf_counter()
    with torch.inference_mode():
        for rows, batch in loader:
            if batch is not None:
                embeddings[rows] = backbone.model(batch.to(device)).float().cpu().numpy()
                ok[rows] = True
    return embeddings, ok, time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# The optimised path


def run_optimised(paths, backbone, options: dict, scratch: Path, name: str):
    cache_dir = scratch / f"cache-{name}"
    started = time.perf_counter()
    extraction = extract_embeddings(paths, backbone, cache_dir=cache_dir, progress=False, **options)
    seconds = time.perf_counter() - started
    # End to end means the vectors are in the cache: check that every readable image is there.
    cached = EmbeddingCache(cache_dir, cache_key(backbone, extraction.settings)).load()
    return extraction, seconds, len(cached)


def min_cosine(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if not mask.any():
        return float("nan")
    a, b = a[mask], b[mask]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cosine.min())


def describe_machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    try:
        import timm
        import torchvision

        info.update(torchvision=torchvision.__version__, timm=timm.__version__)
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    else:
        info["device"] = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return info


def parse_options(text: str) -> dict:
    """'precision=bf16,compile=false,batch_size=64' -> extract_embeddings keyword arguments."""
    options = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        lowered = value.strip().lower()
        options[key.strip()] = (
            True
            if lowered == "true"
            else False
            if lowered == "false"
            else int(lowered)
            if lowered.isdigit()
            else value.strip()
        )
    return options


def main(
    argv=None,
    defaults: dict = GPU_DEFAULTS,
    *,
    optimised: str = "precision=auto,decode=auto,compile=auto,engine=auto,batch_size=auto",
    before: tuple[str, ...] = ("compile=false",),
    variants: tuple[str, ...] = ("decode=exact",),
) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=defaults["model"], help="backbone name (random:TIMM_NAME for random weights)"
    )
    parser.add_argument("--images", type=int, default=defaults["images"], help="number of test files")
    parser.add_argument(
        "--seconds",
        type=float,
        default=defaults["seconds"],
        help="time budget: variants are skipped when they would not fit",
    )
    parser.add_argument("--size", type=int, default=None, help="input size (default: the model's own)")
    parser.add_argument("--options", default=optimised, help="extract_embeddings options of the optimised run")
    parser.add_argument(
        "--before",
        default=";".join(before),
        help="';'-separated option changes run (if time allows) before the optimised run: "
        "cheap ones, so that a run cut short still reports them",
    )
    parser.add_argument(
        "--variants",
        default=";".join(variants),
        help="';'-separated option changes run after the optimised run if time allows",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=defaults.get("repeat", 1),
        help="time every run this many times and keep the fastest (a shared machine is noisy)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="reference loader workers (default: one per core, 1 on CPU)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to write the images (default: a temporary folder)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the results as JSON here (after every stage)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict = {"machine": describe_machine(), "model": args.model, "command": " ".join(sys.argv), "variants": {}}
    print(f"machine: {json.dumps(results['machine'])}", flush=True)

    def save():
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2, default=str))

    with tempfile.TemporaryDirectory(prefix="wildreid-bench-", dir=args.workdir) as scratch_name:
        scratch = Path(scratch_name)
        kinds = image_kinds(args.images)
        paths = write_images(scratch / "images", kinds)
        # Warm-up files (other contents, so nothing is a cache hit) for one-time costs.
        warm_paths = write_images(
            scratch / "warmup", ["big"] * min(160, max(8, args.images // 8)), first_index=10_000_000
        )
        sizes = [os.path.getsize(p) for p, k in zip(paths, kinds) if k == "big"]
        results["files"] = {kind: kinds.count(kind) for kind in sorted(set(kinds))}
        results["files"]["mean_big_jpeg_mb"] = round(float(np.mean(sizes)) / 1e6, 3) if sizes else None
        results["write_images_s"] = round(time.perf_counter() - started, 1)
        print(f"wrote {len(paths)} files ({results['files']}) in {results['write_images_s']} s", flush=True)

        torch.manual_seed(0)  # random weights, but the same ones in every run of the script
        backbone = load_backbone(args.model, device=args.device)
        # The seed preset's preprocessing (bilinear, ImageNet mean/std) at the model's input size.
        size = (args.size, args.size) if args.size else backbone.preprocess.size
        backbone.preprocess = Preprocess(size, IMAGENET_MEAN, IMAGENET_STD, "bilinear")
        results["preprocess"] = backbone.preprocess.describe()

        workers = (
            args.workers
            if args.workers is not None
            else (min(16, os.cpu_count() or 1) if args.device.startswith("cuda") else 1)
        )
        run_reference(warm_paths[:32], backbone, 0)  # CUDA/cuDNN set-up is not the reference's cost
        timings = []
        for _ in range(args.repeat):
            reference, reference_ok, seconds = run_reference(paths, backbone, workers)
            timings.append(seconds)
        seconds = min(timings)
        results["reference"] = {
            "images_per_s": len(paths) / seconds,
            "seconds": seconds,
            "all_seconds": timings,
            "workers": workers,
            "batch_size": 32,
            "precision": "fp32",
            "failures": int((~reference_ok).sum()),
        }
        print(
            f"reference (fp32, batch 32, PIL + torchvision transforms, {workers} workers): "
            f"{len(paths) / seconds:.1f} images/s ({seconds:.1f} s)",
            flush=True,
        )
        save()

        base = parse_options(args.options)
        runs = [(variant, {**base, **parse_options(variant)}) for variant in filter(None, args.before.split(";"))]
        runs.append(("optimised", base))
        runs += [(variant, {**base, **parse_options(variant)}) for variant in filter(None, args.variants.split(";"))]
        longest_warmup = 0.0
        for number, (name, options) in enumerate(runs):
            spent = time.perf_counter() - started
            # Pessimistic guess: the longest warm-up so far (or a minute, to compile), at half the
            # reference's speed. The optimised run itself always runs.
            expected = (longest_warmup or 60.0) + 2 * args.repeat * results["reference"]["seconds"]
            if name != "optimised" and spent + expected > args.seconds:
                print(
                    f"{name}: skipped ({spent:.0f} s spent, about {expected:.0f} s needed, "
                    f"{args.seconds:.0f} s budget)",
                    flush=True,
                )
                continue
            warm_started = time.perf_counter()
            try:
                run_optimised(warm_paths, backbone, options, scratch, f"warm-{number}")
                warm_s = time.perf_counter() - warm_started
                longest_warmup = max(longest_warmup, warm_s)
                timings = []
                for repeat in range(args.repeat):
                    extraction, seconds, cached = run_optimised(
                        paths, backbone, options, scratch, f"run-{number}-{repeat}"
                    )
                    timings.append(seconds)
            except Exception as error:  # noqa: BLE001 - one failing variant must not lose the others
                message = f"{type(error).__name__}: {error}"
                print(f"{name}: FAILED {message}", flush=True)
                (results if name == "optimised" else results["variants"]).update(
                    {name: {"options": options, "error": message}}
                )
                save()
                continue
            seconds = min(timings)
            mask = reference_ok & extraction.ok
            figures = {
                "options": options,
                "images_per_s": len(paths) / seconds,
                "seconds": seconds,
                "all_seconds": timings,
                "warmup_s": warm_s,
                "speedup": results["reference"]["seconds"] / seconds,
                "min_cosine": min_cosine(reference, extraction.embeddings, mask),
                "failures": len(extraction.failures),
                "same_failures": bool((reference_ok == extraction.ok).all()),
                "cached_vectors": cached,
                "settings": extraction.settings,
            }
            if name == "optimised":
                results.update(optimised=figures, ratio=figures["speedup"], min_cosine=figures["min_cosine"])
            else:
                results["variants"][name] = figures
            described = ", ".join(f"{key}={value}" for key, value in options.items())
            print(
                f"{name} ({described}): {figures['images_per_s']:.1f} images/s "
                f"({seconds:.1f} s, warm-up {warm_s:.1f} s), {figures['speedup']:.2f}x the reference, "
                f"min cosine {figures['min_cosine']:.5f}, failures {figures['failures']} "
                f"(same as reference: {figures['same_failures']}), {cached} vectors cached; "
                f"ran {json.dumps(extraction.settings)}",
                flush=True,
            )
            save()
    results["total_s"] = time.perf_counter() - started
    if "ratio" in results:
        print(
            f"SUMMARY reference {results['reference']['images_per_s']:.1f} images/s, optimised "
            f"{results['optimised']['images_per_s']:.1f} images/s, ratio {results['ratio']:.2f}x, "
            f"min cosine {results['min_cosine']:.5f}, total {results['total_s']:.0f} s",
            flush=True,
        )
    else:
        print(
            f"SUMMARY reference {results['reference']['images_per_s']:.1f} images/s, optimised run "
            f"failed: {results['optimised']['error']}",
            flush=True,
        )
    save()
    if args.out:
        print(f"results: {args.out}")
    return results


if __name__ == "__main__":
    sys.exit(0 if "ratio" in main() else 1)
