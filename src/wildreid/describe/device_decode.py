"""JPEG files to model input on the model's own device (``decode="device"``): batched nvJPEG
decoding on a GPU, torchvision's libjpeg-turbo decoder on a CPU.

Why, on a GPU: PIL decodes and resizes a 1920x1280 photo at about 25 images/s per CPU core, far
below what a GPU model consumes (MegaDescriptor-L-384 in bf16 takes 700+ images/s); nvJPEG,
through ``torchvision.io.decode_jpeg(list, device="cuda")`` (the hardware JPEG decoder on A100,
H100 and H200), decodes about 2,000/s. So on this path the CPU only reads files and parses JPEG
headers, and the GPU decodes, rotates, resizes and normalises.

Only JPEGs that nvJPEG decodes reliably take it: baseline, 3-channel, ending with the end-of-image
marker, under the decompression-bomb limit. Everything else (PNG and other formats, progressive,
CMYK or grayscale JPEGs, truncated or corrupt files) goes through the exact CPU path
(``data.decode_image``), so an unreadable image is skipped and reported exactly as there. A JPEG
that nvJPEG still refuses falls back the same way, one image at a time.

On a CPU the same code runs with torchvision's libjpeg-turbo decoder (PIL's library: identical
pixels) and torch's uint8 antialiased resize (PIL's algorithm, within one level, several times
faster than PIL's resize), decoding in a thread beside the model: the fastest CPU path measured,
within cosine 0.99999 of the exact one. That is also how the tests exercise this code.
"""

from __future__ import annotations

import io
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Generator, Iterable, Iterator, TypeVar

import torch
import torch.nn.functional as F
from PIL import Image

from wildreid.data.images import MAX_IMAGE_PIXELS, ImageReadError, read_image_bytes
from wildreid.describe.backbones import Preprocess

EXIF_ORIENTATION = 0x0112
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
# Interpolations with an antialiased torch kernel that follows PIL's filter (torch has no box or
# lanczos): with any other the images go through PIL instead.
TENSOR_INTERPOLATIONS = {"bilinear", "bicubic"}
# Room for one decoded photo on the device when sizing batches (16 Mpx RGB, uint8).
DECODED_BYTES_PER_IMAGE = 3 * 16_000_000


# --------------------------------------------------------------------------------------------
# Which files take this path


def jpeg_orientation(data: bytes) -> int | None:
    """EXIF orientation (1-8) of a JPEG that nvJPEG can decode; None: let the CPU path decide.

    Parses the header only (PIL reads markers up to the scan, no pixel is decoded).
    """
    if not data.startswith(JPEG_START) or not data.rstrip(b"\x00\r\n ").endswith(JPEG_END):
        return None  # not a JPEG, or truncated (or trailing data): PIL decodes or reports it
    try:
        with Image.open(io.BytesIO(data)) as image:
            if (
                image.format != "JPEG"
                or image.mode != "RGB"
                or image.info.get("progressive")
                or image.info.get("progression")
            ):
                return None
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - any header PIL cannot parse: the CPU path reports it properly
        return None
    if width * height > MAX_IMAGE_PIXELS:
        return None  # decode_image refuses it (as a decompression bomb), with its message
    # ImageOps.exif_transpose ignores values outside 1-8; so do we.
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn a (C, H, W) image upright as ``PIL.ImageOps.exif_transpose`` does for that tag."""
    h, w = image.dim() - 2, image.dim() - 1
    if orientation == 2:  # mirrored
        return image.flip(w)
    if orientation == 3:  # upside down
        return image.flip(h, w)
    if orientation == 4:  # mirrored upside down
        return image.flip(h)
    if orientation == 5:  # PIL TRANSPOSE: mirror along the main diagonal
        return image.transpose(h, w)
    if orientation == 6:  # PIL ROTATE_270: a quarter turn clockwise
        return image.rot90(-1, (h, w))
    if orientation == 7:  # PIL TRANSVERSE: mirror along the other diagonal
        return image.transpose(h, w).flip(h, w)
    if orientation == 8:  # PIL ROTATE_90: a quarter turn anticlockwise
        return image.rot90(1, (h, w))
    return image


def resize(image: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """Antialiased resize of a (C, H, W) uint8 image to float values in 0-255, rounded as PIL's
    8-bit output is."""
    if image.device.type == "cpu":
        # torch's uint8 antialiased kernel is PIL's fixed-point algorithm: equal to PIL's pixels
        # except +-1 on about 0.2% of them, and faster than the float kernel.
        return F.interpolate(image[None], size=size, mode=interpolation, antialias=True)[0].float()
    # CUDA has no uint8 kernel: float, then clamp and round like PIL's 8-bit result.
    resized = F.interpolate(image[None].float(), size=size, mode=interpolation, antialias=True)[0]
    return resized.clamp_(0, 255).round_()


def normalise(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """0-255 values to the model's input: (x / 255 - mean) / std, in place."""
    mean = torch.tensor(preprocess.mean, device=batch.device).view(-1, 1, 1) * 255.0
    scale = 1.0 / (torch.tensor(preprocess.std, device=batch.device).view(-1, 1, 1) * 255.0)
    return batch.sub_(mean).mul_(scale)


