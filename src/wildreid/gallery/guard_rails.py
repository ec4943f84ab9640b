"""Say when a dataset's fit rests on too little to trust: few animals with several photos, or
few same-animal pairs under the calibration. On a catalogue of 3 photos per animal, `fusion`
scored 0.10 where `offline` scored 0.47, and nothing said that its calibration rested on 58
positive pairs. The warning goes wherever the fit's notes go: the console, run.json, the report,
the gallery's record and the review app.

The two floors are rules of thumb, not fitted on any dataset. The threshold simulation holds
out whole animals as pseudo-new ones and asks the rest's photos; with fewer than about ten
animals of two or more photos, a single animal moves the simulated score by several points.
The isotonic calibration estimates P(same) step by step from the same-animal pairs; with fewer
than about a hundred of them, a step near the threshold rests on a handful of pairs.
"""

from __future__ import annotations

import numpy as np

MIN_ANIMALS_WITH_PAIRS = 10
MIN_POSITIVE_PAIRS = 100
THIN = "rest on little"  # in every note of this module: how the app picks them out of the others


def thin_evidence(name: str, identities: np.ndarray, positives: int | None, calibrated: bool) -> list[str]:
    """Notes for a dataset part whose threshold or calibration rests on too little (none when
    the part holds enough). ``positives``: the calibration's same-animal pairs (None: none fitted)."""
    _, counts = np.unique(identities.astype(str), return_counts=True)
    animals = int((counts >= 2).sum())
    problems = []
    if animals < MIN_ANIMALS_WITH_PAIRS:
        problems.append(f"{animals} animal(s) with two or more photos (about {MIN_ANIMALS_WITH_PAIRS} needed)")
    if calibrated and positives is not None and positives < MIN_POSITIVE_PAIRS:
        problems.append(f"{positives} same-animal pairs under the calibration (about {MIN_POSITIVE_PAIRS} needed)")
    if not problems:
        return []
    advice = "Add photos (three or more per animal)"
    if calibrated:
        advice += ", or use --preset offline, which needs no calibration to rank"
    return [f"{name}: the threshold and scores {THIN}: {'; '.join(problems)}. {advice}."]


def thin_evidence_notes(notes: list[str], group: str) -> list[str]:
    """The notes of :func:`thin_evidence` about ``group`` (a dataset, or "all") among a run's."""
    return [note for note in notes if THIN in note and note.startswith(f"{group}:")]
