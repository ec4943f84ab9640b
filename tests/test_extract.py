"""Extraction: exactness of the reference path, the cache (hits, kill and resume), unreadable
images, and the speed options (fast decoding, the GPU decoding code run on the CPU, ONNX
Runtime, reduced precision with its agreement check, batch sizing)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wildreid.data.images import decode_image
from wildreid.describe import device_decode
from wildreid.describe.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, Preprocess, load_backbone
from wildreid.describe.cpu_decode import image_to_tensor
from wildreid.describe.device_decode import (
    Encoded,
    Failed,
    Ready,
    assemble,
    decode_jpegs,
    in_background,
    jpeg_orientation,
    orient,
    read_item,
)
from wildreid.describe.extract import APPROXIMATE_SUFFIX, FAST, EmbeddingCache, extract_embeddings
from wildreid.describe.inference import CPU_BATCH_SIZE, TorchRunner, auto_batch_size, choose_batch_size

ROOT = Path(__file__).resolve().parents[1]
# torchvision 0.29 deprecates its image decoders in favour of TorchCodec; they still work.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.usefixtures("one_torch_thread")]


SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _photo(seed: int, size=(64, 48)) -> Image.Image:
    """Smooth random colours plus noise: compresses and resizes like a (tiny) photo."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    pixels = np.asarray(coarse, np.int16) + rng.integers(-20, 21, (size[1], size[0], 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _write_photos(folder: Path, count: int, size=(64, 48)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:04d}.jpg"
        path.write_bytes(_jpeg_bytes(_photo(index, size)))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def nyala_photos(shared_data) -> list[str]:
    """Twelve real photos of various sizes (256 to 3500 px wide)."""
    return sorted(str(p) for p in (shared_data / "NyalaData" / "images").glob("*.jpg"))[:12]


