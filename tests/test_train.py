"""Tests for fine-tuning (wildreid.train, wildreid.augment and `wildreid train`), on real LionData
images from ../shared/data. Models are tiny runs (48-64 px, a few epochs) so the file stays fast."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.transforms import v2
from typer.testing import CliRunner

from wildreid.cli.main import app
from wildreid.data.dataset import Dataset, load_csv, load_dataset
from wildreid.describe.backbones import Preprocess, load_backbone
from wildreid.describe.extract import content_hashes, extract_embeddings
from wildreid.describe.trained import TrainError, trained_on
from wildreid.gallery.pipeline import identify
from wildreid.local.pairs import FusionSettings
from wildreid.presets import get_preset
from wildreid.train.arcface import ArcFaceHead
from wildreid.train.augment import AugmentConfig, train_transform
from wildreid.train.checkpoint import CHECKPOINT, save_model
from wildreid.train.finetune import TrainConfig, train
from wildreid.train.images import TRAIN, VAL_IDENTITY, VAL_IMAGE, split_validation, training_images
from wildreid.util.files import current_umask

runner = CliRunner()
# One thread: these tests check behaviour, not speed, and on a small shared machine torch's thread
# pool can be ten times slower than one thread when other processes hold the cores.
SINGLE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lion(shared_data):
    return load_dataset(shared_data / "LionData")


@pytest.fixture(scope="module")
def small_images(lion):
    """40 database images: 5 of each of 8 individuals (the first 8 with 5+ database images)."""
    images = training_images(lion)
    counts = images["identity"].value_counts()
    chosen = sorted(counts[counts >= 5].index)[:8]
    return images[images["identity"].isin(chosen)].groupby("identity").head(5).reset_index(drop=True)


@pytest.fixture(scope="module")
def trained(small_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "model"
    # No validation here, so the last epoch is what is saved (validation is tested with the kill).
    config = TrainConfig(epochs=4, head_epochs=1, batch_size=8, lr=1e-3, image_size=64, val_fraction=0.0)
    return train(small_images, out, config, progress=False)


# --------------------------------------------------------------------------------------------
# The loss


def test_arcface_head_is_the_arcface_formula():
    torch.manual_seed(0)
    head = ArcFaceHead(dim=6, classes=4, margin=0.3, scale=10.0)
    features, labels = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 1])
    loss, cosine = head(features, labels)
    expected_cosine = F.normalize(features) @ F.normalize(head.weight).T
    assert torch.allclose(cosine, expected_cosine, atol=1e-6)
    theta = torch.acos(expected_cosine[torch.arange(5), labels])
    logits = expected_cosine.clone()
    logits[torch.arange(5), labels] = torch.cos(theta + 0.3)
    assert torch.allclose(loss, F.cross_entropy(10.0 * logits, labels), atol=1e-5)
    # The margin makes the loss larger than plain normalised softmax on the same cosines.
    assert loss > F.cross_entropy(10.0 * expected_cosine, labels)


def test_sub_center_head_uses_the_nearest_prototype():
    torch.manual_seed(1)
    head = ArcFaceHead(dim=4, classes=2, margin=0.2, scale=5.0, sub_centers=3)
    features = torch.randn(3, 4)
    all_cosines = F.normalize(features) @ F.normalize(head.weight).T  # (3, 2*3)
    assert torch.allclose(head.cosine(features), all_cosines.view(3, 2, 3).amax(2), atol=1e-6)


def test_arcface_head_matches_pytorch_metric_learning():
    from pytorch_metric_learning import losses  # test extra: the reference ArcFace

    torch.manual_seed(2)
    ours = ArcFaceHead(dim=8, classes=5, margin=0.4, scale=20.0)
    theirs = losses.ArcFaceLoss(num_classes=5, embedding_size=8, margin=math.degrees(0.4), scale=20.0)
    theirs.W.data = ours.weight.data.T.clone()
    features, labels = torch.randn(16, 8), torch.randint(0, 5, (16,))
    assert torch.allclose(ours(features, labels)[0], theirs(features, labels), atol=1e-4)


# --------------------------------------------------------------------------------------------
# Augmentation


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "box", "lanczos"])
def test_every_preprocessing_interpolation_can_be_augmented(interpolation):
    picture = torch.randint(0, 256, (3, 80, 60), dtype=torch.uint8)
    out = train_transform((32, 24), (0.5,) * 3, (0.5,) * 3, interpolation)(picture)
    assert out.shape == (3, 32, 24) and out.dtype == torch.float32


def test_flip_is_off_by_default_and_can_be_switched_on():
    def steps(config):
        return [type(step) for step in train_transform((32, 32), (0.5,) * 3, (0.5,) * 3, "bicubic", config).transforms]

    assert v2.RandomHorizontalFlip not in steps(AugmentConfig())
    assert v2.RandomHorizontalFlip in steps(AugmentConfig(flip=True))
    picture = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    out = train_transform((32, 32), (0.5,) * 3, (0.5,) * 3, "bicubic")(picture)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert -1.5 <= out.min() and out.max() <= 1.5  # normalised with mean = std = 0.5 (jitter may overshoot)


# --------------------------------------------------------------------------------------------
# Which images are trained on, and the validation split


def test_training_images_are_the_database_never_the_queries(lion):
    images = training_images(lion)
    assert set(images["image_id"]) == set(lion.database["image_id"])
    assert not set(images["image_id"]) & set(lion.queries["image_id"])
    assert not images["was_query"].any()
    with pytest.raises(TrainError, match="queries are what a trained model is tested on"):
        training_images(lion, train_value="query")


def test_validation_split_never_puts_query_images_in_training(lion):
    images = training_images(lion)
    roles = split_validation(images, 0.2, seed=0)
    trained_ids = set(images["image_id"][roles == TRAIN])
    assert not trained_ids & set(lion.queries["image_id"])
    assert trained_ids | set(images["image_id"][roles != TRAIN]) == set(lion.database["image_id"])
    # About the asked fraction, split between whole identities and single images.
    assert abs((roles != TRAIN).mean() - 0.2) < 0.02
    assert (roles == VAL_IDENTITY).sum() > 0 and (roles == VAL_IMAGE).sum() > 0
    held = set(images["identity"][roles == VAL_IDENTITY])
    assert not held & set(images["identity"][roles == TRAIN]), "held-out identities are never trained on"
    for identity in images["identity"][roles == VAL_IMAGE]:
        mine = roles[(images["identity"] == identity).to_numpy()]
        assert (mine == VAL_IMAGE).sum() == 1 and (mine == TRAIN).sum() >= 2
    assert (roles == split_validation(images, 0.2, seed=0)).all(), "same seed, same split"
    assert (split_validation(images, 0.0, seed=0) == TRAIN).all()


def test_split_file_chooses_the_training_images(lion, shared_data):
    split_file = shared_data / "LionData" / "paper_split.csv"
    images = training_images(lion, split_file=split_file, split_column="paper_split", train_value="train")
    paper = pd.read_csv(split_file, dtype=str)
    assert set(images["image_id"]) == set(paper.loc[paper["paper_split"] == "train", "image_id"])
    # The paper's train part includes images that are queries of the shared open-set split: flagged.
    assert images["was_query"].sum() == len(set(images["image_id"]) & set(lion.queries["image_id"])) > 0


def test_split_file_errors_name_the_file_and_what_to_do(lion, shared_data, tmp_path):
    split_file = shared_data / "LionData" / "paper_split.csv"
    with pytest.raises(TrainError, match="paper_split.csv: missing column.*'part'.*--split-column"):
        training_images(lion, split_file=split_file, split_column="part")
    with pytest.raises(TrainError, match=r"no row has the value 'training'.*\['test', 'train'\].*--train-value"):
        training_images(lion, split_file=split_file, split_column="paper_split", train_value="training")
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("image_id,part\n0,train\nnot-an-id,train\n")
    with pytest.raises(TrainError, match="foreign.csv: 1 image_id.*not-an-id"):
        training_images(lion, split_file=foreign, split_column="part", train_value="train")
    with pytest.raises(TrainError, match="no column 'fold'"):
        training_images(lion, split_column="fold", train_value="1")


# --------------------------------------------------------------------------------------------
# Training on real images


def test_training_lowers_the_loss(trained):
    history = trained.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["head_only"] for h in history] == [True, False, False, False]
    assert history[-1]["loss"] < 0.9 * history[0]["loss"]
    assert history[-1]["train_accuracy"] > history[0]["train_accuracy"]
    record = json.loads((trained.out / "train.json").read_text())
    assert record["status"] == "finished" and record["config"]["image_size"] == 64
    assert record["data"]["train_images"] == 40 and record["best_epoch"] is None
    assert not (trained.out / CHECKPOINT).exists(), "a finished run leaves no checkpoint behind"


def test_saved_model_loads_through_load_backbone_with_the_trained_weights(trained, small_images):
    loaded = load_backbone(f"local-dir:{trained.out}")
    assert loaded.preprocess == trained.backbone.preprocess
    assert loaded.weights_id == trained.backbone.weights_id  # one cache key for one model
    assert loaded.preprocess.size == (64, 64)
    paths = small_images["path"].tolist()[:6]
    ours = extract_embeddings(paths, trained.backbone, progress=False).embeddings
    theirs = extract_embeddings(paths, loaded, progress=False).embeddings
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # ...and they are not the untrained weights.
    untrained = load_backbone("efficientnet-lite0", preprocess=loaded.preprocess)
    assert not np.allclose(extract_embeddings(paths, untrained, progress=False).embeddings, ours, atol=1e-3)
    # A preset pointed at the folder gets the same model and preprocessing.
    preset = get_preset("offline").replace(backbone=f"local-dir:{trained.out}", threshold=None)
    assert load_backbone(preset.backbone, preprocess=preset.preprocess).preprocess == loaded.preprocess


def test_saved_folder_is_timm_local_dir_layout_without_the_head(trained):
    config = json.loads((trained.out / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0" and config["num_features"] == 1280
    assert config["num_classes"] == 0
    pretrained_cfg = config["pretrained_cfg"]
    assert pretrained_cfg["input_size"] == [3, 64, 64]
    assert pretrained_cfg["mean"] == [0.5, 0.5, 0.5] and pretrained_cfg["interpolation"] == "bicubic"
    tensors = load_file(trained.out / "model.safetensors")
    assert set(tensors) == set(trained.backbone.model.state_dict())
    assert not any(key.startswith("classifier") or key == "weight" for key in tensors)
    # Model files follow the umask like every output (safetensors alone would write 0600).
    for name in ("config.json", "model.safetensors"):
        assert (trained.out / name).stat().st_mode & 0o777 == 0o666 & ~current_umask(), name


def test_saving_works_with_a_timm_whose_save_for_hf_has_no_data_config(monkeypatch, tmp_path):
    """timm 1.0.29 (as on a GPU machine) has no data_config argument: the input size trained
    with must reach config.json all the same."""
    import timm.models

    real = timm.models.save_for_hf

    def older_save_for_hf(model, save_directory, model_config=None, model_args=None, safe_serialization=False):
        return real(model, save_directory, model_config, model_args, safe_serialization)

    monkeypatch.setattr(timm.models, "save_for_hf", older_save_for_hf)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    starting_cfg = dict(model.pretrained_cfg)
    save_model(model, Preprocess((96, 96), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), "bilinear"), tmp_path)
    assert model.pretrained_cfg == starting_cfg, "saving leaves the caller's model as it was"
    loaded = load_backbone(f"local-dir:{tmp_path}")
    assert loaded.preprocess == Preprocess((96, 96), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), "bilinear")


def test_a_finished_folder_is_not_trained_over(trained, small_images):
    with pytest.raises(TrainError, match="already holds a trained model.*--overwrite"):
        train(small_images, trained.out, TrainConfig(epochs=1, image_size=64), progress=False)


# --------------------------------------------------------------------------------------------
# Killed and resumed


def _metadata_of(images: pd.DataFrame, folder) -> str:
    """A metadata.csv naming the shared images by absolute path (nothing is copied)."""
    table = images[["image_id", "identity", "path"]].assign(split="database")
    path = folder / "metadata.csv"
    table.to_csv(path, index=False)
    return str(path)


def test_killed_training_resumes_from_its_checkpoint_and_finishes(small_images, tmp_path):
    metadata = _metadata_of(small_images.head(24), tmp_path)
    out = tmp_path / "run"
    arguments = [
        "train",
        metadata,
        "--out",
        str(out),
        "--epochs",
        "4",
        "--head-epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "48",
        "--lr",
        "1e-3",
        "--val-fraction",
        "0.25",
        "--no-flip",  # every setting given: no settings search (see test_tuning.py)
        "--workers",
        "0",
        "--allow-outside-paths",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "wildreid", *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=SINGLE_THREAD_ENV,
    )
    try:
        deadline = time.monotonic() + 180
        while not (out / CHECKPOINT).exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (out / CHECKPOINT).exists(), "no checkpoint was written"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "train.json").exists(), "the run was killed before it finished"
    checkpoint = torch.load(out / CHECKPOINT, weights_only=True)
    done = checkpoint["state"]["epoch"]
    assert 1 <= done < 4

    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "train.json").read_text())
    assert record["resumed_after_epochs"] == [done]
    history = record["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4]  # epoch 0: the untrained weights
    assert history[: done + 1] == checkpoint["state"]["history"]
    # Validation: held-out images, every epoch; the saved epoch is the best one.
    held_out = record["data"]["val_images_of_trained_identities"] + record["data"]["val_images_of_held_out_identities"]
    assert held_out > 0 and record["data"]["train_images"] + held_out == 24
    assert all(0.0 <= h["val_top1"] <= 1.0 for h in history)
    # The saved epoch is the first with the best validation mAP (TrainConfig.monitor).
    assert record["best_epoch"] == history[int(np.argmax([h["val_map"] for h in history]))]["epoch"]
    assert record["best_val_map"] == max(h["val_map"] for h in history)

    # Resuming is exact: the same run never interrupted ends with the same weights.
    uninterrupted = tmp_path / "uninterrupted"
    assert runner.invoke(app, [*arguments[:3], str(uninterrupted), *arguments[4:]]).exit_code == 0
    resumed_weights = load_file(out / "model.safetensors")
    for key, tensor in load_file(uninterrupted / "model.safetensors").items():
        assert torch.equal(tensor, resumed_weights[key]), key


def test_resuming_with_other_settings_or_images_is_refused(small_images, tmp_path, monkeypatch):
    import wildreid.train.finetune as training

    class Interrupted(Exception):
        pass

    def save_then_stop(*args, **kwargs):  # an interruption right after the first checkpoint
        original_save(*args, **kwargs)
        raise Interrupted

    original_save = training.save_checkpoint
    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    out, images = tmp_path / "run", small_images.head(16)
    config = TrainConfig(epochs=3, batch_size=8, image_size=48, val_fraction=0.0)
    with pytest.raises(Interrupted):
        train(images, out, config, progress=False)
    monkeypatch.setattr(training, "save_checkpoint", original_save)
    assert (out / CHECKPOINT).exists()
    with pytest.raises(TrainError, match="other settings.*epochs: 3 then, 4 now.*--overwrite"):
        train(images, out, TrainConfig(epochs=4, batch_size=8, image_size=48, val_fraction=0.0), progress=False)
    with pytest.raises(TrainError, match="other training images.*--overwrite"):
        train(small_images.head(15), out, config, progress=False)
    (out / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="cannot read the checkpoint.*--overwrite"):
        train(images, out, config, progress=False)
    assert train(images, out, config, overwrite=True, progress=False).record["epochs_run"] == 3


def test_cli_train_reports_bad_input_without_a_traceback(shared_data, tmp_path):
    def flat(result):  # Rich wraps long messages at the terminal width
        return " ".join(result.output.split())

    result = runner.invoke(
        app,
        [
            "train",
            str(shared_data / "LionData"),
            "--out",
            str(tmp_path / "x"),
            "--split-file",
            str(tmp_path / "missing.csv"),
        ],
    )
    assert result.exit_code == 2 and "missing.csv: split file not found" in flat(result)
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["train", str(shared_data / "LionData"), "--out", str(tmp_path / "x"), "--margin", "2"])
    assert result.exit_code == 2 and "margin is an angle in radians" in flat(result)


# --------------------------------------------------------------------------------------------
# Identification with a trained model: calibrate on what training held out


@pytest.fixture(scope="module")
def trained_with_validation(small_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained_val") / "model"
    config = TrainConfig(epochs=1, head_epochs=1, batch_size=8, image_size=48, val_fraction=0.4)
    return train(small_images, out, config, progress=False)


def _lions_with_queries(small_images, lion, folder) -> Dataset:
    """The 40 training photos as the database, 6 query photos of LionData as queries."""
    database = small_images[["image_id", "identity", "path"]].assign(split="database")
    queries = lion.queries[["image_id", "identity", "path", "split"]].head(6)
    (folder / "Lions").mkdir()
    pd.concat([database, queries]).to_csv(folder / "Lions" / "metadata.csv", index=False)
    return load_csv(folder / "Lions" / "metadata.csv", allow_outside_paths=True)


def test_the_record_names_the_photos_trained_on_and_held_out(trained_with_validation, small_images):
    roles = split_validation(small_images, 0.4, seed=0)
    seen = trained_on(f"local-dir:{trained_with_validation.out}")
    held_out_hashes, _ = content_hashes(small_images["path"][roles != TRAIN].tolist())
    trained_hashes, _ = content_hashes(small_images["path"][roles == TRAIN].tolist())
    assert seen.held_out == set(held_out_hashes) and seen.trained == set(trained_hashes)
    assert len(seen.held_out) >= 10 and not seen.trained & seen.held_out
    assert trained_on("efficientnet-lite0") is None
    # Found however the folder is named, as load_backbone finds it.
    assert trained_on(str(trained_with_validation.out)) == seen


def test_a_damaged_training_record_is_named(trained, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained.out, copy)
    (copy / "train.json").write_text("{not json")
    with pytest.raises(TrainError, match="train.json: not a readable training record"):
        trained_on(f"local-dir:{copy}")


def test_identification_calibrates_on_the_photos_training_held_out(
    trained_with_validation, trained, small_images, lion, tmp_path, monkeypatch
):
    import wildreid.gallery.part as group_module
    from wildreid.gallery.gallery import Gallery

    dataset = _lions_with_queries(small_images, lion, tmp_path)
    roles = split_validation(small_images, 0.4, seed=0)
    held_out = dataset.database["path"].isin(small_images["path"][roles != TRAIN]).to_numpy()
    asked = {}
    real_choice = group_module.choose_threshold

    def spy(neighbours, identities, **options):
        asked["rows"] = neighbours.rows  # the database photos asked as pseudo-queries
        return real_choice(neighbours, identities, **options)

    monkeypatch.setattr(group_module, "choose_threshold", spy)
    backbone = f"local-dir:{trained_with_validation.out}"
    offline = get_preset("offline").replace(backbone=backbone, preprocess=None)
    result = identify(dataset, offline, cache_dir=None, progress=False)
    # The threshold is simulated only with photos the model never trained on...
    np.testing.assert_array_equal(asked["rows"], np.flatnonzero(held_out))
    assert any(f"use the {held_out.sum()} it held out" in note for note in result.notes)
    # ...and fusion draws its calibration pairs from them.
    fusion = get_preset("fusion").replace(
        backbone=backbone, preprocess=None, local_options={"max_keypoints": 128}, fusion=FusionSettings(shortlist=5)
    )
    anchors = Gallery.build(dataset, fusion, cache_dir=tmp_path / "cache", progress=False).groups["Lions"].fit
    assert len(anchors.pseudo_queries) and held_out[anchors.pseudo_queries].all()

    # A model trained on every photo (no validation) cannot: all rows are used, and the user is told.
    without = identify(dataset, offline.replace(backbone=f"local-dir:{trained.out}"), cache_dir=None, progress=False)
    assert len(asked["rows"]) == len(held_out)
    assert any("optimistic" in note and "--val-fraction" in note for note in without.notes)
    # An untrained descriptor: nothing to say about training (a few lions: the fit's thin evidence is).
    plain = identify(
        dataset, get_preset("offline").replace(threshold="auto", adapt="none"), cache_dir=None, progress=False
    )
    assert [note for note in plain.notes if "rest on little" not in note] == [] and len(asked["rows"]) == len(held_out)
