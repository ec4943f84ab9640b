"""The open-set decision: the best identity, or `new_individual` when its score is too low."""

from __future__ import annotations

import numpy as np

from wildreid.data.dataset import NEW_INDIVIDUAL


def decide(top_identities: np.ndarray, top_scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """``new_individual`` where the score is below ``threshold`` (or missing); None = closed set."""
    top_identities = np.asarray(top_identities, dtype=object)
    top_scores = np.asarray(top_scores, dtype=float)
    answer = top_identities.copy()
    no_candidate = np.array([identity is None for identity in top_identities], dtype=bool) | np.isnan(top_scores)
    if threshold is not None:
        answer[top_scores < threshold] = NEW_INDIVIDUAL
    answer[no_candidate] = NEW_INDIVIDUAL
    return answer