@pytest.fixture(scope="module")
def tiny_backbone() -> Backbone:
    """A random ResNet-18 on 64x64 inputs: the real compute pattern, fast on two cores."""
    torch.manual_seed(0)
    backbone = load_backbone("random:resnet18")
    backbone.preprocess = Preprocess((64, 64), IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    return backbone


# --------------------------------------------------------------------------------------------
# The reference path


def test_reference_path_is_bit_exact_with_torchvision_transforms(lite0_backbone, nyala_photos):
    """The default path is the reference notebook's: torchvision Resize/ToTensor/Normalize on the
    PIL image, fp32; same tensors to the bit, same embeddings to the bit."""
    import torchvision.transforms as T

    preprocess = Preprocess((96, 96), IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    backbone = Backbone("lite0-96", lite0_backbone.model, preprocess, "test", lite0_backbone.dim)
    transform = T.Compose([T.Resize([96, 96]), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    paths = nyala_photos[:6]
    images = [decode_image(Path(p).read_bytes(), p) for p in paths]
    expected_inputs = [transform(image) for image in images]
    for image, expected in zip(images, expected_inputs):
        assert torch.equal(image_to_tensor(image, preprocess), expected)

    with torch.inference_mode():
        expected = torch.cat([backbone.model(torch.stack(expected_inputs[i : i + 4])) for i in (0, 4)]).numpy()
    extraction = extract_embeddings(paths, backbone, batch_size=4, num_workers=0, progress=False)
    assert np.array_equal(extraction.embeddings, expected)
    assert extraction.settings["agreement"] is None  # nothing approximate ran, nothing checked


# --------------------------------------------------------------------------------------------
# The cache


def test_second_run_is_all_cache_hits_and_duplicates_are_computed_once(tiny_backbone, tmp_path, cache_dir):
    paths = _write_photos(tmp_path / "images", 9)
    shutil.copy(paths[0], tmp_path / "copy.jpg")
    paths.append(str(tmp_path / "copy.jpg"))
    first = extract_embeddings(paths, tiny_backbone, cache_dir=cache_dir, batch_size=4, progress=False)
    assert first.extracted == 10 and first.settings["cpu_decoded"] == 9  # the copy is not decoded again
    assert np.array_equal(first.embeddings[0], first.embeddings[9])
    second = extract_embeddings(paths, tiny_backbone, cache_dir=cache_dir, batch_size=4, progress=False)
    assert second.extracted == 0 and second.settings["cpu_decoded"] == 0
    assert np.array_equal(first.embeddings, second.embeddings)


def test_exact_runs_never_read_vectors_of_fast_runs(tiny_backbone, tmp_path, cache_dir):
    paths = _write_photos(tmp_path / "images", 6)
    fast = extract_embeddings(paths, tiny_backbone, cache_dir=cache_dir, decode="fast", progress=False)
    assert fast.extracted == 6
    assert (cache_dir / (tiny_backbone.cache_key + APPROXIMATE_SUFFIX)).is_dir()
    exact = extract_embeddings(paths, tiny_backbone, cache_dir=cache_dir, progress=False)
    assert exact.extracted == 6  # nothing taken from the fast run's folder
    again = extract_embeddings(paths, tiny_backbone, cache_dir=cache_dir, decode="fast", progress=False)
    assert again.extracted == 0  # a fast run may use the exact vectors


KILLED_CHILD = textwrap.dedent("""
    import sys, torch
    from wildreid.describe.backbones import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_backbone
    from wildreid.describe.extract import extract_embeddings
    torch.manual_seed(0)
    backbone = load_backbone("random:resnet18")
    backbone.preprocess = Preprocess((64, 64), IMAGENET_MEAN, IMAGENET_STD, "bilinear")
    paths = open(sys.argv[1]).read().split()
    extract_embeddings(paths, backbone, cache_dir=sys.argv[2], batch_size=5, flush_every=10,
                       num_workers=0, progress=False)
    print("finished", flush=True)
""")


def test_killed_run_leaves_a_usable_cache_and_the_next_run_resumes(tiny_backbone, tmp_path, cache_dir):
    paths = _write_photos(tmp_path / "images", 150, size=(320, 240))
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(paths))
    folder = cache_dir / tiny_backbone.cache_key
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(listing), str(cache_dir)],
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while not list(folder.glob("shard-*.npz")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    _, errors = child.communicate()
    assert child.returncode == -signal.SIGKILL, errors.decode()[-2000:]  # killed mid-way, not finished

    shards = list(folder.glob("shard-*.npz"))
    cached = EmbeddingCache(cache_dir, tiny_backbone.cache_key).load()
    assert len(list(folder.glob("shard-*.npz"))) == len(shards)  # every shard was readable
    assert 0 < len(cached) < 150 and len(cached) % 10 == 0

    resumed = extract_embeddings(paths, tiny_backbone, cache_dir=cache_dir, batch_size=5, progress=False)
    assert resumed.extracted == 150 - len(cached)
    clean = extract_embeddings(paths, tiny_backbone, batch_size=5, progress=False)
    np.testing.assert_allclose(resumed.embeddings, clean.embeddings, rtol=1e-5, atol=1e-5)
    assert len(EmbeddingCache(cache_dir, tiny_backbone.cache_key).load()) == 150


def test_a_kill_loses_seconds_of_work_not_everything_below_flush_every(tiny_backbone, tmp_path, cache_dir, monkeypatch):
    """The cache is also written every FLUSH_SECONDS, so a small run killed late keeps its vectors
    (it used to be written only every 512 images, and a kill runs no clean-up)."""
    from wildreid.describe import extract

    paths = _write_photos(tmp_path / "images", 30)
    folder = cache_dir / tiny_backbone.cache_key
    on_disk_at_kill: list[set[str]] = []

    def snapshot(module, inputs, output):  # what a SIGKILL at this moment would leave behind
        names = set()
        for shard in folder.glob("shard-*.npz"):
            with np.load(shard) as content:
                names.update(content["hashes"].tolist())
        on_disk_at_kill.append(names)

    monkeypatch.setattr(extract, "FLUSH_SECONDS", 0.0)  # as if every batch took longer than that
    hook = tiny_backbone.model.register_forward_hook(snapshot)
    try:
        extract_embeddings(paths, tiny_backbone, cache_dir=cache_dir, batch_size=5, progress=False)
    finally:
        hook.remove()
    assert len(on_disk_at_kill) == 6 and len(on_disk_at_kill[-1]) >= 20  # all but the batches in flight

    fast = tmp_path / "fast-cache"  # a run quicker than FLUSH_SECONDS writes one shard, as before
    monkeypatch.setattr(extract, "FLUSH_SECONDS", 3600.0)
    extract_embeddings(paths, tiny_backbone, cache_dir=fast, batch_size=5, progress=False)
    assert len(list((fast / tiny_backbone.cache_key).glob("shard-*.npz"))) == 1


# --------------------------------------------------------------------------------------------
# Unreadable images


@pytest.fixture
def broken_and_good(tmp_path) -> tuple[list[str], dict[int, str]]:
    good = _write_photos(tmp_path / "good", 4)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(good[0]).read_bytes()[:400])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    corrupt = bytearray(_jpeg_bytes(_photo(99)))
    corrupt[corrupt.find(b"\xff\xda") + 5] = 9  # scan names a component that does not exist
    bad_scan = tmp_path / "bad-scan.jpg"
    bad_scan.write_bytes(bytes(corrupt))
    paths = [good[0], str(truncated), good[1], str(empty), str(text), good[2], str(bad_scan), good[3]]
    return paths, {1: "truncated", 3: "empty", 4: "notes.png", 6: "bad-scan"}


@pytest.mark.parametrize("decode", ["exact", "fast", "device"])
def test_unreadable_images_are_skipped_and_reported(tiny_backbone, broken_and_good, cache_dir, decode):
    paths, broken = broken_and_good
    extraction = extract_embeddings(
        paths, tiny_backbone, cache_dir=cache_dir, decode=decode, batch_size=3, progress=False
    )
    assert sorted(extraction.failures) == sorted(broken)
    for row, word in broken.items():
        assert word in extraction.failures[row]
    assert (extraction.embeddings[list(broken)] == 0).all()
    good = [row for row in range(len(paths)) if row not in broken]
    assert extraction.ok.tolist() == [row in good for row in range(len(paths))]
    assert (np.abs(extraction.embeddings[good]).sum(1) > 0).all()
    assert extraction.extracted == len(good)
    cache = EmbeddingCache(cache_dir, tiny_backbone.cache_key + ("" if decode == "exact" else APPROXIMATE_SUFFIX))
    assert len(cache.load()) == len(good)


@pytest.mark.parametrize("decode", ["exact", "device"])
def test_copies_of_an_unreadable_file_are_reported_too(tiny_backbone, tmp_path, decode):
    """Identical files are decoded once; when that one fails, its copies fail with it."""
    good = _write_photos(tmp_path / "good", 1)
    truncated = Path(good[0]).read_bytes()[:400]
    copies = [tmp_path / "cut-a.jpg", tmp_path / "cut-b.jpg"]
    for copy in copies:
        copy.write_bytes(truncated)
    extraction = extract_embeddings([good[0], *map(str, copies)], tiny_backbone, decode=decode, progress=False)
    assert sorted(extraction.failures) == [1, 2]
    assert "cut-a.jpg" in extraction.failures[1]
    assert "cut-b.jpg" in extraction.failures[2] and extraction.failures[1] in extraction.failures[2]
    assert extraction.ok.tolist() == [True, False, False]


# --------------------------------------------------------------------------------------------
# Speed options against the exact path, on real photos


def test_speed_options_agree_with_the_exact_path_on_real_photos(lite0_backbone, nyala_photos, tmp_path):
    exact = extract_embeddings(nyala_photos, lite0_backbone, progress=False)
    assert not exact.failures

    def lowest(**options) -> tuple[float, dict]:
        run = extract_embeddings(nyala_photos, lite0_backbone, progress=False, **options)
        assert not run.failures
        return float(_cosines(exact.embeddings, run.embeddings).min()), run.settings

    fast, settings = lowest(decode="fast")
    assert fast >= 0.99 and settings["decode"] == "fast"
    tensor_path, settings = lowest(decode="device")  # the GPU path's code, on the CPU
    assert tensor_path >= 0.999 and settings["device_decoded"] == len(nyala_photos)
    onnx, settings = lowest(engine="onnxruntime", cache_dir=tmp_path / "cache")
    assert onnx >= 0.99999 and settings["agreement"] >= 0.99999
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))  # the export is kept for next time
    # A CPU's bf16 sits near the 0.999 default (0.9994 here): the check must not fall back for this.
    bf16, settings = lowest(precision="bf16", min_agreement=0.99)
    assert bf16 >= 0.99 and settings["precision"] == "bf16" and 0.99 <= settings["agreement"] < 1
    everything, settings = lowest(**FAST)
    assert everything >= 0.99
    assert (settings["decode"], settings["engine"], settings["precision"]) == ("device", "onnxruntime", "fp32")
    # bf16 turned the model channels_last; it is back, so exact runs stay exact.
    again = extract_embeddings(nyala_photos[:4], lite0_backbone, progress=False)
    assert np.array_equal(again.embeddings, exact.embeddings[:4])


