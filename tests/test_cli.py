"""The command line, end to end: identify -> submission/report -> evaluate; errors without tracebacks."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from wildreid.cli import app

runner = CliRunner()


def _small_nyala(shared_data, folder, per_split=30):
    table = pd.read_csv(shared_data / "NyalaData" / "metadata.csv", dtype=str)
    database = table[table["split"] == "database"].head(per_split)
    queries = table[table["split"] == "query"].head(per_split // 2)
    table = pd.concat([database, queries])
    table["path"] = [str(shared_data / "NyalaData" / p) for p in table["path"]]
    folder.mkdir(parents=True, exist_ok=True)
    table.rename(columns={"identity": "animal"}).to_csv(folder / "metadata.csv", index=False)
    return folder / "metadata.csv"


def test_identify_then_evaluate(shared_data, tmp_path):
    csv = _small_nyala(shared_data, tmp_path / "NyalaSmall")
    out = tmp_path / "out"
    result = runner.invoke(app, ["identify", str(csv), "--out", str(out), "--identity-column", "animal",
                                 "--cache-dir", str(tmp_path / "cache"), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert "AnimalCLEF2025 metric" in result.output and "NyalaSmall" in result.output
    for name in ("submission.csv", "candidates.csv", "run.json", "report.html"):
        assert (out / name).is_file(), name
    candidates = pd.read_csv(out / "candidates.csv")
    assert "identity_3" in candidates.columns and "identity_4" not in candidates.columns
    record = json.loads((out / "run.json").read_text())
    assert record["preset"]["name"] == "offline" and "NyalaSmall" in record["thresholds"]

    evaluated = runner.invoke(app, ["evaluate", str(csv), str(out / "submission.csv"), "--json",
                                    "--identity-column", "animal"])
    assert evaluated.exit_code == 0, evaluated.output
    figures = json.loads(evaluated.stdout)
    assert set(figures) >= {"score", "baks", "baus", "per_dataset"}
    assert figures["score"] == record["evaluation"]["score"]
    assert 0.0 <= figures["per_dataset"]["NyalaSmall"]["baus"] <= 1.0


def test_closed_set_threshold_none(shared_data, tmp_path):
    csv = _small_nyala(shared_data, tmp_path / "data", per_split=12)
    result = runner.invoke(app, ["identify", str(csv), "--out", str(tmp_path / "out"), "--identity-column",
                                 "animal", "--threshold", "none", "--no-report",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    submission = pd.read_csv(tmp_path / "out" / "submission.csv")
    assert (submission["identity"] != "new_individual").all()
    assert not (tmp_path / "out" / "report.html").exists()


def test_bad_dataset_is_one_clear_message(shared_data, tmp_path):
    csv = _small_nyala(shared_data, tmp_path / "data", per_split=6)  # identity column is 'animal'
    result = runner.invoke(app, ["identify", str(csv), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "missing column(s) 'identity'" in result.output and "--identity-column" in result.output
    assert "Traceback" not in result.output


def test_presets_listed_and_printable():
    listed = runner.invoke(app, ["presets"])
    assert listed.exit_code == 0 and "seed" in listed.output and "offline" in listed.output
    shown = runner.invoke(app, ["presets", "seed"])
    assert json.loads(shown.stdout)["threshold"] == 0.6
    unknown = runner.invoke(app, ["presets", "nope"])
    assert unknown.exit_code == 2 and "unknown preset" in unknown.output


def test_demo_runs_offline(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data"),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "DemoSpots" in result.output and "mean" in result.output
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["evaluation"]["per_dataset"]["DemoSpots"]["top1"] > 0.3  # far above chance (1/16)
