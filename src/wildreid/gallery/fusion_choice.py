"""Which fusion rule a group's calibration combines its scores with, chosen on the database alone.

The calibration's pairs are its pseudo-queries' shortlists (part.py). Every candidate rule is
judged out of fold: the pseudo-queries' identities are split into the adaptation's identity folds
(adaptation.identity_folds, same seed, so with an adapter the folds coincide), each fold's pairs
are fused by a calibration (maps and rule) fitted only on pairs whose two photos both belong to the
other folds, and the threshold simulation (thresholds.py) scores those out-of-fold P(same) as it
scores a threshold: hiding whole identities, so the figure rewards telling new individuals from
known ones among identities the rule never saw. ``mean`` (WildFusion's rule) is the first
candidate and wins near-ties (adaptation.simplest_near_best): a learned rule must earn its place.

The backbone's own cosine (``backbone_cosine``, where the group is adapted and the preset names
it) must earn its place too: with ``auto`` each rule is judged without it first, then with it,
and the calibration keeps only the scores of the candidate chosen. A preset that names a rule
gets it with every score it names.

A learned rule that is kept answers real queries with its fit on all the pairs, but the group's
threshold, top-m and grouping link threshold are chosen on its out-of-fold P(same), so they are not
fitted on pairs the rule memorised. With ``mean`` the fused scores are those of today's fit (its
maps fitted on all pairs), so a gallery that keeps the mean answers exactly as before.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from wildreid.decide.thresholds import Neighbours, choose_threshold_and_top_m
from wildreid.gallery.adaptation import FOLDS, MIN_IDENTITIES, identity_folds, simplest_near_best
from wildreid.gallery.calibration import DEFAULT_FUSION, FUSION_RULES, Calibration
from wildreid.gallery.shortlist import ScoredPairs
from wildreid.local.fusion_settings import BACKBONE_COSINE
from wildreid.presets import AUTO


def between_queries(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The scores that mean the same between two queries as between a query and the database:
    all but LNBNN, whose votes are normalised by the keypoints of the set searched (the
    database), so the same pair scores higher among a few queries than against a large database."""
    return {name: values for name, values in raw.items() if name != "lnbnn"}


def rule_candidates(setting: str) -> list[str]:
    """The rules a preset's ``fusion_rule`` lets the validation compare (the mean first)."""
    if setting == AUTO:
        return [DEFAULT_FUSION, *(name for name in FUSION_RULES.names() if name != DEFAULT_FUSION)]
    FUSION_RULES.get(setting)  # an unknown name fails here, with the known ones listed
    return [DEFAULT_FUSION] if setting == DEFAULT_FUSION else [DEFAULT_FUSION, setting]


def score_sets(raw: dict[str, np.ndarray]) -> list[tuple[str, ...]]:
    """The sets of scores a rule is judged with: the pairs' own, without the backbone's cosine
    first where they have it (a second opinion on the same photo must earn its place)."""
    names = tuple(raw)
    if BACKBONE_COSINE not in names:
        return [names]
    return [tuple(name for name in names if name != BACKBONE_COSINE), names]


def label_of(rule: str, names: tuple[str, ...]) -> str:
    """A candidate's name in the record: the rule, and '+backbone_cosine' where it fuses that."""
    return f"{rule}+{BACKBONE_COSINE}" if BACKBONE_COSINE in names else rule


def only(pairs: ScoredPairs, names: tuple[str, ...]) -> ScoredPairs:
    return dataclasses.replace(pairs, raw={name: pairs.raw[name] for name in names})