def test_disagreeing_approximation_falls_back_to_exact_fp32(tiny_backbone, tmp_path):
    paths = _write_photos(tmp_path / "images", 6)
    exact = extract_embeddings(paths, tiny_backbone, batch_size=4, progress=False)
    with pytest.warns(RuntimeWarning, match="agree with the exact fp32 model only"):
        run = extract_embeddings(
            paths,
            tiny_backbone,
            batch_size=4,
            precision="bf16",
            min_agreement=1.01,
            cache_dir=tmp_path / "cache",
            progress=False,
        )
    assert run.settings["fell_back"] and run.settings["precision"] == "fp32"
    assert np.array_equal(run.embeddings, exact.embeddings)
    # What ran was the exact path, so its vectors serve later exact runs.
    assert len(EmbeddingCache(tmp_path / "cache", tiny_backbone.cache_key).load()) == len(paths)


class _Fragile(torch.nn.Module):
    """A stand-in backbone whose reduced-precision output overflows on bright images."""

    num_features = 3

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, images):
        features = images.mean(dim=(2, 3)) * self.scale + 3.0
        if torch.is_autocast_enabled("cpu"):
            features = features.masked_fill(images.mean(dim=(1, 2, 3))[:, None] > 1.5, float("inf"))
        return features


def test_rows_that_overflow_in_reduced_precision_are_recomputed_in_fp32(tmp_path):
    backbone = Backbone("fragile", _Fragile(), Preprocess((8, 8), IMAGENET_MEAN, IMAGENET_STD, "bilinear"), "test", 3)
    paths = _write_photos(tmp_path / "images", 4)
    white = tmp_path / "white.png"
    Image.new("RGB", (16, 16), "white").save(white)
    paths.append(str(white))  # in the second batch: the first batch's agreement check passes
    exact = extract_embeddings(paths, backbone, batch_size=4, progress=False)
    run = extract_embeddings(paths, backbone, batch_size=4, precision="bf16", progress=False)
    assert not run.settings["fell_back"]
    assert np.isfinite(run.embeddings).all()
    np.testing.assert_allclose(run.embeddings[4], exact.embeddings[4])


