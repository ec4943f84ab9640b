"""The adaptation stage of a group's fit: which adapter (describe/adapters.py) its photos are
compared through, chosen on the database alone, and the cross-fitting that keeps the calibration
and the thresholds honest.

Choice. The group's identities are split into ``FOLDS`` folds (whole identities, seeded). Each
candidate level is fitted once per fold on the other folds' photos, and the fold's photos are
asked as pseudo-queries through it: the threshold simulation (thresholds.py) then hides whole
identities among them, so the figure compared, the simulated open-set score, rewards telling new
individuals from known ones among identities the adapter never saw, not memorising the ones it
did. "none" is a candidate, and the levels are ordered from the simplest (none, then the linear
ones, then the trained head: the registry's order); the simplest level within ``MARGIN`` of the
best score is kept (``simplest_near_best``), so a level wins ties and near-ties with any more
complex one: an adapter must earn its
place. A preset that names a level (``adapt="lda"``) gets it, with the same figures recorded.

Cross-fitting. An adapter fitted on all the photos has seen every pseudo-query's identity, so a
calibration or threshold fitted on its scores would be fitted on memorised individuals and be
wrong on new animals. While the group is fitted, ``DatasetPart.cross_fit`` holds each fold's view
of the group (every photo seen through the adapter fitted without that fold), and every
pseudo-query is scored through its own fold's view (``cross_fitted_pairs`` and
``cross_fitted_neighbours``). The adapter kept for real queries is fitted on everything.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from wildreid.decide.thresholds import Neighbours, choose_threshold_and_top_m
from wildreid.describe.adapters import NONE, Adapter, auto_levels, make_adapter
from wildreid.gallery.index import VectorIndex
from wildreid.gallery.shortlist import ScoredPairs
from wildreid.presets import ADAPT_USES, AUTO, Preset

if TYPE_CHECKING:
    from wildreid.gallery.part import DatasetPart

FOLDS = 5  # identity folds: each adapter is fitted on 80% of the identities
# Below these a fold's adapter learns from too few individuals (an LDA of n identities has n-1
# directions) and the validation rests on a handful of them: the group keeps its vectors as they are.
MIN_IDENTITIES = 10  # identities with at least two photos
# A level must beat "none" by this much simulated score (the simulation's own round-to-round
# spread on the shared datasets is about 0.01) to be kept.
MARGIN = 0.005
VALIDATION_POOL = 4000  # pseudo-queries of the validation at most (as part.SIMULATION_POOL)


def candidates(setting: str) -> list[str]:
    """The levels a preset's ``adapt`` setting lets the validation compare ('none' first)."""
    if setting == AUTO:
        return [NONE, *auto_levels()]
    return [NONE] if setting == NONE else [NONE, setting]


def identity_folds(identities: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each photo's fold: identities (not photos) dealt round-robin in a seeded order."""
    names = np.unique(np.asarray(identities).astype(str))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = dict(zip(names[order], np.arange(len(names)) % folds))
    return np.array([fold_of[str(identity)] for identity in identities], dtype=np.int64)


def fold_views(part: DatasetPart, level: str, folds: np.ndarray, seed: int) -> list[tuple[np.ndarray, DatasetPart]]:
    """Per fold, (its photos as a mask, the group seen through ``level`` fitted without them)."""
    raw = part.index.vectors(np.arange(part.size))
    views = []
    for fold in range(int(folds.max()) + 1):
        inside = folds == fold
        adapter = None
        if level != NONE:
            vectors, labels = training_set(part, raw, ~inside)
            adapter = make_adapter(level).fit(vectors, labels, seed=seed)
        views.append((inside, view_through(part, adapter, raw)))
    return views


def training_set(part: DatasetPart, raw: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, labels) an adapter learns from: the database photos ``keep`` selects, and the
    photos reviewers' answers labelled (``part.taught``) except those of an identity whose
    database photos are held out (they would show the adapter the held-out individual)."""
    vectors, labels = raw[keep], part.identities[keep]
    taught = part.taught
    if taught is None or taught.size == 0:
        return vectors, labels
    held = set(part.identities[~keep].tolist()) - set(labels.tolist())
    allowed = np.array([label not in held for label in taught.labels], dtype=bool)
    return (
        np.concatenate([vectors, taught.vectors[allowed]]),
        np.concatenate([labels, taught.labels[allowed]]),
    )


def view_through(part: DatasetPart, adapter: Adapter | None, raw: np.ndarray) -> DatasetPart:
    """The group compared through ``adapter``: the same photos, keypoints and labels, another index."""
    view = dataclasses.replace(part, fit=None, fit_pairs=None, notes=[], cross_fit=None, adapted=None, adapter=None)
    if adapter is not None:
        view.adapter, view.adapted = adapter, VectorIndex.build(adapter.transform(raw))
    return view


def cross_fitted_pairs(views, rows: np.ndarray, preset: Preset, method, extra_methods, settings=None) -> ScoredPairs:
    """The pseudo-query pairs of ``rows``, each fold's scored through its own view; queries are
    positions in ``rows``, pairs sorted by (query, image) as one call would sort them."""
    found = []
    for inside, view in views:
        positions = np.flatnonzero(inside[rows])
        if len(positions):
            pairs = view._pseudo_query_pairs(rows[positions], preset, method, extra_methods, settings)
            found.append((positions, pairs))
    queries = np.concatenate([positions[pairs.queries] for positions, pairs in found])
    images = np.concatenate([pairs.images for _, pairs in found])
    order = np.lexsort((images, queries))
    raw = {name: np.concatenate([pairs.raw[name] for _, pairs in found])[order] for name in found[0][1].raw}
    mirrored = None
    if any(pairs.mirrored is not None for _, pairs in found):
        flags = [p.mirrored if p.mirrored is not None else np.zeros(len(p.queries), bool) for _, p in found]
        mirrored = np.concatenate(flags)[order]
    return ScoredPairs(queries[order], images[order], raw, mirrored)


def cross_fitted_neighbours(views, rows: np.ndarray, preset: Preset) -> Neighbours:
    """The pseudo-queries' nearest photos by cosine (the threshold simulation's lists), each
    fold's through its own view; in the order of ``rows``."""
    found = [view._global_neighbours(rows[inside[rows]], preset) for inside, view in views if inside[rows].any()]
    width = max(n.columns.shape[1] for n in found)
    asked = np.concatenate([n.rows for n in found])
    columns = np.concatenate([_widen(n.columns, width, -1) for n in found])
    scores = np.concatenate([_widen(n.scores, width, -np.inf) for n in found])
    order = np.argsort(asked, kind="stable")  # as the rows were asked (callers ask them sorted)
    return Neighbours(asked[order], columns[order], scores[order])


