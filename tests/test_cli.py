"""The command line, end to end: identify -> submission/report -> evaluate; errors without tracebacks."""

from __future__ import annotations

import json
import shutil

import pandas as pd
from typer.testing import CliRunner

from wildreid.cli.main import app

runner = CliRunner()


def _small_nyala(shared_data, folder, per_split=30):
    table = pd.read_csv(shared_data / "NyalaData" / "metadata.csv", dtype=str)
    database = table[table["split"] == "database"].head(per_split)
    queries = table[table["split"] == "query"].head(per_split // 2)
    table = pd.concat([database, queries])
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for path in table["path"]:  # a folder of its own: paths must stay inside the dataset's folder
        shutil.copy(shared_data / "NyalaData" / path, folder / path)
    table.rename(columns={"identity": "animal"}).to_csv(folder / "metadata.csv", index=False)
    return folder / "metadata.csv"


def test_identify_then_evaluate(shared_data, tmp_path):
    csv = _small_nyala(shared_data, tmp_path / "NyalaSmall")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "identify",
            str(csv),
            "--out",
            str(out),
            "--identity-column",
            "animal",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--top-k",
            "3",
            "--preset",
            "offline",  # the fast preset: this test is about the command line, not accuracy
        ],
    )
    assert result.exit_code == 0, result.output
    assert "AnimalCLEF2025 metric" in result.output and "NyalaSmall" in result.output
    assert "15 photos: " in result.output and " known (" in result.output  # the one-line summary
    for name in ("submission.csv", "candidates.csv", "run.json", "report.html"):
        assert (out / name).is_file(), name
    candidates = pd.read_csv(out / "candidates.csv")
    assert "identity_3" in candidates.columns and "identity_4" not in candidates.columns
    record = json.loads((out / "run.json").read_text())
    assert record["preset"]["name"] == "offline" and "NyalaSmall" in record["thresholds"]

    evaluated = runner.invoke(
        app, ["evaluate", str(csv), str(out / "submission.csv"), "--json", "--identity-column", "animal"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    figures = json.loads(evaluated.stdout)
    assert set(figures) >= {"score", "baks", "baus", "per_dataset"}
    assert figures["score"] == record["evaluation"]["score"]
    assert 0.0 <= figures["per_dataset"]["NyalaSmall"]["baus"] <= 1.0


def test_metric_table_fits_80_columns_and_says_na_without_new_queries(shared_data, tmp_path):
    """Only known individuals among the queries: BAUS cannot be measured. The table says n/a and
    why (not a bare 0.0000 score), explains every figure, and fits an 80-column log whole."""
    table = pd.read_csv(shared_data / "NyalaData" / "metadata.csv", dtype=str)
    database = table[table["split"] == "database"].head(12)
    queries = database.head(4).assign(split="query", image_id=lambda t: t["image_id"] + "_again")
    folder = tmp_path / "NyalaKnownOnly"
    (folder / "images").mkdir(parents=True)
    for path in database["path"]:
        shutil.copy(shared_data / "NyalaData" / path, folder / path)
    pd.concat([database, queries]).to_csv(folder / "metadata.csv", index=False)
    submission = tmp_path / "submission.csv"
    queries[["image_id", "identity"]].to_csv(submission, index=False)

    result = runner.invoke(app, ["evaluate", str(folder / "metadata.csv"), str(submission)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.stdout
    baus_row = next(line for line in lines if line.startswith("│ BAUS"))
    assert "n/a" in baus_row and "0.0000*" in next(line for line in lines if line.startswith("│ score"))
    assert "no query of this dataset shows a new individual" in " ".join(result.stdout.split())
    assert "balanced accuracy on known individuals" in " ".join(result.stdout.split())


def test_closed_set_threshold_none(shared_data, tmp_path):
    csv = _small_nyala(shared_data, tmp_path / "data", per_split=12)
    result = runner.invoke(
        app,
        [
            "identify",
            str(csv),
            "--out",
            str(tmp_path / "out"),
            "--identity-column",
            "animal",
            "--threshold",
            "none",
            "--preset",
            "offline",
            "--no-report",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
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


def _preset_rows(output: str) -> dict[str, str]:
    return {line.split()[1]: line for line in output.splitlines() if line.startswith("│ ") and line.split()[1] != "│"}


def test_presets_table_says_download_speed_and_measured_accuracy_in_80_columns(tmp_path):
    """Each preset: whether it needs a download (the Hugging Face cache looked at, never the
    network), its speed per photo and its score on each real dataset as BENCHMARKS.md recorded
    them, or "not measured here"; and where that was measured. The whole table fits 80 columns."""
    from wildreid.evaluate.measured import MEASURED, RUNS, SOURCE

    empty_cache = runner.invoke(app, ["presets"], env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert empty_cache.exit_code == 0, empty_cache.output
    lines = empty_cache.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in empty_cache.stdout
    header = next(line for line in lines if "download" in line)
    assert all(name in header for name in ("download", "s/photo", "Lion", "Nyala", "Holstein"))
    rows = _preset_rows(empty_cache.stdout)
    assert set(rows) == {"seed", "offline", "megadescriptor", "fusion", "wildfusion"}
    for name in ("offline", "fusion"):  # measured: no download, seconds per photo, a score per dataset
        cells = rows[name].replace("│", " ").split()
        assert cells[1] == "none" and "-" in cells[2] and "not measured" not in rows[name]
        assert cells[3:] == [f"{m.score:.3f}" for m in MEASURED[name]]
    offline_speeds = [m.wall_s / photos for m, photos in zip(MEASURED["offline"], (740, 458, 3776))]
    assert f"{min(offline_speeds):.2f}-{max(offline_speeds):.2f}" in rows["offline"]
    for name in ("seed", "megadescriptor", "wildfusion"):  # MegaDescriptor weights: from the hub
        assert "not measured here" in rows[name]
    assert rows["seed"].split()[3] == "yes" and rows["wildfusion"].split()[3] == "yes*"
    said = " ".join(empty_cache.stdout.split())
    assert SOURCE in said and all(command in said and when in said for command, when in RUNS.values())
    assert said.count(RUNS["fusion"][0]) == 1  # each run said once

    # The MegaDescriptor weights already in the Hugging Face cache: no download needed.
    repo = tmp_path / "hub" / "models--BVRA--MegaDescriptor-L-384"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "pytorch_model.bin").write_bytes(b"weights")
    cached = runner.invoke(app, ["presets"], env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    rows = _preset_rows(cached.stdout)
    assert rows["seed"].split()[3] == "cached" and rows["wildfusion"].split()[3] == "cached*"
    assert rows["offline"].split()[3] == "none"


def test_demo_runs_offline_with_the_default_preset(tmp_path):
    """The README's first command: the demo with the default preset (fusion), no download."""
    result = runner.invoke(
        app,
        [
            "demo",
            "--out",
            str(tmp_path / "out"),
            "--data",
            str(tmp_path / "data"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "DemoSpots" in result.output and "mean" in result.output
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["preset"]["name"] == "fusion"
    assert record["evaluation"]["per_dataset"]["DemoSpots"]["top1"] > 0.3  # far above chance (1/16)


# --------------------------------------------------------------------------------------------
# Faults and hostile input: one message, never a traceback


def _refused(arguments: list[str], *messages: str, code: int = 2):
    result = runner.invoke(app, arguments)
    assert result.exit_code == code, result.output
    text = " ".join(result.output.split())
    for message in messages:
        assert message in text, (message, text)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return text


def test_settings_that_make_no_sense_are_refused(shared_data, tmp_path):
    csv = _small_nyala(shared_data, tmp_path / "data", per_split=4)
    base = ["identify", str(csv), "--out", str(tmp_path / "out"), "--identity-column", "animal", "--no-cache"]
    _refused(base + ["--threshold", "7"], "threshold '7': 7.0 is outside [-1, 1]")
    _refused(base + ["--threshold", "nan"], "threshold 'nan': nan is outside [-1, 1]")
    _refused(base + ["--threshold", "NyalaSmall=inf"], "is outside [-1, 1]")
    _refused(base + ["--top-k", "0"], "top-k: 0 candidates per query; give a whole number of at least 1")
    _refused(
        [
            "catalog",
            "identify",
            str(tmp_path / "data" / "images"),
            "--out",
            str(tmp_path / "out"),
            "--catalog",
            str(tmp_path / "none.sqlite"),
            "--top-k",
            "0",
        ],
        "top-k: 0",
    )
    assert not (tmp_path / "out").exists()

    (tmp_path / "header-only.csv").write_text("image_id,identity,path,split\n")
    _refused(
        ["identify", str(tmp_path / "header-only.csv"), "--out", str(tmp_path / "out")],
        "header-only.csv: the file has a header but no rows",
    )
    (tmp_path / "a-file").write_text("not a folder")
    _refused(base[:2] + ["--out", str(tmp_path / "a-file")], "a-file: this is a file, not a folder")


def test_symbolic_link_loops_are_one_message(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for arguments in (
        ["identify", str(tmp_path / "loop"), "--out", str(tmp_path / "out")],
        ["identify", str(tmp_path / "loop" / "metadata.csv"), "--out", str(tmp_path / "out")],
        ["catalog", "import", str(tmp_path / "loop"), "--catalog", str(tmp_path / "c.sqlite")],
        # was "no such folder to watch", after loading the gallery
        ["watch", str(tmp_path / "loop"), "--out", str(tmp_path / "out"), "--gallery", str(tmp_path / "none")],
    ):
        _refused(arguments, str(tmp_path / "loop"), "a symbolic link that loops")


def test_catalog_import_stays_inside_the_dataset_folder(shared_data, tmp_path):
    csv = _small_nyala(shared_data, tmp_path / "data", per_split=4)
    table = pd.read_csv(csv, dtype=str)
    (tmp_path / "private.jpg").write_bytes((tmp_path / "data" / table["path"][0]).read_bytes())
    table.loc[1, "path"] = "../private.jpg"
    table.loc[2, "path"] = "../../../../../../../../etc/passwd"
    table.to_csv(csv, index=False)
    catalog = tmp_path / "c.sqlite"
    arguments = ["catalog", "import", str(csv), "--identity-column", "animal", "--catalog", str(catalog)]
    _refused(
        arguments,
        "2 image(s) lead outside the dataset folder",
        "row 3: ../private.jpg",
        "row 4: ../../../../../../../../etc/passwd",
        "--allow-outside-paths",
    )
    assert not catalog.exists()
    table.loc[2, "path"] = table.loc[0, "path"]
    table.loc[2, "image_id"] = "copy"
    table.to_csv(csv, index=False)
    allowed = runner.invoke(app, arguments + ["--allow-outside-paths"])
    assert allowed.exit_code == 0, allowed.output


def test_evaluate_refuses_repeated_and_foreign_rows(tmp_path):
    rows = [
        ("d1", "A_a1", "database"),
        ("d2", "A_a2", "database"),
        ("q1", "A_a1", "query"),
        ("q2", "A_a2", "query"),
        ("q3", "A_x", "query"),
    ]
    pd.DataFrame(rows, columns=["image_id", "identity", "split"]).assign(path="none.jpg").to_csv(
        tmp_path / "metadata.csv", index=False
    )
    wrong = pd.DataFrame({"image_id": ["q1", "q2", "q3"], "identity": ["A_a2", "A_a1", "A_a1"]})
    wrong.to_csv(tmp_path / "wrong.csv", index=False)
    scored = runner.invoke(app, ["evaluate", str(tmp_path), str(tmp_path / "wrong.csv"), "--json"])
    assert scored.exit_code == 0 and json.loads(scored.stdout)["score"] == 0.0
    # Every query again with the right answer: it must not count (Kaggle rejects the file).
    right = pd.DataFrame({"image_id": ["q1", "q2", "q3"], "identity": ["A_a1", "A_a2", "new_individual"]})
    pd.concat([wrong, right]).to_csv(tmp_path / "repeated.csv", index=False)
    _refused(
        ["evaluate", str(tmp_path), str(tmp_path / "repeated.csv")],
        "repeated.csv: 3 image id(s) appear more than once",
        "'q1' at row 2, row 5",
    )
    pd.concat([right, pd.DataFrame({"image_id": ["d1", "zz"], "identity": ["A_a1", "A_a1"]})]).to_csv(
        tmp_path / "extra.csv", index=False
    )
    _refused(
        ["evaluate", str(tmp_path), str(tmp_path / "extra.csv")],
        "2 row(s) name images that are not queries of this dataset: row 5 ('d1'), row 6 ('zz')",
    )


def test_identify_groups_queries_and_writes_the_2026_format(shared_data, tmp_path):
    """Queries grouped with each other: groups.csv and the group columns agree, a group shares one
    answer, the AnimalCLEF2026 submission names a cluster per query, and evaluate scores it."""
    csv = _small_nyala(shared_data, tmp_path / "NyalaSmall")
    out = tmp_path / "out"
    arguments = ["identify", str(csv), "--identity-column", "animal", "--cache-dir", str(tmp_path / "cache")]
    arguments += ["--preset", "offline"]  # the fast preset; grouping works the same with fusion
    result = runner.invoke(app, [*arguments, "--out", str(out), "--format", "animalclef2026", "--no-report"])
    assert result.exit_code == 0, result.output
    submission = pd.read_csv(out / "submission.csv", dtype=str)
    assert submission.columns.tolist() == ["image_id", "cluster"]
    groups = pd.read_csv(out / "groups.csv", dtype=str, keep_default_na=False)
    candidates = pd.read_csv(out / "candidates.csv", dtype=str, keep_default_na=False)
    assert groups["image_id"].tolist() == candidates["image_id"].tolist() == submission["image_id"].tolist()
    assert (groups["group"] == candidates["group"]).all()
    for _, members in candidates[candidates["group"] != ""].groupby("group"):
        assert members["prediction"].nunique() == 1  # one group, one answer
        assert (members["group_size"].astype(int) == len(members)).all()
    new_groups = candidates[candidates["group_kind"] == "new"]
    assert (new_groups["prediction"] == "new_individual").all()
    assert new_groups["group"].str.match(r"new_individual_\d+$").all()
    alone = candidates["group"] == ""
    assert (submission.loc[alone, "cluster"] == "alone_" + submission.loc[alone, "image_id"]).all()
    record = json.loads((out / "run.json").read_text())
    assert record["submission_format"] == "animalclef2026" and record["grouping"]["NyalaSmall"]["method"] == "average"

    evaluated = runner.invoke(
        app, ["evaluate", str(csv), str(out / "submission.csv"), "--json", "--identity-column", "animal"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    figures = json.loads(evaluated.stdout)
    assert -1.0 <= figures["per_dataset"]["NyalaSmall"]["ari"] <= 1.0
    assert figures["ari"] == record["evaluation"]["ari"]  # the same clusters as the run's groups

    alone_run = runner.invoke(app, [*arguments, "--out", str(tmp_path / "alone"), "--grouping", "none", "--no-report"])
    assert alone_run.exit_code == 0, alone_run.output
    assert not (tmp_path / "alone" / "groups.csv").exists()
    bad = runner.invoke(app, [*arguments, "--out", str(tmp_path / "bad"), "--format", "animalclef2024"])
    assert bad.exit_code != 0 and "animalclef2026" in bad.output and "Traceback" not in bad.output


def test_help_texts_break_only_between_paragraphs():
    """A docstring's source line breaks must not reach --help: at 80 columns they broke sentences
    in the middle ('(and optionally' / 'an .npz file)')."""
    import typer

    def helps(command, path: str):
        yield path, command.help or ""
        if hasattr(command, "commands"):  # a group (Typer may bring its own click classes)
            for name, sub in command.commands.items():
                yield from helps(sub, f"{path} {name}")

    broken = []
    for path, text in helps(typer.main.get_command(app), "wildreid"):
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            broken += [f"{path}: {line!r}" for line in lines[1:] if not line.startswith(("- ", "* "))]
    assert not broken, broken