def test_compiled_runs_pad_every_batch_to_one_shape(monkeypatch, tmp_path):
    """torch.compile itself takes a minute here; a stand-in records what it would be given."""
    from wildreid.describe import inference

    shapes = []

    def recording_compile(model):
        def forward(images):
            shapes.append(tuple(images.shape))
            return model(images)

        return forward

    monkeypatch.setattr(inference, "_compiled", recording_compile)
    backbone = Backbone("fragile", _Fragile(), Preprocess((8, 8), IMAGENET_MEAN, IMAGENET_STD, "bilinear"), "test", 3)
    paths = _write_photos(tmp_path / "images", 10)
    exact = extract_embeddings(paths, backbone, batch_size=4, progress=False)
    run = extract_embeddings(paths, backbone, batch_size=4, compile=True, progress=False)
    assert shapes == [(4, 3, 8, 8)] * 3  # 4 + 4 + 2 padded to 4
    assert run.settings["compile"] and run.extracted == 10
    np.testing.assert_allclose(run.embeddings, exact.embeddings, rtol=1e-6)


def test_a_failing_compiler_costs_speed_not_the_run(monkeypatch, tmp_path):
    from wildreid.describe import inference

    def broken_compile(model):
        def forward(images):
            raise RuntimeError("no C++ compiler")

        return forward

    monkeypatch.setattr(inference, "_compiled", broken_compile)
    backbone = Backbone("fragile", _Fragile(), Preprocess((8, 8), IMAGENET_MEAN, IMAGENET_STD, "bilinear"), "test", 3)
    paths = _write_photos(tmp_path / "images", 6)
    exact = extract_embeddings(paths, backbone, batch_size=4, progress=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        run = extract_embeddings(paths, backbone, batch_size=4, compile=True, progress=False)
    assert run.settings["compile"] is False
    np.testing.assert_allclose(run.embeddings, exact.embeddings, rtol=1e-6)


def test_options_are_checked():
    backbone = Backbone("fragile", _Fragile(), Preprocess((8, 8), IMAGENET_MEAN, IMAGENET_STD), "test", 3)
    for options in (
        dict(decode="gpu"),
        dict(precision="int8"),
        dict(engine="tensorrt"),
        dict(compile="yes"),
        dict(engine="onnxruntime", precision="bf16"),
    ):
        with pytest.raises(ValueError):
            extract_embeddings(["x.jpg"], backbone, progress=False, **options)


# --------------------------------------------------------------------------------------------
# The GPU decoding code, run on the CPU


ORIENTATION_CASES = list(range(1, 9))


@pytest.mark.parametrize("orientation", ORIENTATION_CASES)
def test_exif_orientation_on_tensors_matches_pil(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg_bytes(_photo(orientation, (40, 24)), exif=exif)
    assert jpeg_orientation(data) == orientation
    [decoded] = decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], torch.device("cpu"))
    expected = np.asarray(decode_image(data))  # PIL decoding + ImageOps.exif_transpose
    assert np.array_equal(orient(decoded, orientation).permute(1, 2, 0).numpy(), expected)


