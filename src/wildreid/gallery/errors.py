"""The gallery's error types (their own module, so that every gallery module can raise them)."""


class GalleryError(ValueError):
    """A gallery that cannot be used as asked; the message says what to do."""


class UnreadableGallery(GalleryError):
    """A gallery folder whose files are missing, damaged, changed by hand since it was saved, or
    in a format this wildreid does not read; the message names the file and says what to do
    (build the gallery again)."""
