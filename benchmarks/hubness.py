"""Does correcting the cosine for hubness help? Measured on the database (identities held out) and
on the real queries, side by side, so that a method the database validation would keep can be seen
not to transfer.

    python benchmarks/hubness.py --datasets NyalaData,LionData,Holstein2025 --cache-dir C

A "hub" is a database photo that sits near very many others (a busy background, a common pose):
in high dimensions it becomes the nearest neighbour of queries it does not match. The usual
correction (CSLS, Conneau et al. 2018; "localized centering", Hara et al. 2015) subtracts each
database photo's crowd, r(d) = the mean cosine of d to its k nearest other database photos:

    score(q, d) = cos(q, d) - a * r(d)        k = 10 (CSLS's), a in {0, 0.5, 1}

No label enters r(d). Printed per dataset and ``a``: the top-1 of known queries (best individual
by its best photo) and the AUC of the top score for known against new queries, after the default
whitening (describe/adapt_linear.py),

- ``database``: the rounds of held_out.py (5 identity folds, new and known queries, the
  whitening fitted on the other three folds), a query never meeting its own clip either (where
  the dataset has a ``clip`` column, as the gallery's own simulation excludes them); r(d) over
  the photos searched. Means over the rounds.
- ``queries``: the real queries against the whole database, the whitening fitted on it.
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

CROWD = 10
WEIGHTS = (0.0, 0.5, 1.0)


def crowd(database: np.ndarray) -> np.ndarray:
    """Each database photo's mean cosine to its CROWD nearest other database photos."""
    similarity = database @ database.T
    np.fill_diagonal(similarity, -np.inf)
    return -np.sort(-similarity, axis=1)[:, :CROWD].mean(axis=1)


def figures(asked: Asked) -> list[tuple[float, float]]:
    """(top-1 of known queries, AUC of the top score) for each weight."""
    similarity, crowds, found = asked.similarity(), crowd(asked.gallery), []
    for weight in WEIGHTS:
        names, best = best_of_each_individual(similarity - weight * crowds[None, :], asked.gallery_ids)
        right = names[best.argmax(axis=1)] == asked.query_ids
        found.append((float(right[asked.known].mean()), float(roc_auc_score(asked.known, best.max(axis=1)))))
    return found


if __name__ == "__main__":
    database_and_queries(__doc__, "a", WEIGHTS, figures)
