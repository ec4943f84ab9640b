"""The AnimalCLEF2025 metric (BAKS, BAUS, their geometric mean per dataset), the AnimalCLEF2026
one (adjusted Rand index of the queries' clusters per dataset, mean over datasets), pairwise
precision and recall of "same individual" among queries, and retrieval figures.

BAKS: balanced accuracy on known samples - for each true identity that exists in the database,
the fraction of its queries predicted as exactly that identity; the mean over those identities.
BAUS: balanced accuracy on unknown samples - for each identity absent from the database, the
fraction of its queries predicted ``new_individual``; the mean over those identities.
Per dataset: sqrt(BAKS * BAUS), a NaN counted as 0. Final score: plain mean over datasets.

Clusters of the queries, for ARI: a 2026 submission's ``cluster`` column; else a run's groups
(candidates.csv ``group``: a known individual or new_individual_<k>); else the 2025 decision,
each new_individual alone. A query alone is its own cluster, and so is every query whose
``cluster`` or ``group`` cell is empty: two empty cells are two clusters of one query each, not
one cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, roc_auc_score
from sklearn.metrics.cluster import pair_confusion_matrix

from wildreid.data.dataset import DATABASE, NEW_INDIVIDUAL, QUERY, Dataset, DatasetError, _listing, read_text_csv
from wildreid.decide.thresholds import balanced_accuracy


def baks(y_true: Sequence, y_pred: Sequence, new_identities: Sequence) -> float:
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    known = ~np.isin(y_true, np.asarray(list(new_identities), dtype=object))
    return _balanced_accuracy(y_true[known], y_pred[known] == y_true[known])


def baus(y_true: Sequence, y_pred: Sequence, new_identities: Sequence, new_class: str = NEW_INDIVIDUAL) -> float:
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    new = np.isin(y_true, np.asarray(list(new_identities), dtype=object))
    return _balanced_accuracy(y_true[new], y_pred[new] == new_class)


def _balanced_accuracy(y_true: np.ndarray, correct: np.ndarray) -> float:
    """Mean over true identities of the fraction of their samples that are correct (NaN without
    samples): the simulation's per-threshold figure, for one column."""
    return float(balanced_accuracy(np.asarray(correct)[:, None], y_true)[0])


def geometric_score(baks_value: float, baus_value: float) -> float:
    value = math.sqrt(baks_value * baus_value)
    return 0.0 if math.isnan(value) else value


def pairwise_precision_recall(truth: Sequence, clusters: Sequence) -> tuple[float, float]:
    """Of the query pairs put in one cluster, the fraction truly of one individual (precision);
    of the pairs truly of one individual, the fraction put in one cluster (recall)."""
    (_, false_link), (missed, linked) = pair_confusion_matrix(list(truth), list(clusters))
    precision = linked / (linked + false_link) if linked + false_link else math.nan
    recall = linked / (linked + missed) if linked + missed else math.nan
    return float(precision), float(recall)


def query_clusters(rows: pd.DataFrame) -> np.ndarray:
    """The cluster of every query row (see the module's docstring)."""
    alone = "alone:" + rows["image_id"].astype(str)
    # An empty cell (read as "" from a file, NaN from a table) is a query alone, never one cluster
    # shared by every empty cell.
    for column in ("cluster", "group"):
        if column in rows:
            named = rows[column].fillna("").astype(str)
            return np.where(named.str.strip() != "", named, alone).astype(object)
    return np.where(rows["prediction"] != NEW_INDIVIDUAL, rows["prediction"].astype(str), alone).astype(object)


