"""The gallery's one error type (its own module, so that every gallery module can raise it)."""


class GalleryError(ValueError):
    """A gallery that cannot be used as asked; the message says what to do."""
