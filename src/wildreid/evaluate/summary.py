"""A run's answers in one line for people: how many photos were named, how many are new and in
how many groups, and how many answers are uncertain. Printed by the CLI and at the top of the
report, so a field team sees at once how much is left to check."""

from __future__ import annotations

import pandas as pd

from wildreid.data.dataset import NEW_INDIVIDUAL
from wildreid.decide.grouping import NEW

# A named answer whose calibrated P(same) is below this is more likely another animal than the
# one named: an even chance is the one cut that needs no data to choose. Only calibrated scores
# (presets with local matching) say this; a cosine is not a probability.
UNCERTAIN_BELOW = 0.5
UNCERTAIN_MEANING = f"uncertain: named with P(same) below {UNCERTAIN_BELOW}, so more likely another animal"


def answer_counts(candidates: pd.DataFrame, calibrated: bool) -> dict[str, int | None]:
    """photos, known (named), individuals named, new, new groups (two or more photos), new alone,
    uncertain (None when the scores are not probabilities)."""
    named = candidates[candidates["prediction"] != NEW_INDIVIDUAL]
    new = candidates[candidates["prediction"] == NEW_INDIVIDUAL]
    groups = alone = None
    if "group_kind" in candidates:
        grouped = new[(new["group_kind"] == NEW) & (new["group_size"] >= 2)]
        groups, alone = int(grouped["group"].nunique()), int(len(new) - len(grouped))
    uncertain = None
    if calibrated:
        uncertain = int((named["top1_score"].astype(float) < UNCERTAIN_BELOW).sum())
    return {
        "photos": len(candidates),
        "known": len(named),
        "individuals": int(named["prediction"].nunique()),
        "new": len(new),
        "new_groups": groups,
        "new_alone": alone,
        "uncertain": uncertain,
    }


def summary_line(candidates: pd.DataFrame, calibrated: bool) -> str:
    """e.g. "14 photos: 6 known (3 animals), 8 new (2 groups, 1 alone), 3 uncertain" (within 80
    columns up to thousands of photos; UNCERTAIN_MEANING says what uncertain is)."""
    counts = answer_counts(candidates, calibrated)
    line = (
        f"{_count(counts['photos'], 'photo')}: {counts['known']} known "
        f"({_count(counts['individuals'], 'animal')}), {counts['new']} new"
    )
    if counts["new_groups"] is not None and counts["new"]:
        line += f" ({_count(counts['new_groups'], 'group')}, {counts['new_alone']} alone)"
    if counts["uncertain"] is not None:
        line += f", {counts['uncertain']} uncertain"
    return line


def _count(number: int | None, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def least_certain_first(rows: pd.DataFrame) -> pd.DataFrame:
    """Queries ordered by how close their best score is to their threshold (the answers most
    likely to flip, for a person to look at first); no score or no threshold go last."""
    margin = (rows["top1_score"].astype(float) - rows["threshold"].astype(float)).abs()
    return rows.assign(margin=margin.fillna(float("inf"))).sort_values("margin", kind="stable")
