"""Pictures and the HTML report of a run: score histograms with the threshold, metric curves."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from wildreid.data.dataset import DATABASE
from wildreid.decide.thresholds import SimulatedQueries, score_curves
from wildreid.evaluate.meanings import METRICS, NOT_MEASURABLE, figure_text, shown_metrics, unmeasurable_new
from wildreid.evaluate.photo_tables import groups_section, queries_table
from wildreid.evaluate.summary import UNCERTAIN_MEANING, summary_line


def query_truth(result) -> pd.DataFrame | None:
    """Per query: true identity and whether it is new, or None when the truth is not known."""
    queries = result.dataset.queries
    if queries["identity"].isna().any():
        return None
    table = result.dataset.table
    known_sets = {
        name: set(table.loc[(table["split"] == DATABASE) & (table["dataset"] == name), "identity"])
        for name in result.dataset.dataset_names
    }
    is_new = [identity not in known_sets[name] for identity, name in zip(queries["identity"], queries["dataset"])]
    return pd.DataFrame(
        {"image_id": queries["image_id"].to_numpy(), "truth": queries["identity"].to_numpy(), "is_new": is_new}
    )


def histogramfigure_text(candidates: pd.DataFrame, threshold: float | None, truth: pd.DataFrame | None, title: str):
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    scores = candidates["top1_score"].to_numpy(dtype=float)
    finite = scores[np.isfinite(scores)]
    spread = len(finite) > 0 and finite.min() < finite.max()
    bins: int | list[float] = np.linspace(finite.min(), finite.max(), 31).tolist() if spread else 30
    if truth is not None:
        merged = candidates[["image_id", "top1_score"]].merge(truth, on="image_id")
        for label, mask, colour in (
            ("known individual", ~merged["is_new"], "tab:blue"),
            ("new individual", merged["is_new"], "tab:orange"),
        ):
            axis.hist(merged.loc[mask, "top1_score"].dropna(), bins=bins, alpha=0.6, label=label, color=colour)
    else:
        axis.hist(finite, bins=bins, alpha=0.8, label="queries", color="tab:gray")
    if threshold is not None and math.isfinite(threshold):
        axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axis.set_xlabel("top-1 score")
    axis.set_ylabel("queries")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure


def curvesfigure_text(grid, baks, baus, score, threshold: float | None, title: str):
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    axis.plot(grid, baks, label="BAKS")
    axis.plot(grid, baus, label="BAUS")
    axis.plot(grid, score, label="sqrt(BAKS*BAUS)", linewidth=2)
    if threshold is not None and math.isfinite(threshold):
        axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axis.set_xlabel("threshold")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure


def real_curves(candidates: pd.DataFrame, truth: pd.DataFrame, grid: np.ndarray):
    merged = candidates.merge(truth, on="image_id")
    simulated = SimulatedQueries(
        merged["truth"].to_numpy(dtype=object),
        merged["is_new"].to_numpy(),
        merged["identity_1"].to_numpy(dtype=object),
        np.nan_to_num(merged["top1_score"].to_numpy(dtype=float), nan=-np.inf),
    )
    return score_curves([simulated], grid)


def figures_for_run(result) -> dict[str, Figure]:
    """name -> figure, per dataset: histogram, and metric-vs-threshold curves."""
    figures = {}
    truth = query_truth(result)
    for group, rows in result.candidates.groupby(
        "dataset" if result.preset.same_dataset_only else np.full(len(result.candidates), "all"), sort=False
    ):
        threshold = result.thresholds.get(group)
        figures[f"{group}_histogram"] = histogramfigure_text(rows, threshold, truth, f"{group}: top-1 scores")
        scores = rows["top1_score"].to_numpy(dtype=float)
        scores = scores[np.isfinite(scores)]
        if len(scores) == 0:
            continue
        choice = result.threshold_choices.get(group)
        if truth is not None:
            grid = np.linspace(scores.min() - 1e-6, scores.max() + 1e-6, 200)
            baks, baus, score = real_curves(rows, truth, grid)
            figures[f"{group}_curves"] = curvesfigure_text(
                grid, baks, baus, score, threshold, f"{group}: metric against threshold (queries)"
            )
        if choice is not None and len(choice.grid):
            figures[f"{group}_simulated"] = curvesfigure_text(
                choice.grid,
                choice.curve_baks,
                choice.curve_baus,
                choice.curve_score,
                threshold,
                f"{group}: simulated open set on the database",
            )
    return figures


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def render_report(
    result,
    evaluation: dict | None,
    figure_png: dict[str, bytes],
    *,
    folder: Path | None = None,
    captions: dict[str, str] | None = None,
) -> str:
    """A self-contained HTML page of the run: what the scores mean, the figures, the photos to
    look at first, the new individuals' groups and every query with its answer. Plots are
    inlined; photos are linked relative to ``folder``, the run folder (photo_tables.py)."""
    folder = Path(folder) if folder is not None else Path.cwd()
    captions = captions or {}
    truth = query_truth(result)
    pictures = "\n".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
        f"<figcaption>{html.escape(captions.get(name, name))}</figcaption></figure>"
        for name, data in figure_png.items()
        if not name.startswith("matches_")
    )
    matches = "\n".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
        f"<figcaption>{html.escape(captions.get(name, name))}</figcaption></figure>"
        for name, data in figure_png.items()
        if name.startswith("matches_")
    )
    if matches:
        matches = (
            "<h2>Answers to look at first</h2><p>The queries whose best score is closest to their "
            "dataset's threshold, beside their two best candidates, with the keypoints that "
            "matched (green lines).</p>" + matches
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wildreid report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}figure{{display:inline-block;margin:0.5em}}
table.photos td,table.photos th{{text-align:left;vertical-align:top}}img.thumb{{max-width:96px;max-height:96px}}
div.group{{border-top:1px solid #ccc;margin:0.5em 0}}dt{{font-weight:bold}}</style></head>
<body><h1>wildreid report</h1>
<p>Source: {html.escape(result.dataset.source)}<br>Preset: <b>{html.escape(result.preset.name)}</b>
 &mdash; {html.escape(result.preset.description)}<br>Backbone: {html.escape(result.preset.backbone)}<br>
Scores: {html.escape(result.preset.score_meaning)}.</p>
{_summary(result, evaluation)}
{_notes(result)}
{pictures}
{matches}
{groups_section(result, folder)}
<h2 id="queries">Every query</h2>
<p>Per dataset, the least certain answers (best score closest to the threshold) first. Each
candidate shows its best photo, its name and its score ({html.escape(result.preset.score_name)}).
Click a picture to open the photo.</p>
{queries_table(result, truth, folder)}
{_failures(result)}
</body></html>
"""


