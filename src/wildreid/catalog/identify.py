"""Identify query photos against a catalogue, through the one pipeline (``pipeline.identify``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..backbones import Backbone, load_backbone
from ..extract import default_device
from ..pipeline import IdentifyResult, identify
from ..presets import Preset
from .dataset import catalog_image_id, catalog_to_dataset
from .descriptors import prepare_descriptors
from .store import Catalog


def default_cache_dir(catalog_path: str | Path) -> Path:
    """The catalogue's own cache (descriptors, pictures), beside it: derived data, safe to delete."""
    catalog_path = Path(catalog_path)
    return catalog_path.with_name(catalog_path.name + ".cache")


def identify_with_catalog(catalog: Catalog, query_paths: Sequence[str | Path], preset: Preset, *,
                          query_ids: Sequence[str] | None = None, dataset: str | None = None,
                          backbone: Backbone | None = None, cache_dir: str | Path | None = None,
                          device: str | None = None,
                          progress: Callable[[str, int, int], None] | None = None) -> IdentifyResult:
    """Rank the catalogue's individuals for each query photo. ``progress(stage, done, total)``."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(catalog.path)
    backbone = backbone or load_backbone(preset.backbone, preprocess=preset.preprocess,
                                         device=device or default_device())
    report = (lambda done, total: progress("describing catalogue photos", done, total)) if progress else None
    prepare_descriptors(catalog, backbone, cache_dir, progress=report)
    dataset_ = catalog_to_dataset(catalog, query_paths, query_ids=query_ids, dataset=dataset)
    if progress:
        progress("identifying", 0, len(query_paths))
    result = identify(dataset_, preset, cache_dir=cache_dir, backbone=backbone, progress=False)
    if progress:
        progress("identifying", len(query_paths), len(query_paths))
    return result


def candidates_of(result: IdentifyResult, catalog: Catalog) -> list[dict]:
    """Per query (in order): the prediction and its ranked candidates as plain JSON-able data,
    each candidate with its best-matching catalogue photo."""
    answers = []
    for _, row in result.candidates.iterrows():
        candidates = []
        rank = 1
        while f"identity_{rank}" in row.index:
            identity, score, match = row[f"identity_{rank}"], row[f"score_{rank}"], row[f"match_{rank}"]
            if identity is not None and score == score:  # NaN where fewer identities exist
                image_id = catalog_image_id(match)
                image = catalog.image(image_id) if image_id is not None else None
                candidates.append({"rank": rank, "individual_id": identity, "score": float(score),
                                   "image_id": image["id"] if image else None,
                                   "sha256": image["sha256"] if image else None})
            rank += 1
        threshold = row["threshold"]
        answers.append({"image_id": row["image_id"], "prediction": row["prediction"],
                        "threshold": None if threshold is None or threshold != threshold else float(threshold),
                        "flags": row["flags"], "error": row["error"], "preset": result.preset.name,
                        "candidates": candidates})
    return answers
