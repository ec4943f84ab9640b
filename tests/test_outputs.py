"""The outputs of a run appear together or not at all, whatever the file system does."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import stat
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from wildreid.data.dataset import load_dataset
from wildreid.evaluate import outputs
from wildreid.evaluate.outputs import (
    OUTPUTS,
    SUBMISSION_FORMATS,
    OutputError,
    check_out_dir,
    write_run,
    write_submission,
)
from wildreid.gallery.pipeline import identify
from wildreid.presets import get_preset
from wildreid.util import files
from wildreid.util.files import remove_leftovers
from wildreid.util.registry import UnknownName


def small_lion_folder(shared_data, folder: Path, identities: int = 6) -> Path:
    """A LionData folder of its own: the photos of ``identities`` lions copied in, paths relative."""
    table = pd.read_csv(shared_data / "LionData" / "metadata.csv", dtype=str)
    chosen = table[table["split"] == "database"]["identity"].drop_duplicates().head(identities)
    table = table[table["identity"].isin(chosen)]
    (folder / "images").mkdir(parents=True)
    for path in table["path"]:
        shutil.copy(shared_data / "LionData" / path, folder / path)
    table.to_csv(folder / "metadata.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def result(shared_data, tmp_path_factory, lite0_backbone):
    """A real run on a small LionData folder (photos copied in, paths relative)."""
    folder = small_lion_folder(shared_data, tmp_path_factory.mktemp("lions") / "Lions")
    return identify(
        load_dataset(folder),
        get_preset("offline"),
        backbone=lite0_backbone,
        cache_dir=folder.parent / "cache",
        progress=False,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_temporary_folders(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".wildreid-")]


def test_a_later_run_replaces_the_earlier_one_whole(result, tmp_path):
    out = tmp_path / "run"
    write_run(result, out)
    (out / "stale-from-an-old-version.csv").write_text("old")
    written = write_run(result, out, report=False)
    assert not (out / "report.html").exists() and not (out / "plots").exists()  # nothing of the first run
    assert not (out / "stale-from-an-old-version.csv").exists()
    assert written["submission"] == out / "submission.csv" and written["submission"].is_file()
    assert _no_temporary_folders(tmp_path)


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask(result, tmp_path, umask, file_mode, folder_mode):
    """On a shared station server colleagues open the report: the run's files get the modes the
    user's umask gives (tempfile alone would make them 0600 in a 0700 folder)."""
    earlier = os.umask(umask)
    try:
        out = tmp_path / "run"
        write_run(result, out)
        files.write_text_atomic(tmp_path / "note.txt", "x")
    finally:
        os.umask(earlier)
    written = [out, *out.rglob("*"), tmp_path / "note.txt"]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert all(modes[p.name] == (folder_mode if p.is_dir() else file_mode) for p in written), modes


def test_full_disk_leaves_the_earlier_run_intact(result, tmp_path, monkeypatch):
    out = tmp_path / "run"
    write_run(result, out)
    for name in ("submission.csv", "candidates.csv", "run.json"):  # an earlier run with other results
        (out / name).write_text(f"earlier {name}")
    before = _files(out)
    real = files.write_text_atomic

    def disk_full(path, text):
        if Path(path).name == "report.html":  # the last file: everything else is written by then
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(outputs, "write_text_atomic", disk_full)
    with pytest.raises(OutputError, match="No space left on device.*earlier run in it is intact.*free some space"):
        write_run(result, out)
    assert _files(out) == before
    assert _no_temporary_folders(tmp_path)


