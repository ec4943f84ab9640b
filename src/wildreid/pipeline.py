"""The identification job as stages: descriptors -> ranking -> threshold -> decision.

``identify`` returns plain data (tables and small dataclasses); ``outputs.write_run`` turns it
into files. The CLI, the benchmarks and any later front end call these same functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .backbones import Backbone, load_backbone
from .data import DATABASE, NEW_INDIVIDUAL, QUERY, Dataset
from .decide import decide
from .extract import Extraction, default_device, extract_embeddings
from .presets import AUTO, Preset
from .search import cosine_similarity, rank_identities, search_groups
from .thresholds import ThresholdChoice, choose_threshold

UNREADABLE = "unreadable_image"


@dataclass
class IdentifyResult:
    dataset: Dataset
    preset: Preset
    candidates: pd.DataFrame        # one row per query, in metadata order (see _candidate_table)
    thresholds: dict                # dataset -> threshold used (float, or None = closed set)
    threshold_choices: dict         # dataset -> ThresholdChoice, where chosen automatically
    failures: pd.DataFrame          # image_id, split, path, reason
    timings: dict = field(default_factory=dict)

    @property
    def predictions(self) -> pd.DataFrame:
        """The submission: image_id, identity."""
        return self.candidates[["image_id", "prediction"]].rename(columns={"prediction": "identity"})


def embed_dataset(dataset: Dataset, backbone: Backbone, *, cache_dir=None, batch_size: int = 32,
                  progress: bool = True) -> Extraction:
    return extract_embeddings(dataset.table["path"].tolist(), backbone, cache_dir=cache_dir,
                              batch_size=batch_size, progress=progress)


def identify(dataset: Dataset, preset: Preset, *, cache_dir=None, device: str | None = None,
             backbone: Backbone | None = None, progress: bool = True) -> IdentifyResult:
    timings = {}
    started = time.perf_counter()
    backbone = backbone or load_backbone(preset.backbone, preprocess=preset.preprocess,
                                         device=device or default_device())
    timings["load_backbone_s"] = time.perf_counter() - started

    started = time.perf_counter()
    extraction = embed_dataset(dataset, backbone, cache_dir=cache_dir, batch_size=preset.batch_size,
                               progress=progress)
    timings["extract_s"] = time.perf_counter() - started
    timings["images_extracted"] = extraction.extracted

    started = time.perf_counter()
    table = dataset.table
    usable = extraction.ok
    database_rows = np.flatnonzero((table["split"] == DATABASE).to_numpy() & usable)
    query_rows = np.flatnonzero((table["split"] == QUERY).to_numpy())
    database, queries = table.iloc[database_rows], table.iloc[query_rows]
    vectors = extraction.embeddings

    k = preset.top_k
    identities = np.full((len(query_rows), k), None, dtype=object)
    scores = np.full((len(query_rows), k), np.nan)
    matches = np.full((len(query_rows), k), None, dtype=object)
    thresholds, choices = {}, {}
    for query_positions, database_positions, group in search_groups(queries, database, preset.same_dataset_only):
        group_database = database.iloc[database_positions]
        group_vectors = vectors[database_rows[database_positions]]
        thresholds[group], choice = _resolve_threshold(preset.threshold, group, group_vectors, group_database)
        if choice is not None:
            choices[group] = choice
        if len(database_positions) == 0 or len(query_positions) == 0:
            continue
        similarity = cosine_similarity(vectors[query_rows[query_positions]], group_vectors)
        ranking = rank_identities(similarity, group_database["identity"].to_numpy(), k)
        identities[query_positions] = ranking.identities
        scores[query_positions] = ranking.scores
        image_ids = group_database["image_id"].to_numpy(dtype=object)
        matches[query_positions] = np.where(ranking.best_images >= 0, image_ids[ranking.best_images], None)

    unreadable = np.array([row in extraction.failures for row in query_rows], dtype=bool)
    group_of_query = queries["dataset"].to_numpy() if preset.same_dataset_only else np.full(len(queries), "all")
    prediction = np.empty(len(query_rows), dtype=object)
    for group, threshold in thresholds.items():
        mask = group_of_query == group
        prediction[mask] = decide(identities[mask, 0], scores[mask, 0], threshold)
    prediction[unreadable] = NEW_INDIVIDUAL
    identities[unreadable], scores[unreadable], matches[unreadable] = None, np.nan, None
    timings["match_s"] = time.perf_counter() - started

    candidates = _candidate_table(queries, prediction, identities, scores, matches,
                                  [thresholds[g] for g in group_of_query],
                                  [extraction.failures.get(row) for row in query_rows])
    failures = pd.DataFrame(
        [(table["image_id"][row], table["split"][row], table["path"][row], reason)
         for row, reason in sorted(extraction.failures.items())],
        columns=["image_id", "split", "path", "reason"])
    return IdentifyResult(dataset, preset, candidates, thresholds, choices, failures, timings)


def _resolve_threshold(setting, group: str, database_vectors: np.ndarray, database: pd.DataFrame):
    if setting is None or isinstance(setting, float | int):
        return (None if setting is None else float(setting)), None
    if isinstance(setting, dict):
        if group not in setting:
            raise ValueError(f"no threshold given for dataset '{group}' (thresholds given for "
                             f"{sorted(setting)}); add '{group}=VALUE'.")
        return float(setting[group]), None
    if setting != AUTO:
        raise ValueError(f"unknown threshold setting {setting!r}")
    similarity = cosine_similarity(database_vectors, database_vectors)
    near_duplicates = database["date"].to_numpy(dtype=object) if "date" in database else None
    choice: ThresholdChoice = choose_threshold(similarity, database["identity"].to_numpy(),
                                               near_duplicate_groups=near_duplicates)
    return choice.threshold, choice


def _candidate_table(queries, prediction, identities, scores, matches, thresholds, failures) -> pd.DataFrame:
    table = pd.DataFrame({
        "image_id": queries["image_id"].to_numpy(),
        "dataset": queries["dataset"].to_numpy(),
        "prediction": prediction,
        "top1_score": scores[:, 0],
        "threshold": thresholds,
        "flags": [UNREADABLE if reason else "" for reason in failures],
        "error": [reason or "" for reason in failures],
    })
    for rank in range(identities.shape[1]):
        table[f"identity_{rank + 1}"] = identities[:, rank]
        table[f"score_{rank + 1}"] = scores[:, rank]
        table[f"match_{rank + 1}"] = matches[:, rank]
    return table
