"""The competition metric against the reference implementation, and the evaluation table."""

from __future__ import annotations

import json
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


def _toy_folder(folder) -> None:
    rows = [("d1", "A_a1", "database"), ("d2", "A_a2", "database")]
    rows += [("q1", "A_a1", "query"), ("q2", "A_a2", "query"), ("q3", "A_x", "query")]
    table = pd.DataFrame(rows, columns=["image_id", "identity", "split"]).assign(path="none.jpg")
    table.to_csv(folder / "metadata.csv", index=False)
    pd.DataFrame({"image_id": ["q1", "q2", "q3"], "identity": ["A_a1", "A_a2", "new_individual"]}).to_csv(
        folder / "submission.csv", index=False
    )


def _evaluate_cli(folder, *arguments: str):
    from typer.testing import CliRunner

    from wildreid.cli.main import app

    result = CliRunner().invoke(app, ["evaluate", str(folder), str(folder / "submission.csv"), *arguments])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, " ".join(result.output.split())


def test_evaluate_refuses_candidates_that_do_not_match_the_queries(tmp_path):
    """A repeated candidate row counted its query twice (queries 17 -> 20), a row for a database
    image was scored as a query, a query without a row vanished from top-1; now each is refused
    with the file, the rows and what to do."""
    _toy_folder(tmp_path)
    good = pd.DataFrame(
        {
            "image_id": ["q1", "q2", "q3"],
            "top1_score": ["0.9", "0.8", ""],  # an empty score (an unreadable query) is allowed
            "identity_1": ["A_a1", "A_a1", "A_a2"],
            "identity_2": ["A_a2", "A_a2", "A_a1"],
        }
    )
    path = tmp_path / "candidates.csv"
    good.to_csv(path, index=False)
    code, text = _evaluate_cli(tmp_path, "--json", "--candidates", str(path))
    assert code == 0, text
    (figures,) = json.loads(text)["per_dataset"].values()
    assert figures["queries"] == 3 and figures["top1"] == 0.5

    def refused(table: pd.DataFrame, *messages: str) -> None:
        table.to_csv(path, index=False)
        code, text = _evaluate_cli(tmp_path, "--candidates", str(path))
        assert code == 2, text
        for message in (str(path.name), *messages):
            assert message in text, (message, text)

    advice = "Give the candidates.csv written by the same run as the submission"
    refused(pd.concat([good, good.iloc[[0]]]), "1 image id(s) appear more than once", "'q1' at row 2, row 5", advice)
    refused(pd.concat([good, good.iloc[[0]].assign(image_id="d1")]), "not queries", "row 5 ('d1')", advice)
    refused(good.iloc[[0, 1]], "1 quer(ies) have no row: image_id 'q3'", advice)
    refused(good.drop(columns=["top1_score"]), "no column 'top1_score'", "identity_1")
    refused(good.assign(top1_score=["0.9", "banana", ""]), "1 top1_score cell(s) are not numbers: row 3 ('banana')")
    path.write_text("")
    code, text = _evaluate_cli(tmp_path, "--candidates", str(path))
    assert code == 2 and "candidates.csv: the candidates file is empty" in text and "--candidates" in text, text


def test_evaluate_refuses_candidate_tables_that_do_not_match_the_queries():
    predictions = pd.DataFrame({"image_id": ["q1", "q2", "q3", "q4"], "identity": ["A_a1"] * 4})
    candidates = pd.DataFrame({"image_id": ["q1", "q2", "q3", "q4", "q4"], "top1_score": [0.5] * 5})
    with pytest.raises(ValueError, match="'q4' at row 4, row 5"):
        evaluate(_toy_dataset(), predictions, candidates.assign(identity_1="A_a1"))
    with pytest.raises(ValueError, match="1 quer.ies. have no row: image_id 'q4'"):
        evaluate(_toy_dataset(), predictions, candidates.head(3).assign(identity_1="A_a1"))


def test_empty_cluster_cells_are_each_alone(tmp_path):
    """A 2026 submission whose cluster cell is empty puts that query in a cluster of its own, as
    the module's docstring says; the empty cells were scored as one shared cluster.

    Truth: {q1, q2} A, {q3, q4} B, {q5} C. Submission: q1, q2 "c1"; q3, q4, q5 empty.
    Each empty cell alone: clusters {q1, q2} {q3} {q4} {q5}. Of the 10 pairs:
      index = sum C(n_ij, 2) = C(2, 2) = 1; rows: C(2,2) + C(2,2) = 2; columns: C(2,2) = 1;
      expected = 2 * 1 / 10 = 1/5; max = (2 + 1) / 2 = 3/2;
      ARI = (1 - 1/5) / (3/2 - 1/5) = (4/5) / (13/10) = 8/13.
    One shared empty cluster {q3, q4, q5} instead: index 2, columns 1 + 3 = 4, expected 8/10,
      max 3, ARI = (2 - 4/5) / (3 - 4/5) = 6/11 (the old, wrong figure).
    """
    rows = [("d1", "A", "database"), ("q1", "A", "query"), ("q2", "A", "query")]
    rows += [("q3", "B", "query"), ("q4", "B", "query"), ("q5", "C", "query")]
    table = pd.DataFrame(rows, columns=["image_id", "identity", "split"]).assign(path="none.jpg")
    table.to_csv(tmp_path / "metadata.csv", index=False)
    (tmp_path / "submission.csv").write_text("image_id,cluster\nq1,c1\nq2,c1\nq3,\nq4,\nq5, \n")
    code, text = _evaluate_cli(tmp_path, "--json")
    assert code == 0, text
    assert json.loads(text)["ari"] == pytest.approx(8 / 13, abs=1e-12)
