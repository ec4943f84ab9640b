"""Tests for choosing training settings by validation (wildreid.tuning, `wildreid train` without
--flip/--lr/--epochs). The selection logic is tested with a fake runner whose validation figures are
made up (so the test knows which candidate must win); the real path with a tiny random network on a
few real LionData images, 32 px."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import wildreid.train.finetune as training
import wildreid.train.tuning as tuning
from wildreid.cli.main import app
from wildreid.data.dataset import load_dataset
from wildreid.describe.trained import RECORD, TrainError, trained_on
from wildreid.train.augment import AugmentConfig
from wildreid.train.checkpoint import CHECKPOINT
from wildreid.train.finetune import TrainConfig
from wildreid.train.images import training_images
from wildreid.train.tuning import (
    SEARCH_DIR,
    SearchSpace,
    best_epoch,
    candidate_configs,
    candidate_name,
    choose_settings,
    free_settings,
    train_with_search,
)
from wildreid.train.validation import mean_average_precision

runner = CliRunner()
TINY = "random:test_efficientnet"  # timm's 0.1M-parameter test network


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lion(shared_data):
    return load_dataset(shared_data / "LionData")


@pytest.fixture(scope="module")
def few_images(lion):
    """24 database images: 4 of each of 6 individuals."""
    images = training_images(lion)
    counts = images["identity"].value_counts()
    chosen = sorted(counts[counts >= 4].index)[:6]
    return images[images["identity"].isin(chosen)].groupby("identity").head(4).reset_index(drop=True)


def tiny_config(**changes) -> TrainConfig:
    settings = dict(backbone=TINY, batch_size=8, image_size=32, head_epochs=1, val_fraction=0.3, num_workers=0)
    return TrainConfig(**{**settings, **changes})


# --------------------------------------------------------------------------------------------
# The plan: what is searched


def test_only_the_settings_not_given_are_searched():
    assert free_settings(None, None, None) == {"flip", "lr", "epochs"}
    assert free_settings(True, None, 12) == {"lr"}
    assert free_settings(False, 1e-3, 5) == set()
    space = SearchSpace(flip=(False, True), lr=(3e-4, 1e-3), max_epochs=9)
    base = TrainConfig(lr=5e-4, epochs=7)
    every = candidate_configs(base, {"flip", "lr", "epochs"}, space)
    assert [(c.augment.flip, c.lr, c.epochs) for c in every] == [
        (False, 3e-4, 9),
        (False, 1e-3, 9),
        (True, 3e-4, 9),
        (True, 1e-3, 9),
    ]
    # Given values are kept: only the flip is tried, at the given rate and epochs.
    flips = candidate_configs(base, {"flip"}, space)
    assert [(c.augment.flip, c.lr, c.epochs) for c in flips] == [(False, 5e-4, 7), (True, 5e-4, 7)]
    assert len({candidate_name(c) for c in every}) == 4
    with pytest.raises(ValueError, match="cannot search"):
        candidate_configs(base, {"margin"}, space)


def test_mean_average_precision():
    similarity = np.array([[-np.inf, 0.9, 0.5, 0.1], [0.9, -np.inf, 0.2, 0.8]])
    gallery = np.array(["a", "b", "a", "a"])
    # Query 0 (a): ranking b, a, a -> hits at ranks 2 and 3: (1/2 + 2/3) / 2. Query 1 (b): a, a, a -> 0.
    assert mean_average_precision(similarity[:1], np.array(["a"]), gallery) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert mean_average_precision(similarity, np.array(["a", "b"]), gallery) == pytest.approx((1 / 2 + 2 / 3) / 4)


def test_the_best_epoch_is_the_first_with_the_best_monitored_figure():
    history = [
        {"epoch": 0, "val_top1": 0.2, "val_map": 0.3},
        {"epoch": 1, "val_top1": 0.7, "val_map": 0.4},
        {"epoch": 2, "val_top1": 0.5, "val_map": 0.6},
        {"epoch": 3, "val_top1": 0.6, "val_map": 0.6},
        {"epoch": 4, "val_top1": 0.9, "val_map": 0.9},
    ]
    assert best_epoch(history, until=3)["epoch"] == 2  # as train() keeps it: the first of equals
    assert best_epoch(history, until=3, monitor="val_top1")["epoch"] == 1
    assert best_epoch(history, until=4)["epoch"] == 4
    with pytest.raises(TrainError, match="--val-fraction"):
        best_epoch([{"epoch": 1, "loss": 1.0}], until=1)


def test_candidates_tied_on_map_are_ranked_by_top1(few_images, tmp_path):
    keys = [(False, 3e-4), (False, 1e-3), (True, 3e-4), (True, 1e-3)]
    curves = {key: (lambda epoch: 0.4) for key in keys}
    runs = FakeRuns(curves, top1={**{key: 0.3 for key in keys}, (True, 3e-4): 0.5})
    space, free = SearchSpace(first_rung=2), {"flip", "lr"}
    selection = choose_settings(few_images, tmp_path, tiny_config(), free, space, run=runs)
    assert (selection["chosen"]["flip"], selection["chosen"]["lr"]) == (True, 3e-4)
    # All equal: the grid's first candidate.
    selection = choose_settings(few_images, tmp_path, tiny_config(), free, space, run=FakeRuns(curves))
    assert (selection["chosen"]["flip"], selection["chosen"]["lr"]) == (False, 3e-4)


# --------------------------------------------------------------------------------------------
# The selection follows the validation metric (a fake runner makes the figures up)


class FakeRuns:
    """Stands in for training: each candidate's validation mAP at each epoch comes from
    ``curves[(flip, lr)]`` (a function of the epoch), its top-1 is ``top1[(flip, lr)]`` or the mAP's
    double; records every call."""

    def __init__(self, curves, early_stop: dict | None = None, top1: dict | None = None):
        self.curves, self.early_stop, self.top1, self.calls = curves, early_stop or {}, top1 or {}, []

    def __call__(self, images, config, folder, until):
        key = (config.augment.flip, config.lr)
        self.calls.append((key, until, tuple(images["image_id"])))
        last = min(until, config.epochs, self.early_stop.get(key, config.epochs))
        history = [
            {"epoch": e, "val_map": self.curves[key](e), "val_top1": self.top1.get(key, 2 * self.curves[key](e))}
            for e in range(last + 1)
        ]
        finished = last >= config.epochs or key in self.early_stop
        return {"status": "finished" if finished else "paused", "epochs_run": last, "history": history}


def _curves(best: tuple, peak_epoch: int):
    """The candidate ``best`` rises until ``peak_epoch`` then falls; the others stay lower."""

    def good(epoch):
        return 0.5 + 0.03 * min(epoch, peak_epoch) - 0.02 * max(0, epoch - peak_epoch)

    def other(rank):
        return lambda epoch: 0.3 + 0.01 * rank * min(epoch, 3)

    keys = [(f, lr) for f in (False, True) for lr in (3e-4, 1e-3)]
    return {key: good if key == best else other(i) for i, key in enumerate(keys)}


@pytest.mark.parametrize("best", [(True, 1e-3), (False, 3e-4), (True, 3e-4)])
def test_the_choice_follows_the_validation_metric(few_images, tmp_path, best):
    runs = FakeRuns(_curves(best, peak_epoch=11))
    space = SearchSpace(max_epochs=16, first_rung=3)
    selection = choose_settings(few_images, tmp_path, tiny_config(), {"flip", "lr", "epochs"}, space, run=runs)
    chosen = selection["chosen"]
    assert (chosen["flip"], chosen["lr"]) == best
    assert chosen["epochs"] == chosen["best_epoch"] == 11  # the winner's best validated epoch
    assert chosen["val_map"] == pytest.approx(0.5 + 0.03 * 11)
    # Successive halving: 4 candidates to epoch 3, the better 2 to 6, the best one to the end.
    assert [r["epochs"] for r in selection["rounds"]] == [3, 6, 16]
    assert [len(r["validation"]) for r in selection["rounds"]] == [4, 2, 1]
    name = f"flip-{'on' if best[0] else 'off'}_lr-{best[1]:g}"
    assert all(name in r["kept"] for r in selection["rounds"])
    assert [until for key, until, _ in runs.calls if key == best] == [3, 6, 16]
    first_round = selection["rounds"][0]["validation"]
    losers = sorted(first_round, key=lambda n: first_round[n]["val_map"])[:2]
    assert all(selection["candidates"][n]["epochs_run"] == 3 for n in losers), "the worse half stops at the rung"
    every = candidate_configs(tiny_config(), {"flip", "lr"}, space)
    assert set(selection["candidates"]) == {candidate_name(c) for c in every}


def test_given_epochs_are_kept_and_an_early_stop_ends_a_candidate(few_images, tmp_path):
    best = (False, 1e-3)
    runs = FakeRuns(_curves(best, peak_epoch=4), early_stop={best: 9})
    selection = choose_settings(
        few_images, tmp_path, tiny_config(epochs=12), {"flip", "lr"}, SearchSpace(first_rung=2), run=runs
    )
    assert (selection["chosen"]["flip"], selection["chosen"]["lr"]) == best
    assert selection["chosen"]["epochs"] == 12, "--epochs given: not searched"
    assert selection["chosen"]["best_epoch"] == 4
    assert selection["candidates"]["flip-off_lr-0.001"]["epochs_run"] == 9  # stopped early by the runner
    assert selection["searched"] == ["flip", "lr"]


def test_a_search_without_validation_images_is_refused(few_images, tmp_path):
    with pytest.raises(TrainError, match="--val-fraction is 0.*--flip/--no-flip, --lr and --epochs"):
        train_with_search(few_images, tmp_path / "out", tiny_config(val_fraction=0.0), {"lr"})


# --------------------------------------------------------------------------------------------
# The real path: tiny network, real images


def test_search_then_final_training_on_every_image(few_images, tmp_path):
    space = SearchSpace(max_epochs=4, first_rung=2)
    free = {"flip", "lr", "epochs"}
    result = train_with_search(few_images, tmp_path / "out", tiny_config(), free, space, progress=False)
    record = json.loads((tmp_path / "out" / RECORD).read_text())
    selection = record["selection"]
    chosen = selection["chosen"]
    # The final model: the chosen settings, every training image, no validation.
    assert record["config"]["lr"] == chosen["lr"] and record["config"]["augment"]["flip"] == chosen["flip"]
    assert record["config"]["epochs"] == chosen["epochs"] == max(1, chosen["best_epoch"])
    assert record["data"]["train_images"] == len(few_images) and record["best_epoch"] is None
    # The choice is the winner's best epoch by validation mAP, from its real validation history.
    winner = candidate_name(tiny_config(lr=chosen["lr"], augment=AugmentConfig(flip=chosen["flip"])))
    history = selection["candidates"][winner]["history"]
    assert chosen["val_map"] == max(h["val_map"] for h in history)
    assert chosen["best_epoch"] == next(h["epoch"] for h in history if h["val_map"] == chosen["val_map"])
    assert all(0 <= h["val_map"] <= 1 for h in history)
    assert selection["validation"]["train_images"] + selection["validation"]["val_images_of_trained_identities"] + (
        selection["validation"]["val_images_of_held_out_identities"]
    ) == len(few_images)
    assert not (tmp_path / "out" / SEARCH_DIR).exists(), "the search's checkpoints are removed"
    assert result.backbone is not None and result.backbone.preprocess.size == (32, 32)


def test_no_refit_keeps_the_chosen_validated_run(few_images, tmp_path):
    space = SearchSpace(flip=(False,), lr=(1e-3,), max_epochs=3, first_rung=2)
    train_with_search(few_images, tmp_path / "out", tiny_config(), {"epochs"}, space, refit=False, progress=False)
    record = json.loads((tmp_path / "out" / RECORD).read_text())
    assert record["selection"]["final"].startswith("the chosen search run")
    held_out = record["data"]["val_images_of_trained_identities"] + record["data"]["val_images_of_held_out_identities"]
    assert held_out > 0 and len(record["data"]["held_out_image_hashes"]) == held_out
    assert record["model"]["folder"] == str((tmp_path / "out").resolve())
    assert trained_on(f"local-dir:{tmp_path / 'out'}").held_out  # identification calibrates on them


def test_an_interrupted_search_and_final_training_resume_to_the_same_model(few_images, tmp_path, monkeypatch):
    space = SearchSpace(flip=(False, True), lr=(1e-3,), max_epochs=3, first_rung=2)
    config, free = tiny_config(), {"flip", "epochs"}
    uninterrupted = train_with_search(few_images, tmp_path / "whole", config, free, space, progress=False).record

    class Interrupted(Exception):
        pass

    # 1. Killed during the search, after the first candidate's first rung.
    real_train = tuning.train
    calls = []

    def train_then_stop(*args, **kwargs):
        calls.append(kwargs.get("stop_after"))
        result = real_train(*args, **kwargs)
        if len(calls) == 1:
            raise Interrupted
        return result

    monkeypatch.setattr(tuning, "train", train_then_stop)
    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train_with_search(few_images, out, config, free, space, progress=False)
    assert (out / SEARCH_DIR / "flip-off_lr-0.0003" / CHECKPOINT).exists()
    # 2. Killed in the final training, right after its first checkpoint.
    monkeypatch.setattr(tuning, "train", real_train)
    real_save = training.save_checkpoint

    def save_then_stop(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        if path == out / CHECKPOINT:
            raise Interrupted

    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        train_with_search(few_images, out, config, free, space, progress=False)
    assert (out / SEARCH_DIR / "selection.json").exists() and (out / CHECKPOINT).exists()
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    with pytest.raises(TrainError, match="settings search for other images or settings.*--overwrite"):
        train_with_search(few_images, out, tiny_config(seed=1), free, space, progress=False)
    record = train_with_search(few_images, out, config, free, space, progress=False).record
    assert record["resumed_after_epochs"] == [1]
    assert record["selection"]["chosen"] == uninterrupted["selection"]["chosen"]
    assert record["selection"]["rounds"] == uninterrupted["selection"]["rounds"]
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    for key, tensor in load_file(out / "model.safetensors").items():
        assert torch.equal(tensor, whole[key]), key


# --------------------------------------------------------------------------------------------
# The command line: no query image or label is ever read


def test_cli_chooses_settings_from_database_images_only(few_images, lion, tmp_path, monkeypatch):
    queries = lion.queries[["image_id", "identity", "path", "split"]].head(8)
    table = pd.concat([few_images[["image_id", "identity", "path"]].assign(split="database"), queries])
    table.to_csv(tmp_path / "metadata.csv", index=False)
    query_ids, query_paths = set(queries["image_id"].astype(str)), set(queries["path"])
    seen_ids, seen_paths = set(), set()
    real_train, real_load = tuning.train, training.load_pixels

    def spy_train(images, *args, **kwargs):
        seen_ids.update(images["image_id"].astype(str))
        return real_train(images, *args, **kwargs)

    def spy_load(paths, *args, **kwargs):
        seen_paths.update(paths)
        return real_load(paths, *args, **kwargs)

    monkeypatch.setattr(tuning, "train", spy_train)
    monkeypatch.setattr(training, "load_pixels", spy_load)
    monkeypatch.setattr(tuning, "SearchSpace", lambda: SearchSpace(max_epochs=3, first_rung=2))
    arguments = ["train", str(tmp_path / "metadata.csv"), "--out", str(tmp_path / "model"), "--backbone", TINY]
    options = ["--image-size", "32", "--batch-size", "8", "--head-epochs", "1", "--val-fraction", "0.3"]
    result = runner.invoke(app, [*arguments, *options, "--workers", "0", "--allow-outside-paths"])
    assert result.exit_code == 0, result.output
    assert "chosen: flip" in result.output
    assert seen_ids == set(few_images["image_id"].astype(str)) and not seen_ids & query_ids
    assert seen_paths and not seen_paths & query_paths
    record = json.loads((tmp_path / "model" / RECORD).read_text())
    assert record["selection"]["searched"] == ["flip", "lr", "epochs"]
    # Explicit flags win: nothing left to choose, so no search at all.
    result = runner.invoke(
        app,
        [*arguments[:3], str(tmp_path / "fixed"), *arguments[4:], *options, "--workers", "0", "--no-flip"]
        + ["--lr", "1e-3", "--epochs", "2", "--allow-outside-paths"],
    )
    assert result.exit_code == 0, result.output
    assert "selection" not in json.loads((tmp_path / "fixed" / RECORD).read_text())
    result = runner.invoke(app, [*arguments, "--overwrite", "--val-fraction", "0", "--allow-outside-paths"])
    assert result.exit_code == 2 and "--val-fraction is 0" in " ".join(result.output.split())