def _summary(result, evaluation: dict | None) -> str:
    """Counts of answers, the thresholds, and the metric table with what each figure means (or
    why there is none)."""
    candidates = result.candidates
    calibrated = bool(result.preset.local)
    lines = [
        f"<p><b>{html.escape(summary_line(candidates, calibrated))}</b>"
        + (f" ({html.escape(UNCERTAIN_MEANING)})" if calibrated else "")
        + "</p>"
    ]
    header = ["dataset", "queries", "threshold", "simulated score"]
    keys = shown_metrics(evaluation) if evaluation else []
    header += [METRICS[key][0] for key in keys]
    rows = []
    for group, threshold in result.thresholds.items():
        choice = result.threshold_choices.get(group)
        figures = (evaluation or {}).get("per_dataset", {}).get(group, {})
        queries = int((candidates["dataset"] == group).sum()) if group != "all" else len(candidates)
        cells = [group, queries, "none (closed set)" if threshold is None else _fmt(threshold)]
        cells.append(_fmt(choice.simulated_score) if choice else "-")
        cells += [figure_text(figures, key) for key in keys]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    lines.append(
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(rows) + "</table>"
    )
    lines.append(
        "<p>threshold: a query whose best score is below it is answered new_individual. "
        "simulated score: the AnimalCLEF2025 score the threshold reached when database photos "
        "were asked as queries (chosen without any query label).</p>"
    )
    if not evaluation:
        lines.append(
            "<p>The query photos carry no identity labels, so no accuracy can be measured; the "
            "tables below give each photo's answer for a reviewer to check.</p>"
        )
        return "\n".join(lines)
    if evaluation.get("score") == evaluation.get("score"):
        lines.insert(0, f"<p><b>Score {figure_text(evaluation, 'score')}</b> ({html.escape(METRICS['score'][1])}).</p>")
    legend = "".join(f"<dt>{html.escape(METRICS[k][0])}</dt><dd>{html.escape(METRICS[k][1])}</dd>" for k in keys)
    if any(unmeasurable_new(f) for f in evaluation["per_dataset"].values()):
        legend += f"<dt>n/a, *</dt><dd>{html.escape(NOT_MEASURABLE)}</dd>"
    lines.append(f"<details><summary>What the figures mean</summary><dl>{legend}</dl></details>")
    return "\n".join(lines)


def _notes(result) -> str:
    """What the run says a reader should know: thin evidence under a fit, fallbacks, choices."""
    if not result.notes:
        return ""
    items = "".join(f"<li>{html.escape(str(note))}</li>" for note in result.notes)
    return f"<h2>Notes on this run</h2><ul class='notes'>{items}</ul>"


def _failures(result) -> str:
    failures = ""
    if len(result.failures):
        failures = (
            "<h2>Images skipped</h2><ul>"
            + "".join(
                f"<li>{html.escape(str(r.image_id))} ({r.split}): {html.escape(r.reason)}</li>"
                for r in result.failures.itertuples()
            )
            + "</ul>"
        )
    if result.no_animal is not None and len(result.no_animal):
        failures += (
            f"<h2>Photos without an animal ({len(result.no_animal)})</h2><p>MegaDetector found no animal "
            "above the detection threshold in these photos (or could not read them); they were left out.</p><ul>"
            + "".join(
                f"<li>{html.escape(str(r.image_id))} ({r.split}): {html.escape(str(r.reason))}</li>"
                for r in result.no_animal.itertuples()
            )
            + "</ul>"
        )
    return failures


def _fmt(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)