def evaluate(dataset: Dataset, predictions: pd.DataFrame, candidates: pd.DataFrame | None = None) -> dict:
    """Score predictions (columns image_id and identity and/or cluster) against the truth held in
    ``dataset``.

    ``candidates`` (the detailed output: image_id, top1_score and ranked identity columns
    identity_1..identity_k) adds top-1/top-5 accuracy on known queries and the ROC-AUC of the
    top-1 score for telling known from new queries. Returns plain numbers for JSON.
    """
    queries = dataset.queries
    _check_rows(predictions["image_id"], queries["image_id"], "the submission", lambda index: f"row {index + 1}")
    if queries["identity"].isna().any():
        missing = queries.loc[queries["identity"].isna(), "image_id"].head(5).tolist()
        raise ValueError(
            f"{dataset.source}: queries without a true identity (e.g. image_id "
            f"{missing}); evaluation needs the truth for every query."
        )
    answer = "prediction" if "identity" in predictions else "cluster"
    merged = queries[["image_id", "identity", "dataset"]].merge(
        predictions[["image_id"] + [c for c in ("identity", "cluster") if c in predictions]].rename(
            columns={"identity": "prediction"}
        ),
        on="image_id",
        how="left",
    )
    absent = merged.loc[merged[answer].isna(), "image_id"].tolist()
    if absent:
        raise ValueError(
            f"the submission has no prediction for {len(absent)} quer(ies), e.g. "
            f"image_id {absent[:5]}; it needs one row per query."
        )
    if candidates is not None:
        _check_rows(
            candidates["image_id"],
            queries["image_id"],
            "the candidates",
            lambda index: f"row {index + 1}",
            CANDIDATES_ADVICE,
            every_query=True,
        )
        merged = merged.merge(
            candidates.drop(columns=["identity", "dataset", "prediction"], errors="ignore"), on="image_id", how="left"
        )

    per_dataset = {}
    for name, rows in merged.groupby("dataset", sort=False):
        database_identities = set(
            dataset.table.loc[(dataset.table["split"] == DATABASE) & (dataset.table["dataset"] == name), "identity"]
        )
        new_identities = sorted(set(rows["identity"]) - database_identities)
        known = ~rows["identity"].isin(new_identities)
        figures = {"queries": int(len(rows)), "known_queries": int(known.sum()), "new_queries": int((~known).sum())}
        if answer == "prediction":  # a 2026 submission names clusters, not individuals
            figures["baks"] = baks(rows["identity"], rows["prediction"], new_identities)
            figures["baus"] = baus(rows["identity"], rows["prediction"], new_identities)
            figures["score"] = geometric_score(figures["baks"], figures["baus"])
        clusters = query_clusters(rows)
        figures["ari"] = float(adjusted_rand_score(rows["identity"].astype(str), clusters))
        figures["pair_precision"], figures["pair_recall"] = pairwise_precision_recall(
            rows["identity"].astype(str), clusters
        )
        if candidates is not None:
            figures.update(_retrieval_figures(rows, known.to_numpy()))
        per_dataset[str(name)] = figures

    def mean_of(key: str) -> float:
        values = [f[key] for f in per_dataset.values() if key in f and not math.isnan(f[key])]
        return float(np.mean(values)) if values else math.nan

    return {
        "score": float(np.mean([f["score"] for f in per_dataset.values()])) if answer == "prediction" else math.nan,
        "baks": mean_of("baks"),
        "baus": mean_of("baus"),
        "ari": mean_of("ari"),
        "pair_precision": mean_of("pair_precision"),
        "pair_recall": mean_of("pair_recall"),
        **({key: mean_of(key) for key in ("top1", "top5", "auc_new_vs_known")} if candidates is not None else {}),
        "per_dataset": per_dataset,
    }


def _retrieval_figures(rows: pd.DataFrame, known: np.ndarray) -> dict:
    ranked_columns = sorted(
        (c for c in rows.columns if c.startswith("identity_") and c[9:].isdigit()), key=lambda c: int(c[9:])
    )
    ranked = rows[ranked_columns].to_numpy(dtype=object)
    truth = rows["identity"].to_numpy(dtype=object)[:, None]
    hit_rank = np.where(ranked == truth, np.arange(1, ranked.shape[1] + 1), np.inf).min(axis=1)
    figures = {
        "top1": float(np.mean(hit_rank[known] <= 1)) if known.any() else math.nan,
        "top5": float(np.mean(hit_rank[known] <= 5)) if known.any() else math.nan,
    }
    scores = rows["top1_score"].to_numpy(dtype=float)
    usable = ~np.isnan(scores)
    if known[usable].any() and (~known[usable]).any():
        figures["auc_new_vs_known"] = float(roc_auc_score(known[usable], scores[usable]))
    else:
        figures["auc_new_vs_known"] = math.nan
    return figures


