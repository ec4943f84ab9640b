"""The catalogue's photo store: files named by their content, so the catalogue owns its photos.

A photo with SHA-256 ``abcd...`` lives at ``<store>/ab/abcd....<ext>``, the extension taken from
the bytes (what the file really is), never from the name it arrived with. Files are written
atomically (temporary file, fsync, rename) *before* the database row that refers to them is
committed: a crash can leave a file nobody refers to (harmless, removed by ``catalog check
--repair``) but never a row whose file is missing or half written.
"""

from __future__ import annotations

import re
from pathlib import Path

from wildreid.data.images import content_hash
from wildreid.util.files import atomic_path

# Magic numbers of the photo formats accepted. Checked before decoding so that a file is trusted
# for what it is, not for what its name says.
_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\xff\xd8\xff", 0, "jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"II*\x00", 0, "tif"),
    (b"MM\x00*", 0, "tif"),
    (b"BM", 0, "bmp"),
]
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
STORED_PATH_PATTERN = re.compile(r"[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|png|tif|bmp|webp)")


def sniff_image_type(data: bytes) -> str | None:
    """The file extension for these bytes ('jpg', 'png', 'webp', 'tif', 'bmp'), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, offset, extension in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return extension
    return None


class PhotoStoreError(ValueError):
    """Something else is where the store keeps a photo or its folder; the message names it."""


class PhotoStore:
    """Content-addressed files under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def put(self, data: bytes, extension: str) -> tuple[str, str]:
        """Store ``data`` (if not there yet); return (sha256, path relative to the store)."""
        digest = content_hash(data)
        relative = f"{digest[:2]}/{digest}.{extension}"
        target = self.root / relative
        if not target.is_file() or target.stat().st_size != len(data):
            try:
                with atomic_path(target) as temporary:
                    temporary.write_bytes(data)
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as error:
                clash = self._in_the_way(target)
                if clash is None:
                    raise
                what, belongs = ("a folder", "a photo") if clash == target else ("a file", "a folder of photos")
                raise PhotoStoreError(
                    f"{clash}: {what} is where the catalogue's photo store keeps {belongs}; nothing "
                    "was stored. Move it away (it is not the catalogue's), then run the command again."
                ) from error
        return digest, relative

    def _in_the_way(self, target: Path) -> Path | None:
        """The first of the store's folder, the photo's folder and the photo itself that is
        something else (a file where a folder belongs, or the reverse)."""
        for folder in (self.root, target.parent):
            if folder.exists() and not folder.is_dir():
                return folder
        return target if target.is_dir() else None

    def path(self, relative: str) -> Path:
        """Absolute path of a stored file. Only the store's own naming is accepted, so a value
        from a request or a tampered database row can never point outside the store."""
        if not STORED_PATH_PATTERN.fullmatch(relative or ""):
            raise ValueError(
                f"{self.root}: {relative!r} is not a path of this photo store, as a catalogue row or a "
                "request gave it; a catalogue row naming it was edited or damaged (`wildreid catalog check` "
                "lists such rows)."
            )
        return self.root / relative

    def files(self) -> list[str]:
        """Every stored photo, as paths relative to the store (temporary files excluded)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.glob("??/*")
            if p.is_file() and STORED_PATH_PATTERN.fullmatch(p.relative_to(self.root).as_posix())
        )

    def leftovers(self) -> list[Path]:
        """Temporary files of writes a crash interrupted."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("??/.*.tmp") if p.is_file())
