"""The competition metric against the reference implementation, and the evaluation table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from wildreid.data.dataset import Dataset
from wildreid.evaluate.metrics import baks, baus, evaluate, geometric_score


def test_baks_baus_equal_reference_implementation():
    # The reference (AGPL-3.0) is a test-only extra; wildreid itself never imports it.
    from wildlife_datasets import metrics as reference

    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(300):
        n_identities = int(rng.integers(2, 30))
        identities = [f"id{i}" for i in range(n_identities)]
        new = list(rng.choice(identities, size=int(rng.integers(1, n_identities)), replace=False))
        n = int(rng.integers(1, 200))
        y_true = rng.choice(identities, size=n).tolist()
        y_pred = rng.choice(identities + ["new_individual"] * 3, size=n).tolist()
        ours_known = baks(y_true, y_pred, new)
        ours_new = baus(y_true, y_pred, new, "new_individual")
        theirs_known = reference.BAKS(np.array(y_true), np.array(y_pred), np.array(new))
        theirs_new = reference.BAUS(np.array(y_true), np.array(y_pred), np.array(new), "new_individual")
        for ours, theirs in ((ours_known, theirs_known), (ours_new, theirs_new)):
            if isinstance(theirs, float) and math.isnan(theirs):
                assert math.isnan(ours)
            else:
                assert abs(ours - theirs) <= 1e-12, (trial, ours, theirs)
                checked += 1
    assert checked > 400


def test_geometric_score_nan_is_zero():
    assert geometric_score(0.25, 1.0) == 0.5
    assert geometric_score(float("nan"), 1.0) == 0.0


def _toy_dataset() -> Dataset:
    rows = [
        # dataset A: database a1, a2; queries: a1 x2 (known), x (new) x1
        ("d1", "A_a1", "database", "A"),
        ("d2", "A_a2", "database", "A"),
        ("q1", "A_a1", "query", "A"),
        ("q2", "A_a1", "query", "A"),
        ("q3", "A_x", "query", "A"),
        # dataset B: database b1; queries b1 (known) only -> BAUS NaN -> score 0
        ("d3", "B_b1", "database", "B"),
        ("q4", "B_b1", "query", "B"),
    ]
    table = pd.DataFrame(rows, columns=["image_id", "identity", "split", "dataset"])
    table["path"] = ""
    return Dataset(table, "toy")


def test_evaluate_per_dataset_and_mean():
    predictions = pd.DataFrame(
        {"image_id": ["q1", "q2", "q3", "q4"], "identity": ["A_a1", "new_individual", "new_individual", "B_b1"]}
    )
    figures = evaluate(_toy_dataset(), predictions)
    a, b = figures["per_dataset"]["A"], figures["per_dataset"]["B"]
    assert a["baks"] == 0.5 and a["baus"] == 1.0 and a["score"] == pytest.approx(math.sqrt(0.5))
    assert b["baks"] == 1.0 and math.isnan(b["baus"]) and b["score"] == 0.0
    assert figures["score"] == pytest.approx(math.sqrt(0.5) / 2)
    assert a["known_queries"] == 2 and a["new_queries"] == 1


def test_evaluate_top_k_and_auc():
    predictions = pd.DataFrame(
        {"image_id": ["q1", "q2", "q3", "q4"], "identity": ["A_a1", "A_a2", "new_individual", "B_b1"]}
    )
    candidates = pd.DataFrame(
        {
            "image_id": ["q1", "q2", "q3", "q4"],
            "top1_score": [0.9, 0.8, 0.3, 0.7],
            "identity_1": ["A_a1", "A_a2", "A_a1", "B_b1"],
            "identity_2": ["A_a2", "A_a1", "A_a2", None],
        }
    )
    figures = evaluate(_toy_dataset(), predictions, candidates)["per_dataset"]["A"]
    assert figures["top1"] == 0.5 and figures["top5"] == 1.0
    assert figures["auc_new_vs_known"] == 1.0  # the new query has the lowest score


def test_evaluate_requires_every_query():
    predictions = pd.DataFrame({"image_id": ["q1"], "identity": ["A_a1"]})
    with pytest.raises(ValueError, match="no prediction for 3"):
        evaluate(_toy_dataset(), predictions)


def test_evaluate_refuses_repeated_and_foreign_predictions():
    predictions = pd.DataFrame({"image_id": ["q1", "q2", "q3", "q4"], "identity": ["A_a2", "A_a2", "A_a1", "B_b1"]})
    repeated = pd.concat([predictions, predictions.assign(identity=["A_a1", "A_a1", "new_individual", "B_b1"])])
    with pytest.raises(ValueError, match="4 image id.s. appear more than once"):
        evaluate(_toy_dataset(), repeated.reset_index(drop=True))
    extra = pd.concat([predictions, pd.DataFrame({"image_id": ["d1"], "identity": ["A_a1"]})])
    with pytest.raises(ValueError, match="1 row.s. name images that are not queries"):
        evaluate(_toy_dataset(), extra.reset_index(drop=True))