def test_only_plain_complete_jpegs_go_to_the_device_decoder():
    photo = _photo(1)
    png = io.BytesIO()
    photo.save(png, "PNG")
    plain = _jpeg_bytes(photo)
    assert jpeg_orientation(plain) == 1
    assert jpeg_orientation(plain + b"\x00\x00") == 1  # zero padding after the end marker
    assert jpeg_orientation(png.getvalue()) is None
    assert jpeg_orientation(_jpeg_bytes(photo, progressive=True)) is None
    assert jpeg_orientation(_jpeg_bytes(photo.convert("CMYK"))) is None
    assert jpeg_orientation(_jpeg_bytes(photo.convert("L"))) is None
    assert jpeg_orientation(plain[: len(plain) // 2]) is None  # truncated: PIL reports it
    assert jpeg_orientation(b"\xff\xd8 not really a jpeg \xff\xd9") is None
    exif = Image.Exif()
    exif[0x0112] = 42  # out of range: ignored, as PIL does
    assert jpeg_orientation(_jpeg_bytes(photo, exif=exif)) == 1


def test_read_item_sorts_files(tmp_path):
    preprocess = Preprocess((16, 16), IMAGENET_MEAN, IMAGENET_STD, "bilinear")

    def cpu_path(data, name):
        return image_to_tensor(decode_image(data, name), preprocess)

    (tmp_path / "a.jpg").write_bytes(_jpeg_bytes(_photo(1)))
    _photo(2).save(tmp_path / "b.png")
    (tmp_path / "c.jpg").write_bytes(b"")
    assert isinstance(read_item(str(tmp_path / "a.jpg"), 0, cpu_path), Encoded)
    ready = read_item(str(tmp_path / "b.png"), 1, cpu_path)
    assert isinstance(ready, Ready) and ready.tensor.shape == (3, 16, 16)
    failed = read_item(str(tmp_path / "c.jpg"), 2, cpu_path)
    assert isinstance(failed, Failed) and "empty" in failed.reason


def test_assemble_keeps_order_and_sends_refused_jpegs_to_the_cpu_path(monkeypatch):
    preprocess = Preprocess((16, 16), IMAGENET_MEAN, IMAGENET_STD, "bilinear")

    def cpu_path(data, name):
        return image_to_tensor(decode_image(data, name), preprocess)

    datas = [_jpeg_bytes(_photo(seed)) for seed in range(3)]
    items = [
        Encoded(row, f"{row}.jpg", torch.frombuffer(bytearray(data), dtype=torch.uint8), 1)
        for row, data in enumerate(datas)
    ]
    items.insert(1, Failed(7, "broken"))
    items.append(Ready(9, cpu_path(datas[0], "ready")))

    real = device_decode.decode_jpegs

    # nvJPEG refusing the middle JPEG: the CPU path must decode it instead.
    def refusing(encoded, device):
        return [None if index == 1 else image for index, image in enumerate(real(encoded, device))]

    monkeypatch.setattr(device_decode, "decode_jpegs", refusing)
    batch = assemble(items, preprocess, torch.device("cpu"), cpu_path)
    assert batch.rows == [0, 1, 2, 9] and batch.failures == [(7, "broken")]
    assert (batch.device_decoded, batch.cpu_decoded) == (2, 2)
    assert torch.equal(batch.images[1], cpu_path(datas[1], "1.jpg"))
    # Device-decoded images match PIL's pixels to within one level of 255 (normalised).
    for index, row in ((0, 0), (2, 2)):
        difference = (batch.images[index] - cpu_path(datas[row], "x")).abs().max()
        assert difference <= 1.01 / 255 / min(IMAGENET_STD)


def test_decode_jpegs_isolates_the_image_the_decoder_refuses():
    good = torch.frombuffer(bytearray(_jpeg_bytes(_photo(1))), dtype=torch.uint8)
    corrupt = bytearray(_jpeg_bytes(_photo(2)))
    corrupt[corrupt.find(b"\xff\xda") + 5] = 9
    decoded = decode_jpegs([good, torch.frombuffer(corrupt, dtype=torch.uint8), good], torch.device("cpu"))
    assert decoded[1] is None and decoded[0].shape == decoded[2].shape == (3, 48, 64)


def test_in_background_hands_over_items_errors_and_stops_early():
    assert list(in_background(iter(range(5)))) == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise KeyError("decoder")

    with pytest.raises(KeyError, match="decoder"):
        list(in_background(failing()))

    closed = []

    def endless():
        try:
            count = 0
            while True:
                yield count
                count += 1
        finally:
            closed.append(True)

    stream = in_background(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # must not hang, and must close the producer
    assert closed == [True]


# --------------------------------------------------------------------------------------------
# Batch size


def test_batch_size_from_free_memory():
    gigabyte = 1 << 30
    assert choose_batch_size(140 * gigabyte, 200 << 20) == 128  # capped
    assert choose_batch_size(10 * gigabyte, 200 << 20) == 24  # 25.6 fit in half: 24
    assert choose_batch_size(10 * gigabyte, 200 << 20, fraction=0.9) == 40
    assert choose_batch_size(gigabyte, 200 << 20) == 2  # below 8: not rounded
    assert choose_batch_size(100 << 20, 200 << 20) == 1  # never zero
    assert choose_batch_size(140 * gigabyte, 200 << 20, maximum=256) == 256


def test_auto_batch_size_on_a_cpu(tiny_backbone):
    runner = TorchRunner(tiny_backbone.model, torch.device("cpu"))
    assert auto_batch_size(runner, (64, 64), torch.device("cpu")) == CPU_BATCH_SIZE


# --------------------------------------------------------------------------------------------
# The benchmark script


def test_cpu_benchmark_script_reports_speed_and_agreement(tmp_path):
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "extract_cpu.py"),
            "--model",
            "random:resnet18",
            "--images",
            "16",
            "--size",
            "64",
            "--repeat",
            "1",
            "--variants",
            "decode=fast",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path),
        ],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "SUMMARY reference" in completed.stdout
    results = json.loads(out.read_text())
    assert results["files"]["truncated"] == results["files"]["empty"] == results["files"]["garbage"] == 1
    assert results["reference"]["images_per_s"] > 0 and results["reference"]["failures"] == 3
    optimised = results["optimised"]
    assert optimised["images_per_s"] > 0 and optimised["failures"] == 3 and optimised["same_failures"]
    assert optimised["cached_vectors"] == 16 - 3
    assert results["ratio"] == pytest.approx(results["reference"]["seconds"] / optimised["seconds"])
    assert results["min_cosine"] >= 0.99
    assert optimised["settings"]["decode"] == "device" and optimised["settings"]["engine"] == "onnxruntime"
    assert optimised["settings"]["device_decoded"] > 0 and results["min_cosine"] >= 0.999
    variant = results["variants"]["decode=fast"]
    assert variant["settings"]["decode"] == "fast" and variant["min_cosine"] >= 0.99