def test_read_only_file_system_is_one_message(result, tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(files.tempfile, "mkdtemp", read_only)
    with pytest.raises(OutputError, match="Read-only file system.*choose another --out"):
        write_run(result, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_run_killed_between_the_renames_is_put_back(result, tmp_path):
    out = tmp_path / "run"
    write_run(result, out)
    before = _files(out)
    retired = tmp_path / ".wildreid-old-run.abc"  # as files.atomic_folder leaves it when killed half way
    retired.mkdir()
    out.rename(retired / "old")
    (tmp_path / ".wildreid-new-run.xyz").mkdir()  # and a half-written new run
    remove_leftovers(out)
    assert _files(out) == before and _no_temporary_folders(tmp_path)


def test_out_must_be_a_folder_of_runs(tmp_path):
    (tmp_path / "a-file.csv").write_text("x")
    with pytest.raises(OutputError, match="a-file.csv: this is a file, not a folder"):
        check_out_dir(tmp_path / "a-file.csv")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(OutputError, match="holds other files and no run.json"):
        check_out_dir(tmp_path / "photos")
    (tmp_path / "empty").mkdir()
    for fine in (tmp_path / "empty", tmp_path / "new" / "folder"):
        assert check_out_dir(fine) == fine
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "run.json").write_text(json.dumps({}))
    assert check_out_dir(tmp_path / "earlier") == tmp_path / "earlier"


def test_outputs_and_submission_formats_are_registered_by_name(result, tmp_path):
    assert OUTPUTS.names() == [
        "submission",
        "candidates",
        "run",
        "groups",
        "failures",
        "no_animal",
        "calibrations",
        "report",
    ]
    assert SUBMISSION_FORMATS.names() == ["animalclef2025", "animalclef2026"]
    with pytest.raises(ValueError, match="submission format 'kaggle': choose one of animalclef2025, animalclef2026."):
        write_submission(result, tmp_path / "submission.csv", "kaggle")
    with pytest.raises(UnknownName, match="unknown run output 'parquet'; choose one of submission, candidates,"):
        OUTPUTS.get("parquet")


@pytest.fixture
def answers_txt():
    """A test's own output: answers.txt, one "image_id identity" line per query."""

    def write_answers(result, folder, request):
        lines = [f"{row.image_id} {row.identity}" for row in result.predictions.itertuples()]
        (folder / "answers.txt").write_text("\n".join(lines) + "\n")
        return {"answers": folder / "answers.txt"}

    OUTPUTS.register("answers", write_answers)
    yield
    OUTPUTS.unregister("answers")


def test_a_new_output_is_written_with_the_run(result, tmp_path, answers_txt):
    written = write_run(result, tmp_path / "run", report=False)
    assert list(written)[:3] == ["submission", "candidates", "run"] and list(written)[-1] == "answers"
    lines = (tmp_path / "run" / "answers.txt").read_text().splitlines()
    assert len(lines) == len(result.predictions) and lines[0].split()[0] == result.predictions["image_id"].iloc[0]


def _report_photos(report: Path) -> tuple[str, list[str]]:
    page = report.read_text()
    return page, re.findall(r"<img class='thumb' loading='lazy' src='([^']+)'", page)


def test_the_report_shows_every_query_its_answer_and_its_photos(result, tmp_path):
    """report.html is for people: every query with its answer, candidates and scores, the photos
    linked (and found from the run folder), the truth where known, and what the scores mean."""
    out = tmp_path / "runs" / "lions"
    write_run(result, out, evaluation=outputs.evaluate_if_possible(result))
    page, photos = _report_photos(out / "report.html")
    table = page[page.index('<h2 id="queries">Every query</h2>') :]
    for row in result.candidates.itertuples():
        assert f"<td>{row.image_id}</td>" in table
    assert table.count("<tr>") == len(result.candidates) + 1
    assert "right?" in table and "cosine: the similarity" in page  # the offline preset ranks by cosine
    linked = {os.path.realpath(out / unquote(src)) for src in photos}
    assert {os.path.realpath(p) for p in result.dataset.queries["path"]} <= linked
    assert all(os.path.isfile(p) for p in linked)
    assert "balanced accuracy on known individuals" in page


def test_the_report_of_unlabelled_queries_says_why_there_is_no_score(result, tmp_path):
    table = result.dataset.table.copy()
    table.loc[table["split"] == "query", "identity"] = None
    unlabelled = dataclasses.replace(result, dataset=dataclasses.replace(result.dataset, table=table))
    out = tmp_path / "run"
    write_run(unlabelled, out, evaluation=outputs.evaluate_if_possible(unlabelled))
    page, photos = _report_photos(out / "report.html")
    assert "carry no identity labels, so no accuracy can be measured" in page
    assert ">none<" not in page and ">nan<" not in page and "right?" not in page
    assert len(photos) >= len(result.candidates)


def test_picture_labels_fit_and_do_not_overprint():
    """A long caption on a narrow picture is scaled down (then cut) to stay inside it, on a dark
    band."""
    from wildreid.evaluate.pictures import label

    picture = np.full((120, 200, 3), 128, np.uint8)
    label(picture, "6 inliers  #1 SomeVeryLongIndividualName_0001  P(same) 0.45")
    assert (picture[:, -4:] == 128).all()  # nothing drawn past the right edge
    band = picture[6:20, 6:150]
    assert (band == 0).mean() > 0.5 and (band > 200).any()  # light text on black


def test_the_summary_line_counts_answers_groups_and_uncertain_ones():
    from wildreid.evaluate.summary import summary_line

    candidates = pd.DataFrame(
        {
            "prediction": ["Lion1", "Lion1", "Lion2", "new_individual", "new_individual", "new_individual"],
            "top1_score": [0.9, 0.3, 0.6, 0.05, 0.02, 0.01],
            "group": ["Lion1", "Lion1", "Lion2", "new_1", "new_1", "new_2"],
            "group_kind": ["known", "known", "known", "new", "new", "new"],
            "group_size": [2, 2, 1, 2, 2, 1],
        }
    )
    assert summary_line(candidates, calibrated=True) == (
        "6 photos: 3 known (2 animals), 3 new (1 group, 1 alone), 1 uncertain"
    )
    assert summary_line(candidates.drop(columns=["group", "group_kind", "group_size"]), calibrated=False) == (
        "6 photos: 3 known (2 animals), 3 new"
    )


def test_a_fit_on_thin_evidence_is_said_in_the_notes_and_the_report(result, tmp_path):
    """Six lions: fewer than ten animals with two or more photos. The run says so, with what to
    do, in its notes (console, run.json) and its report."""
    warnings = [note for note in result.notes if "rest on little" in note]
    assert len(warnings) == 1 and "animal(s) with two or more photos" in warnings[0], result.notes
    assert "--preset offline" not in warnings[0]  # the offline preset is already the advice's aim
    write_run(result, tmp_path / "run")
    assert "rest on little" in (tmp_path / "run" / "report.html").read_text()
    assert any("rest on little" in note for note in json.loads((tmp_path / "run" / "run.json").read_text())["notes"])


def test_thin_evidence_counts_animals_with_pairs_and_positive_pairs():
    from wildreid.gallery.guard_rails import thin_evidence

    enough = np.repeat([f"a{i}" for i in range(10)], 2)
    assert thin_evidence("Herd", enough, positives=150, calibrated=True) == []
    (note,) = thin_evidence("Herd", np.append(enough[:18], ["b", "c"]), positives=58, calibrated=True)
    assert note.startswith("Herd: the threshold and scores rest on little: 9 animal(s) with two or more photos")
    assert "58 same-animal pairs" in note and "--preset offline" in note
    assert thin_evidence("Herd", enough, positives=58, calibrated=False) == []  # a cosine needs none
