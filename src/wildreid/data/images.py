"""Safe image reading: bytes from disk, content hashes, and decoding with size limits."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------------------------------
# when and where a photo was taken, from its EXIF


@dataclass(frozen=True)
class PhotoPlace:
    """When and where the camera says a photo was taken; None where it does not say (or says
    something impossible). ``capture_time`` is 'YYYY-MM-DD HH:MM:SS', with the UTC offset
    ('+02:00') when the camera recorded one (OffsetTimeOriginal); coordinates are WGS84 decimal
    degrees, altitude metres above sea level."""

    capture_time: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None


_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATE_TIME_ORIGINAL, _OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
_OFFSET = re.compile(r"[+-]\d{2}:\d{2}|Z")


def read_photo_place(data: bytes) -> PhotoPlace:
    """The capture time and GPS position in a photo's EXIF (no pixel is decoded). Never raises:
    a photo without EXIF, or with a broken or impossible one, gives None for what is not known,
    so that one camera's odd EXIF never costs a photo its identification."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a decompression-bomb warning is decode_image's business
            with Image.open(io.BytesIO(data)) as image:
                exif = image.getexif()
                details = exif.get_ifd(_EXIF_IFD)
                gps = exif.get_ifd(_GPS_IFD)
    except Exception:  # noqa: BLE001 - anything Pillow raises on a broken header means "no EXIF"
        return PhotoPlace()
    latitude = _degrees(gps.get(2), gps.get(1), "NS", 90)
    longitude = _degrees(gps.get(4), gps.get(3), "EW", 180)
    if latitude is None or longitude is None:
        latitude = longitude = None  # half a position is no position
    return PhotoPlace(
        capture_time=_capture_time(details.get(_DATE_TIME_ORIGINAL), details.get(_OFFSET_TIME_ORIGINAL)),
        latitude=latitude,
        longitude=longitude,
        altitude=_altitude(gps.get(6), gps.get(5)) if latitude is not None else None,
    )


def _text_value(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip("\x00 ") if value is not None else ""


def _capture_time(value: object, offset: object) -> str | None:
    """EXIF's 'YYYY:MM:DD HH:MM:SS' as 'YYYY-MM-DD HH:MM:SS[+HH:MM]'; None when empty or not a
    real moment (cameras write '0000:00:00 00:00:00' before their clock is set)."""
    match = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", _text_value(value))
    if not match:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        moment = dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    text = moment.isoformat(sep=" ")
    offset_text = _text_value(offset)
    return text + offset_text if _OFFSET.fullmatch(offset_text) else text


def _degrees(value: Any, reference: object, sides: str, limit: float) -> float | None:
    """GPS (degrees, minutes, seconds) and its N/S or E/W reference as signed decimal degrees."""
    try:
        degrees, minutes, seconds = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    side = _text_value(reference).upper()[:1]
    if side not in sides or not all(math.isfinite(part) and part >= 0 for part in (degrees, minutes, seconds)):
        return None
    number = degrees + minutes / 60 + seconds / 3600
    if number > limit:
        return None
    return round(-number if side == sides[1] else number, 7)  # 7 decimals: about 1 cm


def _altitude(value: Any, reference: object) -> float | None:
    try:
        metres = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(metres):
        return None
    below = reference in (1, b"\x01", "\x01")  # 1: below sea level
    return round(-metres if below else metres, 2)
