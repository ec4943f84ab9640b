"""The report's per-photo content: every query with its answer and candidates, and the groups of
new individuals, each photo shown as a small picture that links to the photo itself.

The pictures are links, not copies: a run of 15,000 queries would otherwise carry every photo
inside report.html. The links are relative to the run folder, so the report still shows the
photos when the project folder (photos and runs together) is moved or copied to another machine.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from wildreid.data.dataset import NEW_INDIVIDUAL
from wildreid.decide.grouping import NEW
from wildreid.evaluate.summary import UNCERTAIN_BELOW, least_certain_first

CANDIDATES_SHOWN = 3  # per query in the table; candidates.csv has all top-k


def photo_link(path: str, folder: Path) -> str:
    """The href of a photo as seen from the run folder ``folder``. write_run writes the report in
    a staging folder beside the final one, at the same depth, so the relative path is the same."""
    try:
        relative = os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows): an absolute link is all there is
        return Path(path).resolve().as_uri()
    return quote(Path(relative).as_posix())


def _thumbnail(path: str | None, folder: Path, label: str) -> str:
    if not path:
        return ""
    href = html.escape(photo_link(path, folder))
    return f"<a href='{href}'><img class='thumb' loading='lazy' src='{href}' alt='{html.escape(label)}'></a>"


def _score(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def queries_table(result, truth: pd.DataFrame | None, folder: Path) -> str:
    """One row per query: photo, id, answer, best candidates with their scores and best photo,
    its group; with the truth and whether the answer is right when the queries are labelled.
    Queries closest to their threshold (the least certain answers) come first in each dataset."""
    candidates = result.candidates
    if candidates.empty:
        return "<p>No query photos.</p>"
    calibrated = bool(result.preset.local)
    path_of = dict(zip(result.dataset.table["image_id"], result.dataset.table["path"]))
    truth_of = {} if truth is None else dict(zip(truth["image_id"], truth["truth"]))
    is_new_of = {} if truth is None else dict(zip(truth["image_id"], truth["is_new"]))
    ranks = [r for r in range(1, CANDIDATES_SHOWN + 1) if f"identity_{r}" in candidates]
    header = ["photo", "query", "answer", *(f"#{r}" for r in ranks)]
    if "group" in candidates:
        header.append("group")
    if truth is not None:
        header += ["truth", "right?"]
    rows = []
    for _, part in candidates.groupby("dataset", sort=False):
        for row in least_certain_first(part).itertuples():
            query = str(row.image_id)
            cells = [_thumbnail(path_of.get(row.image_id), folder, query), html.escape(query)]
            answer = html.escape(str(row.prediction))
            uncertain = calibrated and row.prediction != NEW_INDIVIDUAL and row.top1_score < UNCERTAIN_BELOW
            cells.append(
                f"<b>{answer}</b>"
                + ("<br><small>uncertain</small>" if uncertain else "")
                + (f"<br><small>{html.escape(row.error)}</small>" if row.error else "")
            )
            for rank in ranks:
                identity = getattr(row, f"identity_{rank}")
                if not isinstance(identity, str):
                    cells.append("")
                    continue
                match = getattr(row, f"match_{rank}")
                cells.append(
                    _thumbnail(path_of.get(match), folder, f"{identity}: {match}")
                    + f"<br>{html.escape(identity)} {_score(getattr(row, f'score_{rank}'))}"
                )
            if "group" in candidates:
                cells.append("" if pd.isna(row.group) else html.escape(str(row.group)))
            if truth is not None:
                actual = truth_of.get(row.image_id)
                expected = NEW_INDIVIDUAL if is_new_of.get(row.image_id) else actual
                cells += [html.escape(str(actual)), "yes" if row.prediction == expected else "<b>no</b>"]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        "<table class='photos'><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def groups_section(result, folder: Path) -> str:
    """The provisional new individuals: each group of two or more queries that grouping put
    together without a known individual, with its photos, largest first."""
    candidates = result.candidates
    if "group_kind" not in candidates:
        return ""
    path_of = dict(zip(result.dataset.table["image_id"], result.dataset.table["path"]))
    new = candidates[(candidates["group_kind"] == NEW) & (candidates["group_size"] >= 2)]
    if new.empty:
        return "<h2>New individuals</h2><p>Grouping found no two query photos of the same new individual.</p>"
    blocks = []
    for group, members in sorted(new.groupby("group", sort=False), key=lambda item: -len(item[1])):
        pictures = "".join(_thumbnail(path_of.get(image_id), folder, str(image_id)) for image_id in members["image_id"])
        names = ", ".join(html.escape(str(i)) for i in members["image_id"])
        blocks.append(
            f"<div class='group'><h3>{html.escape(str(group))} ({len(members)} photos)</h3>"
            f"{pictures}<p><small>{names}</small></p></div>"
        )
    return (
        f"<h2>New individuals ({len(blocks)} groups of two or more photos)</h2>"
        "<p>Query photos that no known individual matched, grouped because they match each "
        "other. Each group is a provisional individual for a reviewer to confirm.</p>" + "".join(blocks)
    )
