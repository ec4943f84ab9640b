"""Safe image reading: bytes from disk, content hashes, and decoding with size limits."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


# Decompression-bomb guard: a photo larger than this many pixels is refused rather than decoded
# (a 1 KB PNG can claim 50,000 x 50,000 pixels and take 10 GB to decode). 200 Mpx is far above any
# camera-trap or survey photo.
MAX_IMAGE_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL's own warning (turned into an error below) at the same size


# Memory bound of one decoded picture: a JPEG larger than this is decoded at 1/2, 1/4 or 1/8 scale
# (libjpeg's DCT scaling: the full-size pixels never exist in memory); other formats are decoded in
# full (at most MAX_IMAGE_PIXELS) and reduced at once, so every later copy (rotation, RGB
# conversion, resize) is of the reduced picture. 24 Mpx (6000x4000, 72 MB as RGB) keeps ordinary
# camera photos exact; the model input is a few hundred pixels wide either way.
MAX_DECODED_PIXELS = 24_000_000


class ImageReadError(OSError):
    """One image that cannot be decoded; callers skip it and report it."""


def content_hash(data: bytes) -> str:
    """A photo's identity everywhere (caches, catalogue, training records, galleries): the SHA-256
    of its file bytes, so a renamed or copied photo is the same photo and an edited one is not."""
    return hashlib.sha256(data).hexdigest()


def read_image_bytes(path: str | Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read file ({error.strerror or error})") from None
    if not data:
        raise ImageReadError(f"{path}: empty file")
    return data


def decode_image(data: bytes, name: str = "<image>", *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes to an 8-bit RGB picture, upright as the camera meant it.

    Applies EXIF orientation; converts grayscale, CMYK, palette, alpha and 16-bit images to RGB;
    refuses decompression bombs (over MAX_IMAGE_PIXELS); raises ImageReadError, naming ``name``,
    for anything it cannot decode fully.
    ``draft_size`` (height, width of the upright picture): a plain RGB or grey JPEG may be decoded
    at the smallest DCT scale (1/2, 1/4, 1/8) that still covers it - much faster, pixels differ.

    Memory bound: the returned picture has at most MAX_DECODED_PIXELS (24 Mpx, 72 MB as RGB).
    A larger JPEG is decoded directly at the reduced DCT scale (a 14,000 x 14,000 JPEG becomes
    3,500 x 3,500 and its full-size pixels never exist); another format is decoded in full (so
    at most MAX_IMAGE_PIXELS) and reduced before any further copy is made.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageReadError(
                        f"{name}: {width}x{height} pixels is over the "
                        f"{MAX_IMAGE_PIXELS:,} pixel limit (decompression-bomb guard)"
                    )
                scale = _reduction(width, height)
                if image.format == "JPEG" and image.mode in ("RGB", "L") and (draft_size or scale > 1):
                    wanted_width, wanted_height = -(-width // scale), -(-height // scale)
                    if draft_size:
                        wanted_height, wanted_width = draft_size
                        if image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):
                            wanted_height, wanted_width = wanted_width, wanted_height  # stored sideways
                        # never above the memory bound, whatever size was asked for
                        wanted_width = min(wanted_width, -(-width // scale))
                        wanted_height = min(wanted_height, -(-height // scale))
                    image.draft(image.mode, (wanted_width, wanted_height))
                image.load()  # decode now, so truncation surfaces here and not later
                scale = _reduction(*image.size)
                # not a JPEG (or one libjpeg could not scale): reduce before any copy
                reduced = image.reduce(scale) if scale > 1 else image
                return _to_rgb(ImageOps.exif_transpose(reduced))
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(f"{name}: refused as a decompression bomb ({error})") from None
    except UnidentifiedImageError:
        # Pillow's own message names its in-memory buffer (<_io.BytesIO object at 0x...>), not the file.
        raise ImageReadError(
            f"{name}: cannot decode image (not a picture format wildreid reads: JPEG, PNG, WebP, TIFF, BMP or GIF)"
        ) from None
    except (OSError, ValueError, SyntaxError) as error:
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the file", str(error))
        raise ImageReadError(f"{name}: cannot decode image ({reason})") from None


def _reduction(width: int, height: int) -> int:
    """The smallest of 1, 2, 4, 8 that brings the picture within MAX_DECODED_PIXELS (always 8 at
    most: MAX_IMAGE_PIXELS / 64 is under the bound)."""
    scale = 1
    while scale < 8 and (-(-width // scale)) * (-(-height // scale)) > MAX_DECODED_PIXELS:
        scale *= 2
    return scale


def read_image(path: str | Path) -> Image.Image:
    return decode_image(read_image_bytes(path), str(path))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (or 32-bit) grey: scale to the full 8-bit range of the file's bit depth.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent areas become white, not the arbitrary colour stored under alpha 0.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