def load_submission(path, queries: Sequence | None = None) -> pd.DataFrame:
    """Read a submission CSV (image_id, identity) or (image_id, cluster), ids kept as text.
    Repeated image ids are refused (each would be scored again), and so, given the ``queries``'
    image ids, are rows for images that are not queries: Kaggle rejects both. The message lists
    the rows."""
    table = read_text_csv(path, "submission")
    if "image_id" not in table.columns or not {"identity", "cluster"} & set(table.columns):
        raise DatasetError(
            f"{path}: columns {list(table.columns)}; a submission has the header 'image_id,identity' "
            "(AnimalCLEF2025) or 'image_id,cluster' (AnimalCLEF2026)."
        )
    _check_rows(table["image_id"], queries, str(path), lambda index: f"row {index + 2}")
    return table


SUBMISSION_ADVICE = "Fix the submission: exactly one row per query image, as in the metadata."
CANDIDATES_ADVICE = (
    "Give the candidates.csv written by the same run as the submission, unedited: it has exactly one "
    "row per query image."
)


def load_candidates(path, queries: Sequence) -> pd.DataFrame:
    """Read a run's candidates.csv for :func:`evaluate`: ids and identities kept as text,
    ``top1_score`` as a number (an empty cell, as an unreadable query has, is NaN).

    Refused, each with the file, the rows and what to do: an empty file, a missing column, a score
    that is not a number, and rows that do not match the ``queries``' image ids one to one (a
    repeated row would count its query twice, a foreign one would be scored as a query, a missing
    one would leave a query out of top-1/top-5 and the AUC)."""
    table = read_text_csv(
        path,
        "candidates file",
        "Give the candidates.csv an identify run wrote (header image_id,top1_score,identity_1,...), "
        "or leave out --candidates.",
    )
    missing = [column for column in CANDIDATE_COLUMNS if column not in table.columns]
    if missing:
        raise DatasetError(
            f"{path}: no column {_listing(repr(c) for c in missing)} (columns: {_listing(table.columns, 10)}). "
            "--candidates takes the candidates.csv an identify run wrote, with the columns "
            "image_id, top1_score and identity_1, identity_2, ..."
        )
    text = table["top1_score"].str.strip()
    scores = pd.to_numeric(text, errors="coerce")
    bad = table.index[(text != "") & scores.isna() & ~text.str.lower().isin(["nan"])]
    if len(bad):
        raise DatasetError(
            f"{path}: {len(bad)} top1_score cell(s) are not numbers: "
            + _listing([f"row {i + 2} ('{table.at[i, 'top1_score']}')" for i in bad])
            + ". Give the candidates.csv as the identify run wrote it (an empty cell is allowed)."
        )
    _check_rows(
        table["image_id"], queries, str(path), lambda index: f"row {index + 2}", CANDIDATES_ADVICE, every_query=True
    )
    return table.assign(top1_score=scores.astype(float))


# What evaluate reads of a candidates table: the ranking (identity_1, ...) and the top-1 score.
CANDIDATE_COLUMNS = ("image_id", "top1_score", "identity_1")


def _check_rows(
    image_ids: pd.Series,
    queries: Sequence | None,
    label: str,
    where,
    advice: str = SUBMISSION_ADVICE,
    every_query: bool = False,
) -> None:
    """DatasetError naming the rows that repeat an image id, or (with ``queries``) name no query,
    and (with ``every_query``) the queries that have no row; ``advice`` says what to do."""
    image_ids = image_ids.reset_index(drop=True)
    problems = []
    repeated = image_ids[image_ids.duplicated(keep=False)]
    if len(repeated):
        groups = repeated.groupby(repeated).groups
        problems.append(
            f"{len(groups)} image id(s) appear more than once (one row per query): "
            + "; ".join(
                f"'{image_id}' at {_listing([where(i) for i in rows])}" for image_id, rows in list(groups.items())[:20]
            )
        )
    if queries is not None:
        extra = image_ids.index[~image_ids.isin(set(queries))]
        if len(extra):
            problems.append(
                f"{len(extra)} row(s) name images that are not queries of this dataset: "
                + _listing([f"{where(i)} ('{image_ids[i]}')" for i in extra])
            )
        if every_query:
            present = set(image_ids)
            absent = [image_id for image_id in queries if image_id not in present]
            if absent:
                problems.append(
                    f"{len(absent)} quer(ies) have no row: image_id " + _listing([f"'{i}'" for i in absent])
                )
    if problems:
        raise DatasetError(f"{label}: " + "\n".join(problems) + "\n" + advice)


__all__ = [
    "baks",
    "baus",
    "geometric_score",
    "evaluate",
    "load_candidates",
    "load_submission",
    "pairwise_precision_recall",
    "query_clusters",
    "QUERY",
]
