"""The automatic foreground's method names and their check: apart from foreground.py (numpy,
pandas, torch) so that a preset, and the command line's help, load none of them."""

from __future__ import annotations

METHODS = ("cam", "cam-mask")


def check_method(method: str | None) -> str | None:
    if method in (None, "", "none"):
        return None
    if method not in METHODS:
        raise ValueError(f"foreground method '{method}': choose one of {', '.join(METHODS)}, or 'none'.")
    return method
