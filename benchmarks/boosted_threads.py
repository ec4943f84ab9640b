"""How long the boosted fusion rule's trees take to fit with scikit-learn's default threads and
with one, on an idle machine and beside one busy process; and whether the trees are the same.

    python benchmarks/boosted_threads.py

The fusion choice (gallery/fusion_choice.py) fits the trees 20 times per dataset (2 candidates x 5
folds x 2 sets of scores) and the kept rule once per subset of scores. scikit-learn's
HistGradientBoostingClassifier runs its histograms on OpenMP threads, one per core; a thread that
waits for a core another process holds stalls the rest. Measured on synthetic pairs (three
scores, the label a noisy threshold of their sum, seeded), 3,000 and 20,000 rows (the size of a
fold's training pairs on the shared datasets), each timing the mean of REPEATS fits. "busy": one
more process spinning on a core for the whole measurement. The difference of P(same) between
the two thread settings is printed: 0 means the same trees.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

REPEATS = 5
SIZES = (3000, 20000)


def spin() -> None:
    while True:
        pass


def fitted(features: np.ndarray, labels: np.ndarray, threads: int | None):
    model = HistGradientBoostingClassifier(monotonic_cst=[1] * features.shape[1], random_state=0)
    if threads is None:
        return model.fit(features, labels)
    with threadpool_limits(threads):
        return model.fit(features, labels)


def seconds_per_fit(features: np.ndarray, labels: np.ndarray, threads: int | None) -> float:
    started = time.perf_counter()
    for _ in range(REPEATS):
        fitted(features, labels, threads)
    return (time.perf_counter() - started) / REPEATS


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'load':6} {'pairs':>6} {'default threads':>16} {'one thread':>11} {'ratio':>6}")
    data = {}
    for size in SIZES:
        features = rng.normal(size=(size, 3))
        data[size] = features, (features.sum(axis=1) + rng.normal(size=size) > 1).astype(int)
    for load in ("idle", "busy"):
        spinner = multiprocessing.Process(target=spin, daemon=True) if load == "busy" else None
        if spinner is not None:
            spinner.start()
        try:
            for size, (features, labels) in data.items():
                default, one = seconds_per_fit(features, labels, None), seconds_per_fit(features, labels, 1)
                print(f"{load:6} {size:6} {default:14.2f} s {one:9.2f} s {default / one:6.1f}", flush=True)
        finally:
            if spinner is not None:
                spinner.terminate()
    features, labels = data[SIZES[-1]]
    difference = np.abs(
        fitted(features, labels, None).predict_proba(features) - fitted(features, labels, 1).predict_proba(features)
    ).max()
    print(f"largest difference of P(same), default threads against one: {difference:.3g}")


if __name__ == "__main__":
    main()
