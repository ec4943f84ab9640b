"""What each figure of an evaluation means, in words, for the console table and the report: a
reader who has never seen the AnimalCLEF papers should know what 0.53 under "BAKS" says."""

from __future__ import annotations

import math

# (short label, meaning). The order is the order of the console table's rows.
METRICS: dict[str, tuple[str, str]] = {
    "score": (
        "score",
        "AnimalCLEF2025 score: the geometric mean sqrt(BAKS x BAUS); 1 is perfect",
    ),
    "baks": (
        "BAKS",
        "balanced accuracy on known individuals: the share of queries of an individual in the "
        "database that were named right, averaged over those individuals",
    ),
    "baus": (
        "BAUS",
        "balanced accuracy on unknown individuals: the share of queries of a new individual "
        "that were answered 'new_individual', averaged over the new individuals",
    ),
    "ari": (
        "ARI",
        "adjusted Rand index of the query grouping (AnimalCLEF2026): 1 when the groups are "
        "exactly the individuals, about 0 for a random grouping",
    ),
    "pair_precision": (
        "pair prec.",
        "of the query pairs put in one group, the share that show one individual",
    ),
    "pair_recall": (
        "pair recall",
        "of the query pairs that show one individual, the share put in one group",
    ),
    "top1": ("top-1", "known queries whose best database match is the right individual"),
    "top5": ("top-5", "known queries with the right individual among the best five"),
    "auc_new_vs_known": (
        "AUC new/known",
        "how well the top score tells new individuals from known ones: 0.5 is chance, 1 perfect",
    ),
}

NOT_MEASURABLE = (
    "n/a: no query of this dataset shows a new individual, so BAUS (and the AUC) cannot be "
    "measured; the competition's score then counts as 0. Judge such a dataset by BAKS and top-1."
)


def shown_metrics(evaluation: dict) -> list[str]:
    """The figures an evaluation holds, in table order: those measured for at least one dataset."""

    def measured(key: str) -> bool:
        values = [evaluation.get(key), *(f.get(key) for f in evaluation["per_dataset"].values())]
        return any(v is not None and not math.isnan(v) for v in values)

    # BAUS and the AUC stay as rows marked n/a where no query is new: a missing row would hide why
    # the score is 0.
    partner = {"baus": "baks", "auc_new_vs_known": "top1"}
    return [key for key in METRICS if measured(key) or (key in partner and measured(partner[key]))]


def unmeasurable_new(figures: dict) -> bool:
    """True for a dataset (or the mean) scored with BAKS/BAUS but without a single new query."""
    baus = figures.get("baus")
    return "baks" in figures and (baus is None or math.isnan(baus))


def figure_text(figures: dict, key: str, *, star: bool = False) -> str:
    """A figure as the table and the report show it: "n/a" where no query is new (BAUS, AUC),
    "-" where it was not measured, else four decimals; the score marked * where it counts an
    unmeasurable BAUS as 0 (or ``star``: a mean over such datasets)."""
    if key in ("baus", "auc_new_vs_known") and unmeasurable_new(figures):
        return "n/a"
    value = figures.get(key)
    if value is None or value != value:
        return "-"
    return f"{value:.4f}" + ("*" if key == "score" and (star or unmeasurable_new(figures)) else "")