def out_of_fold(
    pairs: ScoredPairs, rows: np.ndarray, same: np.ndarray, folds: np.ndarray, rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """(P(same), P(same) between queries) of every pair, each fold's from a calibration fitted on
    the pairs of the other folds' identities only. ``folds``: the fold of each database photo."""
    query_fold, image_fold = folds[rows[pairs.queries]], folds[pairs.images]
    fused, between = np.zeros(len(same)), np.zeros(len(same))
    # A fold's learned rule fuses these two sets of scores only: fitting it for no other subset
    # keeps judging a boosted rule from costing minutes (the kept rule is fitted for every subset).
    asked = [list(pairs.raw), list(between_queries(pairs.raw))]
    for fold in np.unique(query_fold):
        test = query_fold == fold
        train = (query_fold != fold) & (image_fold != fold)
        mirrored = pairs.mirrored
        calibration = Calibration.fit(
            {name: values[train] for name, values in pairs.raw.items()},
            same[train],
            None if mirrored is None else mirrored[train],
            fusion=rule,
            asked=asked,
        )
        held = {name: values[test] for name, values in pairs.raw.items()}
        flags = None if mirrored is None else mirrored[test]
        fused[test] = calibration.fuse(held, flags)
        between[test] = calibration.fuse(between_queries(held), flags)
    return fused, between


def fit_fusion(
    pairs: ScoredPairs,
    rows: np.ndarray,
    same: np.ndarray,
    identities: np.ndarray,
    near_duplicates: np.ndarray | None,
    *,
    setting: str,
    top_m_choices: tuple[int, ...],
    seed: int,
    name: str,
):
    """(calibration, P(same) of each pair, P(same) of each pair between queries, the choice's
    record or None) for the pseudo-query pairs of ``rows``, with the rule ``setting`` asks for."""
    rule_candidates(setting)  # an unknown rule fails before any work
    counts = np.unique(np.asarray(identities[rows]).astype(str), return_counts=True)[1]
    learnable = int((counts >= 2).sum())
    if setting == DEFAULT_FUSION or learnable < MIN_IDENTITIES:
        record: dict | None = None
        if setting != DEFAULT_FUSION:  # today's fit, with the reason; nothing judged, so nothing optional
            pairs = only(pairs, score_sets(pairs.raw)[0])
            record = {
                "setting": setting,
                "chosen": DEFAULT_FUSION,
                "scores": list(pairs.raw),
                "note": f"{name}: fusion rule mean: {learnable} individuals have two pseudo-queries or more "
                f"(fewer than {MIN_IDENTITIES}), too few to learn a rule from and to validate it on.",
            }
        calibration = Calibration.fit(pairs.raw, same, pairs.mirrored)
        return (calibration, *_fused(calibration, pairs), record)
    started = time.perf_counter()
    folds = identity_folds(identities, FOLDS, seed)
    asked = np.zeros(len(identities), dtype=bool)
    asked[rows] = True
    held_out, figures, candidates = {}, {}, {}
    for rule in rule_candidates(setting):
        for names in score_sets(pairs.raw):
            label = label_of(rule, names)
            candidates[label] = (rule, names)
            held_out[label] = out_of_fold(only(pairs, names), rows, same, folds, rule)
            neighbours = Neighbours.from_pairs(rows[pairs.queries], pairs.images, held_out[label][0], asked)
            # Each rule at its own best photos-per-identity, as the fit then chooses m for it.
            top_m, choice, _ = choose_threshold_and_top_m(
                neighbours, identities, top_m_choices, near_duplicate_groups=near_duplicates, seed=seed
            )
            figures[label] = {
                "simulated_score": _finite(choice.simulated_score),
                "simulated_baks": _finite(choice.simulated_baks),
                "simulated_baus": _finite(choice.simulated_baus),
                "top_m": top_m,
            }
    # a rule whose simulation gave no score (None) ranks last; 0.0 is a score like any other
    scores = {
        rule: -np.inf if found["simulated_score"] is None else found["simulated_score"]
        for rule, found in figures.items()
    }
    label = simplest_near_best(scores)  # the mean first: a learned rule must beat it by MARGIN
    if setting != AUTO:  # a rule named by the preset is used, with all its scores; the validation is only reported
        label = label_of(setting, tuple(pairs.raw))
    chosen, names = candidates[label]
    kept = only(pairs, names)
    calibration = Calibration.fit(kept.raw, same, kept.mirrored, fusion=chosen)
    fused, between = _fused(calibration, kept) if chosen == DEFAULT_FUSION else held_out[label]
    seconds = time.perf_counter() - started
    shown = ", ".join(f"{rule} {score:.3f}" for rule, score in scores.items())
    record = {
        "setting": setting,
        "chosen": chosen,
        "scores": list(names),
        "folds": FOLDS,
        "validation": figures,
        "seconds": seconds,
        "note": (
            f"{name}: fusion rule {label} (setting {setting}; simulated open-set score of out-of-fold "
            f"P(same) over {FOLDS} identity folds: {shown}; {seconds:.1f} s)."
        ),
    }
    return calibration, fused, between, record


def _fused(calibration: Calibration, pairs: ScoredPairs) -> tuple[np.ndarray, np.ndarray]:
    """(P(same), P(same) between queries) of the pairs by a calibration fitted on them all."""
    return calibration.fuse(pairs.raw, pairs.mirrored), calibration.fuse(between_queries(pairs.raw), pairs.mirrored)


def _finite(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