def decode_jpegs(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decode to (3, H, W) uint8 on ``device``; None for each image the decoder refuses."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not encoded:
        return []
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except (RuntimeError, ValueError):
        # One bad image fails the whole batched call: decode one by one to find which.
        decoded: list[torch.Tensor | None] = []
        for data in encoded:
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except (RuntimeError, ValueError):
                decoded.append(None)
        return decoded


# --------------------------------------------------------------------------------------------
# Host side: read and sort one file (runs in a thread pool)


@dataclass
class Encoded:
    """A JPEG for the device decoder."""

    row: int
    name: str
    data: torch.Tensor  # 1-D uint8, the file's bytes
    orientation: int


@dataclass
class Ready:
    """An image the CPU path has already turned into model input."""

    row: int
    tensor: torch.Tensor


@dataclass
class Failed:
    row: int
    reason: str


CpuPath = Callable[[bytes, str], torch.Tensor]  # (file bytes, name) -> model input (3, H, W)


def read_item(path: str, row: int, cpu_path: CpuPath, cpu_only: bool = False) -> Encoded | Ready | Failed:
    """``cpu_only``: ``cpu_path`` makes this image's input whatever its format (a region of it)."""
    try:
        data = read_image_bytes(path)
        orientation = None if cpu_only else jpeg_orientation(data)
        if orientation is not None:
            return Encoded(row, str(path), torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation)
        return Ready(row, cpu_path(data, str(path)))
    except ImageReadError as error:
        return Failed(row, str(error))


@dataclass
class Batch:
    rows: list[int]  # input rows of the batch's images, in order
    images: torch.Tensor | None  # (N, 3, H, W) model input on the device, None if all failed
    failures: list[tuple[int, str]]
    device_decoded: int = 0  # how many went through the device decoder
    cpu_decoded: int = 0  # how many the CPU path decoded (not JPEG, or refused)


def assemble(
    items: list[Encoded | Ready | Failed], preprocess: Preprocess, device: torch.device, cpu_path: CpuPath
) -> Batch:
    """Decode the JPEGs of one batch on ``device`` and stack everything, in input order."""
    failures = [(item.row, item.reason) for item in items if isinstance(item, Failed)]
    encoded = [item for item in items if isinstance(item, Encoded)]
    ready = [item for item in items if isinstance(item, Ready)]
    resized: dict[int, torch.Tensor] = {}
    for item, image in zip(encoded, decode_jpegs([item.data for item in encoded], device)):
        if image is None:
            # The device decoder refused it: the CPU path decodes it or says why it cannot.
            try:
                ready.append(Ready(item.row, cpu_path(item.data.numpy().tobytes(), item.name)))
            except ImageReadError as error:
                failures.append((item.row, str(error)))
            continue
        resized[item.row] = resize(orient(image, item.orientation), preprocess.size, preprocess.interpolation)
    done = set(resized) | {item.row for item in ready}
    rows = [item.row for item in items if item.row in done]
    if not rows:
        return Batch([], None, failures)
    height, width = preprocess.size
    images = torch.empty((len(rows), 3, height, width), device=device)
    position = {row: index for index, row in enumerate(rows)}
    if resized:
        where = torch.tensor([position[row] for row in resized], device=device)
        images[where] = normalise(torch.stack(list(resized.values())), preprocess)
    for prepared in ready:
        images[position[prepared.row]] = prepared.tensor.to(device, non_blocking=True)
    return Batch(rows, images, failures, len(resized), len(ready))


# --------------------------------------------------------------------------------------------
# The pipeline: files are read by a thread pool, batches are decoded by a background thread on
# its own CUDA stream, so reading, decoding and the model's forward pass overlap.


def device_batches(
    paths: list[str],
    rows: list[int],
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int,
    *,
    threads: int,
    cpu_path: CpuPath,
    ahead: int = 2,
    cpu_only: dict[int, CpuPath] | None = None,
) -> Iterator[Batch]:
    """Batches of model input for ``rows`` of ``paths``, in order, decoded on ``device``;
    the rows of ``cpu_only`` are made by their own CPU path instead (regions of photos)."""
    cpu_only = cpu_only or {}
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="wildreid-read")

    def read_batches() -> Iterator[list]:
        # Reading runs ``ahead`` batches in front of decoding, without holding every file at once.
        pending: deque = deque()
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            pending.append(
                [pool.submit(read_item, paths[row], row, cpu_only.get(row, cpu_path), row in cpu_only) for row in chunk]
            )
            if len(pending) > ahead:
                yield [future.result() for future in pending.popleft()]
        while pending:
            yield [future.result() for future in pending.popleft()]

    cuda = device.type == "cuda"

    def decoded_batches() -> Iterator[tuple[Batch, torch.cuda.Event | None]]:
        # A side stream lets the decoding kernels run while the model's kernels run on the main
        # stream; the event tells the consumer when a batch is complete.
        stream = torch.cuda.Stream(device) if cuda else None
        with torch.cuda.stream(stream) if cuda else nullcontext():
            for items in read_batches():
                batch = assemble(items, preprocess, device, cpu_path)
                event = None
                if cuda:
                    event = torch.cuda.Event()
                    event.record(stream)
                yield batch, event

    background = in_background(decoded_batches(), depth=ahead)
    try:
        for batch, event in background:
            if event is not None:
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(event)
                if batch.images is not None:
                    # Made on the side stream, used on this one: keep the allocator from reusing
                    # its memory before this stream is done with it.
                    batch.images.record_stream(consumer)
            yield batch
    finally:
        background.close()  # stops the decoding thread first, then the readers
        pool.shutdown(wait=True, cancel_futures=True)


_DONE = object()
Item = TypeVar("Item")


def in_background(items: Iterable[Item], depth: int = 2) -> Generator[Item, None, None]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead of the consumer.

    Exceptions reach the consumer; a consumer that stops early stops the thread.
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        error = None
        try:
            for item in items:
                if not put((item, None)):
                    break
        except BaseException as raised:  # noqa: BLE001 - handed over to the consumer
            error = raised
        finally:
            # Close the generator here, in its own thread (it may hold a CUDA stream context).
            close = getattr(items, "close", None)
            if close is not None:
                close()
        put((_DONE, error))

    thread = threading.Thread(target=produce, name="wildreid-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get(timeout=0.1)
            except queue.Empty:
                pass
