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
from .fusion import GroupFusion, fuse_group
from .local import get_method
from .local.cache import local_features
from .presets import AUTO, Preset
from .search import cosine_similarity, rank_identities, search_groups
from .thresholds import ThresholdChoice, choose_threshold
from .train import TrainedOn, trained_on

UNREADABLE = "unreadable_image"
NEAR_DUPLICATE_COLUMNS = ("clip", "video", "date")
MIN_HELD_OUT_IMAGES = 10   # fewer held-out photos than this cannot calibrate anything


@dataclass
class IdentifyResult:
    dataset: Dataset
    preset: Preset
    candidates: pd.DataFrame        # one row per query, in metadata order (see _candidate_table)
    thresholds: dict                # dataset -> threshold used (float, or None = closed set)
    threshold_choices: dict         # dataset -> ThresholdChoice, where chosen automatically
    failures: pd.DataFrame          # image_id, split, path, reason
    timings: dict = field(default_factory=dict)
    fusions: dict = field(default_factory=dict)   # dataset -> GroupFusion, when local matching ran
    notes: list = field(default_factory=list)      # what a user should know about how it ran

    @property
    def predictions(self) -> pd.DataFrame:
        """The submission: image_id, identity."""
        return self.candidates[["image_id", "prediction"]].rename(columns={"prediction": "identity"})


def embed_dataset(dataset: Dataset, backbone: Backbone, *, cache_dir=None, batch_size: int | str = 32,
                  progress: bool = True, **speed) -> Extraction:
    """``speed``: extract_embeddings' speed options (precision, decode, compile, engine)."""
    return extract_embeddings(dataset.table["path"].tolist(), backbone, cache_dir=cache_dir,
                              batch_size=batch_size, progress=progress, **speed)


def identify(dataset: Dataset, preset: Preset, *, cache_dir=None, device: str | None = None,
             backbone: Backbone | None = None, progress: bool = True) -> IdentifyResult:
    timings = {}
    started = time.perf_counter()
    backbone = backbone or load_backbone(preset.backbone, preprocess=preset.preprocess,
                                         device=device or default_device())
    timings["load_backbone_s"] = time.perf_counter() - started

    started = time.perf_counter()
    extraction = embed_dataset(dataset, backbone, cache_dir=cache_dir, progress=progress,
                               **preset.extraction_options())
    timings["extract_s"] = time.perf_counter() - started
    timings["images_extracted"] = extraction.extracted
    timings["extraction"] = extraction.settings   # what ran: precision, decode, agreement, ...

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
    thresholds, choices, fusions, notes = {}, {}, {}, []
    method = get_method(preset.local, **preset.local_options) if preset.local else None
    seen_by_backbone = trained_on(backbone.name)  # the descriptor actually used
    for query_positions, database_positions, group in search_groups(queries, database, preset.same_dataset_only):
        group_database = database.iloc[database_positions]
        group_queries = queries.iloc[query_positions]
        group_vectors = vectors[database_rows[database_positions]]
        query_scores = cosine_similarity(vectors[query_rows[query_positions]], group_vectors)
        database_scores = cosine_similarity(group_vectors, group_vectors)
        database_hashes = [extraction.hashes[row] for row in database_rows[database_positions]]
        scored_rows = _calibration_rows(database_hashes, seen_by_backbone, group, notes)
        if method is not None and len(group_database):
            local_started = time.perf_counter()
            fusion = _fuse(group_queries, group_database, query_scores, database_scores, method, preset,
                           cache_dir, progress, anchor_candidates=scored_rows)
            fusions[group] = fusion
            query_scores, database_scores, scored_rows = fusion.query_scores, fusion.database_scores, fusion.anchors
            timings[f"local_{group}_s"] = time.perf_counter() - local_started
        thresholds[group], choice = _resolve_threshold(preset.threshold, group, database_scores, group_database,
                                                       scored_rows)
        if choice is not None:
            choices[group] = choice
        if len(database_positions) == 0 or len(query_positions) == 0:
            continue
        ranking = rank_identities(query_scores, group_database["identity"].to_numpy(), k)
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
    return IdentifyResult(dataset, preset, candidates, thresholds, choices, failures, timings, fusions, notes)


def _calibration_rows(hashes: list[str | None], seen: TrainedOn | None, group: str,
                      notes: list) -> np.ndarray | None:
    """The database rows to calibrate scores and simulate thresholds on (None: all of them).

    A descriptor fine-tuned on this database has memorised it: its scores between those photos are
    far higher than a new photo will get, so a calibration and a threshold fitted on them are
    optimistic (NyalaData: simulated score 0.50, real 0.33). The photos training held out for
    validation behave like new ones, so they are used when there are enough of them.
    """
    if seen is None or len(hashes) == 0:
        return None
    trained = np.array([h in seen.trained for h in hashes])
    if not trained.any():
        return None
    held_out = np.array([h in seen.held_out for h in hashes])
    if held_out.sum() >= MIN_HELD_OUT_IMAGES:
        notes.append(f"{group}: the descriptor was trained on {trained.sum()} of the {len(hashes)} database "
                     f"images; calibration and threshold use the {held_out.sum()} it held out.")
        return held_out
    notes.append(f"{group}: the descriptor was trained on {trained.sum()} of the {len(hashes)} database "
                 f"images and held out {held_out.sum()} (fewer than {MIN_HELD_OUT_IMAGES}), so calibration "
                 "and threshold are fitted on photos it has memorised and will be optimistic; train with "
                 "--val-fraction 0.15 (the default) to avoid this.")
    return None


def _fuse(queries: pd.DataFrame, database: pd.DataFrame, query_cosine, database_cosine, method, preset: Preset,
          cache_dir, progress: bool, anchor_candidates: np.ndarray | None = None) -> GroupFusion:
    """Local features of one dataset's images, then shortlist matching, calibration and fusion."""
    features = local_features(queries["path"].tolist() + database["path"].tolist(), method,
                              cache_dir=cache_dir, progress=progress)
    return fuse_group(query_cosine=query_cosine, database_cosine=database_cosine,
                      query_features=features[: len(queries)], database_features=features[len(queries):],
                      database_identities=database["identity"].to_numpy(),
                      near_duplicate_groups=near_duplicate_groups(database), method=method,
                      settings=preset.fusion, anchor_candidates=anchor_candidates)


def _resolve_threshold(setting, group: str, database_scores: np.ndarray, database: pd.DataFrame,
                       scored_rows: np.ndarray | None = None):
    """The threshold for one dataset: given, or chosen on its database (see thresholds.py)."""
    if setting is None or isinstance(setting, float | int):
        return (None if setting is None else float(setting)), None
    if isinstance(setting, dict):
        if group not in setting:
            raise ValueError(f"no threshold given for dataset '{group}' (thresholds given for "
                             f"{sorted(setting)}); add '{group}=VALUE'.")
        return float(setting[group]), None
    if setting != AUTO:
        raise ValueError(f"unknown threshold setting {setting!r}")
    choice: ThresholdChoice = choose_threshold(database_scores, database["identity"].to_numpy(),
                                               near_duplicate_groups=near_duplicate_groups(database),
                                               scored_rows=scored_rows)
    return choice.threshold, choice


def near_duplicate_groups(table: pd.DataFrame) -> np.ndarray | None:
    """Images of one clip (or video, or date) are near-duplicates: the first such column present."""
    for column in NEAR_DUPLICATE_COLUMNS:
        if column in table and table[column].notna().any():
            return table[column].to_numpy(dtype=object)
    return None


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
