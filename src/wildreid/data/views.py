"""Viewpoints: which photos may be compared, and mirrored matching.

A photo's view comes from its metadata (``viewpoint``, else ``orientation``: left, right, front,
left_face, topright...). A left flank and a right flank of one animal share no marks, so
comparing them only adds noise to the ranking and to the calibration. The rule says which views
are compatible:

- ``off``: every photo with every photo (views ignored);
- ``same``: equal views only;
- a table of compatible pairs, ``"left=front,right=front"`` (equal views are always compatible).

Under every rule a photo whose view is unknown (no column, an empty cell, "unknown") is
compatible with all, so missing metadata never hides a photo.

Mirrored matching (for species whose two sides look alike): a photo may also be compared with a
photo of the mirror view (``left`` <-> ``right``, ``topleft`` <-> ``topright``) after a horizontal
flip of the query side, both for the global descriptor and for the keypoints (mirror.py).
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pandas is not imported at run time: presets (and the CLI's help) read this module
    import pandas as pd

VIEW_COLUMNS = ("viewpoint", "orientation")
UNKNOWN_VIEWS = {"", "unknown", "nan", "none", "na", "n/a", "?"}
OFF, SAME = "off", "same"
_SIDES = re.compile(r"left|right")


def normalise_view(value: object) -> str | None:
    """A view label as compared: lower case, stripped; None where unknown."""
    # pd.NA can only come from a loaded pandas; looking it up there keeps this module's import light.
    pandas = sys.modules.get("pandas")
    if value is None or (isinstance(value, float) and np.isnan(value)) or (pandas is not None and value is pandas.NA):
        return None
    text = str(value).strip().lower()
    return None if text in UNKNOWN_VIEWS else text


def photo_views(table: pd.DataFrame) -> np.ndarray:
    """Each row's view (object array, None where unknown): the first of VIEW_COLUMNS present."""
    for column in VIEW_COLUMNS:
        if column in table and table[column].notna().any():
            return np.array([normalise_view(v) for v in table[column]], dtype=object)
    return np.full(len(table), None, dtype=object)


def known_views(values: Iterable[object]) -> np.ndarray | None:
    """Views read back from a table's ``view`` column (pandas turns None into NaN there), as
    compared: None where unknown; None for the whole column when no view is known."""
    views = np.array([normalise_view(v) for v in values], dtype=object)
    return views if any(v is not None for v in views) else None


def mirror_view(view: str | None) -> str | None:
    """The view a horizontal flip shows: left <-> right inside the label; None if it has no side."""
    if view is None or not _SIDES.search(view):
        return None
    return _SIDES.sub(lambda m: "right" if m.group(0) == "left" else "left", view)


def parse_view_rule(text: str) -> str:
    """A rule as the preset keeps it: 'off', 'same', or 'a=b,c=d' pairs. A CSV file of pairs (two
    columns, one pair a row, an optional header) is read into that text, so that a saved gallery
    carries its rule with it."""
    rule = text.strip()
    if rule.lower() in (OFF, SAME):
        return rule.lower()
    path = Path(rule).expanduser()
    if path.suffix.lower() == ".csv" or path.is_file():
        if not path.is_file():
            raise ValueError(f"view rule file {path} does not exist; give 'off', 'same', 'a=b,c=d' or a CSV of pairs.")
        pairs = []
        with open(path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                cells = [c.strip() for c in row if c.strip()]
                if not cells:
                    continue
                if len(cells) != 2:
                    raise ValueError(f"{path}, row {number}: give two views per row (a compatible pair), got {row}.")
                if number == 1 and [c.lower() for c in cells] in (["view_a", "view_b"], ["a", "b"]):
                    continue  # a header
                pairs.append("=".join(cells))
        if not pairs:
            raise ValueError(f"{path}: no pairs of views; one compatible pair per row, e.g. 'left,front'.")
        rule = ",".join(pairs)
    ViewRule(rule)  # refuses a malformed table now, not at the first query
    return rule


@dataclass(frozen=True)
class ViewRule:
    rule: str = OFF
    mirror: bool = False

    def __post_init__(self) -> None:
        if self.rule not in (OFF, SAME):
            for part in self.rule.split(","):
                a, sep, b = part.partition("=")
                if not sep or not normalise_view(a) or not normalise_view(b):
                    raise ValueError(
                        f"view rule '{self.rule}': '{part}' is not a pair of views; give 'off', 'same', "
                        "or compatible pairs such as 'left=front,right=front'."
                    )
        if self.mirror and self.rule == OFF:
            raise ValueError(
                "mirrored matching compares a view with its mirror view, so it needs a view rule: "
                "add --views same (or a table of compatible views)."
            )

    @property
    def active(self) -> bool:
        return self.rule != OFF

    def _pairs(self) -> set[tuple[str, str]]:
        if self.rule in (OFF, SAME):
            return set()
        pairs: set[tuple[str, str]] = set()
        for part in self.rule.split(","):
            a, _, b = part.partition("=")
            view_a, view_b = normalise_view(a), normalise_view(b)
            assert view_a is not None and view_b is not None  # __post_init__ refused any other rule
            pairs |= {(view_a, view_b), (view_b, view_a)}
        return pairs

    def compatible(self, a: str | None, b: str | None) -> bool:
        if not self.active or a is None or b is None or a == b:
            return True
        return (a, b) in self._pairs()

    def mirrored(self, a: str | None, b: str | None) -> bool:
        """Compared after flipping the first photo: both views known, not directly compatible, and
        the first's mirror view compatible with the second."""
        if not self.mirror or a is None or b is None or self.compatible(a, b):
            return False
        flipped = mirror_view(a)
        return flipped is not None and flipped != a and self.compatible(flipped, b)

    def masks(
        self, query_views: Iterable[str | None], database_views: npt.ArrayLike
    ) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
        """Per query, the database photos it is compared with directly and after a flip (boolean
        masks over the database; None: all, for direct; none, for mirrored). Queries of one view
        share one array, so callers can group them by mask."""
        database_views = np.asarray(database_views, dtype=object)
        labels = list(dict.fromkeys(database_views.tolist()))
        codes = np.array([labels.index(v) for v in database_views], dtype=np.int64)
        direct_cache: dict[str | None, np.ndarray | None] = {}
        mirror_cache: dict[str | None, np.ndarray | None] = {}
        direct: list[np.ndarray | None] = []
        mirrored: list[np.ndarray | None] = []
        for view in query_views:
            if view not in direct_cache:
                if not self.active or view is None:
                    direct_cache[view] = None
                    mirror_cache[view] = None
                else:
                    fits = np.array([self.compatible(view, label) for label in labels], dtype=bool)
                    direct_cache[view] = fits[codes] if len(codes) else np.zeros(0, bool)
                    flips = np.array([self.mirrored(view, label) for label in labels], dtype=bool)
                    mirror_cache[view] = flips[codes] if flips.any() and len(codes) else None
            direct.append(direct_cache[view])
            mirrored.append(mirror_cache[view])
        return direct, mirrored
