"""Compare a photo with each individual's centre instead of its nearest photo? Measured on the
database (identities held out) and on the real queries, side by side, as hubness.py does.

    python benchmarks/centres.py --datasets NyalaData,LionData,Holstein2025 --cache-dir C

After the default whitening (describe/adapt_linear.py), which makes the spread of one
individual's photos about the same in every direction, an individual's centre (the unit mean of
its photos' vectors) is the natural summary of it. Printed per dataset and per way of scoring an
individual (``photo``: its best photo, as the gallery ranks with m = 1; ``centre``: its centre):
the top-1 of known queries and the AUC of the top score for known against new queries,

- ``database``: the rounds of held_out.py (5 identity folds, new and known queries, the whitening
  fitted on the other three folds); a query never meets itself or its own clip, neither as a
  photo nor inside a centre. Means over the rounds.
- ``queries``: the real queries against the whole database, the whitening fitted on it.

The ``queries`` rows read the query labels: they say whether what the database shows carries
over, and choose nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from held_out import Asked, best_of_each_individual, database_and_queries  # noqa: E402

WAYS = ("photo", "centre")


def centre_scores(asked: Asked, member: np.ndarray) -> np.ndarray:
    """(queries, individuals) cosine of each query to each individual's centre, made only of the
    gallery photos the query may be compared with (``member``: each gallery photo's individual)."""
    sums = np.zeros((member.max() + 1, asked.gallery.shape[1]))
    np.add.at(sums, member, asked.gallery)
    scores = np.empty((len(asked.queries), len(sums)))
    for row, query in enumerate(asked.queries):
        own = sums.copy()
        left_out = np.flatnonzero(~asked.allowed[row])
        np.subtract.at(own, member[left_out], asked.gallery[left_out])
        norms = np.linalg.norm(own, axis=1)
        empty = norms < 1e-9
        scores[row] = np.where(empty, -np.inf, own @ query / np.where(empty, 1.0, norms))
    return scores


def figures(asked: Asked) -> list[tuple[float, float]]:
    """(top-1 of known queries, AUC of the top score) for each way of scoring an individual."""
    names, by_photo = best_of_each_individual(asked.similarity(), asked.gallery_ids)
    member = np.searchsorted(names, asked.gallery_ids)
    found = []
    for best in (by_photo, centre_scores(asked, member)):
        right = names[best.argmax(axis=1)] == asked.query_ids
        found.append((float(right[asked.known].mean()), float(roc_auc_score(asked.known, best.max(axis=1)))))
    return found


if __name__ == "__main__":
    database_and_queries(__doc__, "way", WAYS, figures)