def fit_adaptation(part: DatasetPart, preset: Preset, *, seed: int = 0) -> dict | None:
    """Choose the group's adapter as the preset asks, set it (``part.use_adapter``) with the
    cross-fitting views of the chosen level (``part.cross_fit``), say what was chosen in the
    group's notes; return the choice's record (None when the preset asks for none)."""
    setting = preset.adapt
    part.use_adapter(None)
    part.cross_fit = None
    if setting == NONE:
        return None
    started = time.perf_counter()
    record: dict = {"setting": setting, "chosen": NONE, "folds": FOLDS, "validation": {}}
    if part.taught is not None and part.taught.size:
        record["taught"] = {"photos": part.taught.size, "labels": int(len(set(part.taught.labels.tolist())))}
    counts = np.unique(np.asarray(part.identities).astype(str), return_counts=True)[1]
    if int((counts >= 2).sum()) < MIN_IDENTITIES:
        record["note"] = (
            f"{part.name}: no adaptation: {int((counts >= 2).sum())} individuals have two photos or more "
            f"(fewer than {MIN_IDENTITIES}), too few to learn from and to validate on."
        )
        part.notes.append(record["note"])
        record["seconds"] = time.perf_counter() - started
        return record
    # One BLAS thread: a 1280-d eigh took 2.8 s with two threads on two busy cores, 1.0 s with
    # one (threads spinning for a core another process holds); on a free core it is under 1 s.
    with threadpool_limits(1):
        return _choose(part, preset, setting, record, started, seed)


def _choose(part: DatasetPart, preset: Preset, setting: str, record: dict, started: float, seed: int) -> dict:
    folds = identity_folds(part.identities, FOLDS, seed)
    pool = np.flatnonzero(part.askable) if part.askable is not None else np.arange(part.size)
    if len(pool) > VALIDATION_POOL:
        pool = np.sort(np.random.default_rng(seed).choice(pool, VALIDATION_POOL, replace=False))
    # A level is judged by what it makes of the cosine, whichever uses the preset adapts (with
    # "score" left out every level would tie with none, and none would win).
    judged = preset.replace(adapt_uses=ADAPT_USES)
    views_of = {}
    for level in candidates(setting):
        views_of[level] = fold_views(part, level, folds, seed)
        # Each level at its own best photos-per-identity (the preset's m, or each of "auto"'s).
        top_m, simulated, _ = choose_threshold_and_top_m(
            cross_fitted_neighbours(views_of[level], pool, judged),
            part.identities,
            preset.top_m_choices,
            near_duplicate_groups=part.near_duplicates,
            seed=seed,
        )
        record["validation"][level] = {
            "simulated_score": simulated.simulated_score,
            "simulated_baks": simulated.simulated_baks,
            "simulated_baus": simulated.simulated_baus,
            "top_m": top_m,
        }
    scores = {level: _finite(figures["simulated_score"]) for level, figures in record["validation"].items()}
    chosen = simplest_near_best(scores)
    if setting != AUTO:  # a level named by the preset is used; its validation is only reported
        chosen = setting
    record["chosen"] = chosen
    if chosen != NONE:
        raw = part.index.vectors(np.arange(part.size))
        adapter = make_adapter(chosen).fit(*training_set(part, raw, np.ones(part.size, bool)), seed=seed)
        part.use_adapter(adapter)
        part.cross_fit = views_of[chosen]
    record["seconds"] = time.perf_counter() - started
    figures = ", ".join(f"{level} {score:.3f}" for level, score in scores.items())
    taught = record.get("taught")
    also = f"; also learned from {taught['photos']} photos labelled by reviewers' answers" if taught else ""
    record["note"] = (
        f"{part.name}: adaptation {chosen} (setting {setting}; simulated open-set score over {FOLDS} "
        f"identity folds: {figures}{also}; {record['seconds']:.1f} s)."
    )
    part.notes.append(record["note"])
    return record


def simplest_near_best(scores: dict[str, float]) -> str:
    """The first of ``scores`` (ordered simplest first) within MARGIN of the best of them."""
    best = max(scores.values())
    return next(name for name, score in scores.items() if score >= best - MARGIN)


def _widen(block: np.ndarray, width: int, pad) -> np.ndarray:
    return np.pad(block, ((0, 0), (0, width - block.shape[1])), constant_values=pad)


def _finite(value) -> float:
    return float(value) if value is not None and np.isfinite(value) else -np.inf
