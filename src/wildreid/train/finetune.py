"""Fine-tune a backbone for re-identification with an angular-margin (ArcFace) loss.

The trained network is the same timm model that identification uses: pooled features, no extra
layer. It is saved in timm's ``local-dir`` layout (config.json + model.safetensors, without the
ArcFace head), so ``--backbone local-dir:DIR`` and every preset use it unchanged, with the
preprocessing it was trained with.

Only database images are ever trained on (or, with a split file, the rows it marks for training).
A validation part is held out of them, both as whole identities (like new individuals at test time)
and as single images of identities that are trained on (like known individuals); validation mAP
picks the best epoch and stops training early (images.py, validation.py).

A run can be killed at any moment: every epoch ends with an atomically written checkpoint
(model, head, optimiser, schedule, RNG states, best weights so far), and the same command
started again resumes after the last finished epoch (checkpoint.py). ``train.json`` beside the
model records the settings, the data and every epoch's figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from wildreid.describe.backbones import (
    OFFLINE_LITE0,
    Backbone,
    Preprocess,
    folder_fingerprint,
    load_backbone,
)
from wildreid.describe.extract import default_device
from wildreid.describe.trained import RECORD, TrainError
from wildreid.train.arcface import ArcFaceHead
from wildreid.train.augment import AugmentConfig, train_transform
from wildreid.train.checkpoint import (
    CHECKPOINT,
    MODEL_FILES,
    cpu_copy,
    data_fingerprint,
    prepare_out_dir,
    resume_checkpoint,
    save_checkpoint,
    save_model,
)
from wildreid.train.images import (
    TRAIN,
    VAL_IDENTITY,
    VAL_IMAGE,
    AugmentedImages,
    LoadedImages,
    load_pixels,
    source_size,
    split_validation,
)
from wildreid.train.images import training_images as training_images  # re-exported: cli/main.py imports it from here
from wildreid.train.validation import Validation
from wildreid.util.files import write_text_atomic

# Validation figures that can pick the best epoch (TrainConfig.monitor).
MONITORS = ("val_map", "val_top1")


@dataclass(frozen=True)
class TrainConfig:
    backbone: str = OFFLINE_LITE0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-4  # backbone learning rate (AdamW, peak of the cosine schedule)
    head_lr_factor: float = 10.0  # the freshly initialised ArcFace head learns this much faster
    weight_decay: float = 0.01  # not applied to biases and normalisation weights
    head_epochs: int = 2  # first epochs train the head alone, the backbone frozen (see below);
    # at most epochs - 1: the last epoch always trains the backbone
    warmup_epochs: float = 1.0  # then the backbone's learning rate rises linearly, then falls (cosine)
    image_size: int | None = None  # square input side; None: the backbone's own input size
    margin: float = 0.3  # ArcFace additive angular margin, radians
    scale: float = 30.0  # ArcFace logit scale
    sub_centers: int = 1  # >1: sub-center ArcFace (several prototypes per identity)
    val_fraction: float = 0.15  # of the training images; 0: no validation, no early stopping
    patience: int = 5  # epochs without a better validation figure (``monitor``) before stopping
    # The validation figure that picks the best epoch, stops training early and ranks the settings
    # search's candidates: mAP by default. With ~90 held-out photos, top-1 moves in steps of 1/90 and
    # jumped by 3-5 points between consecutive epochs on LionData while mAP rose steadily, so top-1
    # stopped runs at a lucky early epoch (5 of 20) that mAP did not single out.
    monitor: str = "val_map"
    # Batch-norm statistics stay the pretrained ones by default: those of a few dozen images per
    # batch are noisy, and updating them shifts every feature at once (validation top-1 on LionData
    # fell by half in the first fine-tuning epoch); frozen, training and identification also
    # compute the very same function. The norm layers' scale and shift still learn.
    update_norm_statistics: bool = False
    seed: int = 0
    augment: AugmentConfig = AugmentConfig()
    # Where and how fast it runs; may change between a run and its resumption.
    device: str | None = None  # None: a GPU if there is one
    num_workers: int | None = None  # augmentation processes; None: 1 on CPU, up to 8 with a GPU

    RUNTIME_FIELDS = ("device", "num_workers")

    def __post_init__(self):
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 2:
            problems.append(f"batch size must be at least 2 (got {self.batch_size}): batch norm needs it")
        if self.lr <= 0 or self.head_lr_factor <= 0:
            problems.append("learning rates must be positive")
        if self.image_size is not None and self.image_size < 32:
            problems.append(f"image size must be at least 32 pixels (got {self.image_size})")
        if not 0 <= self.margin < math.pi / 2:
            problems.append(f"margin is an angle in radians in [0, pi/2) (got {self.margin}); 0.2-0.5 is usual")
        if self.scale <= 0:
            problems.append(f"scale must be positive (got {self.scale}); 30-64 is usual")
        if self.sub_centers < 1:
            problems.append(f"sub-centers must be at least 1 (got {self.sub_centers})")
        if not 0 <= self.val_fraction < 0.5:
            problems.append(f"validation fraction must be in [0, 0.5) (got {self.val_fraction})")
        if self.head_epochs < 0:
            problems.append(f"head epochs must be at least 0 (got {self.head_epochs})")
        if self.patience < 1:
            problems.append(f"patience must be at least 1 epoch (got {self.patience})")
        if self.monitor not in MONITORS:
            problems.append(f"monitor must be one of {MONITORS} (got {self.monitor!r})")
        if problems:
            raise TrainError("invalid training settings: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def result_settings(self) -> dict:
        """The settings that change the trained weights (a resumed run must keep them)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_FIELDS}


@dataclass
class TrainResult:
    backbone: Backbone | None  # the trained model (best epoch), in eval mode; None while paused (stop_after)
    out: Path
    record: dict  # what train.json holds

    @property
    def history(self) -> list[dict]:
        return self.record["history"]


# --------------------------------------------------------------------------------------------
# Training


def train(
    images: pd.DataFrame,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    source: dict | None = None,
    selection: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Fine-tune ``config.backbone`` on ``images`` (from :func:`training_images`) and save it in
    ``out``; resume from ``out/checkpoint.pt`` if an earlier run was interrupted.

    ``stop_after``: pause after that many epochs (of the ``config.epochs`` the schedule is planned
    for), leaving the checkpoint and no model; calling again with a larger value continues the
    same run (the settings search trains its candidates this way). ``selection``: how the settings
    were chosen (see tuning.py), kept in train.json."""
    started = time.perf_counter()
    out = Path(out)
    prepare_out_dir(out, overwrite)
    device = torch.device(config.device or default_device())
    amp = device.type == "cuda"  # bf16 autocast: about twice as fast on a GPU, no loss scaling needed
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _seed_everything(config.seed)

    backbone = load_backbone(config.backbone, device="cpu")
    preprocess = _training_preprocess(backbone, config.image_size)
    model = backbone.model
    split = _split_and_load(images, config, preprocess, progress)
    head = ArcFaceHead(backbone.dim, len(split.classes), config.margin, config.scale, config.sub_centers)

    # channels_last: 1.5-2x faster convolutions on CPU and on tensor cores; no effect on the weights.
    model.to(device, memory_format=torch.channels_last)
    head.to(device)
    optimizer = _optimizer(model, head, config)
    batch_size = min(config.batch_size, len(split.fit_rows))
    steps_per_epoch = max(1, len(split.fit_rows) // batch_size)  # the last, partial batch is dropped
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedules(config, steps_per_epoch))
    run = _Run(config, backbone, preprocess, head, optimizer, scheduler, device, amp, progress)

    fingerprint = data_fingerprint(images, split.roles, split.usable)
    checkpoint_path = out / CHECKPOINT
    state = _start_or_resume(run, checkpoint_path, fingerprint)
    augmented = AugmentedImages(
        [split.loaded.training[i] for i in split.fit_rows],
        split.labels,
        train_transform(preprocess.size, preprocess.mean, preprocess.std, preprocess.interpolation, config.augment),
    )
    workers = _loader_workers(config, device)
    validation = Validation(images, split.roles, split.val_rows, split.fit_rows, split.loaded.evaluation, preprocess)
    if validation.rows.size and not state["history"]:
        _validate_start(run, state, validation)

    last = config.epochs if stop_after is None else min(config.epochs, stop_after)
    while state["epoch"] < last and not state["stopped_early"]:
        _train_and_validate_epoch(run, state, augmented, validation, batch_size, workers)
        seconds = state["seconds_before"] + time.perf_counter() - started
        save_checkpoint(checkpoint_path, config, fingerprint, model, head, optimizer, scheduler, state, seconds)
    if state["stopped_early"]:
        tqdm.write(f"stopped early: no better validation {config.monitor} for {config.patience} epochs")
    elif state["epoch"] < config.epochs:
        # Paused (stop_after): the checkpoint is the run; nothing is saved as a model yet.
        return TrainResult(None, out, {"status": "paused", **_progress_figures(state)})

    return _save_result(run, out, images, split, state, source=source, selection=selection, started=started)


def _save_result(
    run: _Run,
    out: Path,
    images: pd.DataFrame,
    split: _Split,
    state: dict,
    *,
    source: dict | None,
    selection: dict | None,
    started: float,
) -> TrainResult:
    """Save the model (the best validated epoch's weights, or the last epoch's without validation)
    and train.json, which then says the run finished: the checkpoint is spent."""
    model = run.model
    if state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    model.to(memory_format=torch.contiguous_format).eval()  # safetensors wants contiguous tensors
    save_model(model, run.preprocess, out)
    record = {
        "status": "finished",
        "config": run.config.to_dict(),
        "start_weights": run.backbone.weights_id,
        "model": {
            "folder": str(out.resolve()),
            "files": list(MODEL_FILES),
            "architecture": model.pretrained_cfg.get("architecture"),
            "dim": run.backbone.dim,
            "preprocess": dataclasses.asdict(run.preprocess),
            "use": f"--backbone local-dir:{out.resolve()}",
        },
        "data": _data_record(images, split, source),
        "device": str(run.device),
        "bf16_autocast": run.amp,
        **({"selection": selection} if selection is not None else {}),
        **_progress_figures(state),
        "resumed_after_epochs": state["resumed_from"],
        "wall_time_s": round(state["seconds_before"] + time.perf_counter() - started, 1),
        "versions": {"torch": torch.__version__, "timm": _timm_version()},
    }
    write_text_atomic(out / RECORD, json.dumps(record, indent=2, default=str))
    (out / CHECKPOINT).unlink(missing_ok=True)  # train.json now says finished; the checkpoint is spent
    model.to(run.device)
    trained = Backbone(f"local-dir:{out}", model, run.preprocess, folder_fingerprint(out), run.backbone.dim)
    return TrainResult(trained, out, record)


@dataclass
class _Split:
    """The training images of one run: each one's role, its pixels, and the rows trained on (with
    their labels, indices into ``classes``) and held out for validation."""

    roles: np.ndarray
    loaded: LoadedImages
    usable: np.ndarray  # readable
    fit_rows: np.ndarray
    val_rows: np.ndarray
    classes: list
    labels: list[int]


def _split_and_load(images: pd.DataFrame, config: TrainConfig, preprocess: Preprocess, progress: bool) -> _Split:
    roles = split_validation(images, config.val_fraction, config.seed)
    loaded = load_pixels(
        images["path"].tolist(), preprocess, source_size(preprocess.size, config.augment.min_crop_scale), progress
    )
    failures = loaded.failures
    if failures:
        tqdm.write(f"{len(failures)} unreadable image(s) left out, e.g. {next(iter(failures.values()))}")
    usable = np.array([i not in failures for i in range(len(images))])
    fit_rows = np.flatnonzero(usable & (roles == TRAIN))
    val_rows = np.flatnonzero(usable & (roles != TRAIN))
    classes = sorted(set(images["identity"].iloc[fit_rows]))
    if len(classes) < 2:
        raise TrainError(
            f"only {len(classes)} identity left to train on after holding out validation "
            "images; lower --val-fraction or add images."
        )
    label_of = {identity: index for index, identity in enumerate(classes)}
    labels = [label_of[i] for i in images["identity"].iloc[fit_rows]]
    return _Split(roles, loaded, usable, fit_rows, val_rows, classes, labels)


def _data_record(images: pd.DataFrame, split: _Split, source: dict | None) -> dict:
    """What train.json says about the data: where from, how many, and which photos by content."""
    roles, fit_rows, val_rows = split.roles, split.fit_rows, split.val_rows
    return {
        **(source or {}),
        "images": int(len(images)),
        "identities": int(images["identity"].nunique()),
        "train_images": int(len(fit_rows)),
        "train_identities": len(split.classes),
        "val_images_of_trained_identities": int((roles[val_rows] == VAL_IMAGE).sum()),
        "val_images_of_held_out_identities": int((roles[val_rows] == VAL_IDENTITY).sum()),
        "val_held_out_identities": int(images["identity"][roles == VAL_IDENTITY].nunique()),
        # With a split file, the training part may hold queries of the dataset's own split.
        "trained_images_marked_query": int(images["was_query"].iloc[fit_rows].sum()),
        "unreadable": {images["image_id"].iloc[i]: error for i, error in split.loaded.failures.items()},
        # By content (SHA-256), so identification can tell which database photos this model
        # has seen, wherever they are stored later (see trained_on).
        "trained_image_hashes": [split.loaded.hashes[row] for row in fit_rows],
        "held_out_image_hashes": [split.loaded.hashes[row] for row in val_rows],
    }


@dataclass
class _Run:
    """What every epoch of one run works with."""

    config: TrainConfig
    backbone: Backbone  # its model is the one trained
    preprocess: Preprocess
    head: ArcFaceHead
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    amp: bool
    progress: bool

    @property
    def model(self) -> torch.nn.Module:
        return self.backbone.model


def _start_or_resume(run: _Run, checkpoint_path: Path, fingerprint: str) -> dict:
    """The run's progress: a fresh start, or where the checkpoint of an interrupted run left it."""
    state = {
        "epoch": 0,
        "history": [],
        "best_score": -1.0,
        "best_epoch": None,
        "best_weights": None,
        "stale": 0,
        "stopped_early": False,
        "resumed_from": [],
        "seconds_before": 0.0,
    }
    if checkpoint_path.exists():
        state = resume_checkpoint(
            checkpoint_path, run.config, fingerprint, run.model, run.head, run.optimizer, run.scheduler, run.device
        )
        state["resumed_from"].append(state["epoch"])
        tqdm.write(f"resuming from {checkpoint_path} after epoch {state['epoch']}")
    return state


def _loader_workers(config: TrainConfig, device: torch.device) -> int:
    # Augmentation runs in worker processes, overlapping the model. On CPU one is enough (it needs
    # ~3 ms per image against the model's ~100 ms) and torch runs it single-threaded there, which on
    # a small busy machine is many times faster than in the main process's thread pool.
    return (
        config.num_workers
        if config.num_workers is not None
        else (min(8, os.cpu_count() or 1) if device.type == "cuda" else 1)
    )


def _validate_start(run: _Run, state: dict, validation: Validation) -> None:
    """Epoch 0: the starting weights. If no epoch beats them, they are what is saved: training
    must earn its place."""
    figures = {"epoch": 0, **validation.evaluate(run.model, run.device, run.amp, run.config.batch_size)}
    state.update(best_score=figures[run.config.monitor], best_epoch=0, best_weights=cpu_copy(run.model.state_dict()))
    state["history"].append(figures)
    tqdm.write(f"before training: validation mAP {figures['val_map']:.3f}, top-1 {figures['val_top1']:.3f}")


def _train_and_validate_epoch(
    run: _Run, state: dict, augmented: AugmentedImages, validation: Validation, batch_size: int, workers: int
) -> None:
    """One more epoch: train, validate, and note it in ``state`` (history, best weights, patience)."""
    config, model = run.config, run.model
    epoch_started = time.perf_counter()
    epoch = state["epoch"] + 1
    # The shuffle order depends only on the seed and the epoch, so a resumed run sees the same
    # batches as one that was never interrupted.
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    loader = torch.utils.data.DataLoader(
        augmented,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=generator,
        pin_memory=run.device.type == "cuda",
    )
    # A bar updated by hand (not wrapping the loader): it must stay open after the last batch
    # to show the validation figures.
    bar = tqdm(
        total=len(loader),
        desc=f"epoch {epoch}/{config.epochs}",
        unit="batch",
        disable=not run.progress,
        leave=True,
        dynamic_ncols=True,
    )
    head_only = epoch <= _head_epochs(config)
    model.train(config.update_norm_statistics and not head_only)
    figures = {
        "epoch": epoch,
        **_train_epoch(model, run.head, loader, run.optimizer, run.scheduler, run.device, run.amp, head_only, bar),
    }
    if validation.rows.size:
        figures.update(validation.evaluate(model, run.device, run.amp, config.batch_size))
        if figures[config.monitor] > state["best_score"]:
            state.update(
                best_score=figures[config.monitor],
                best_epoch=epoch,
                stale=0,
                best_weights=cpu_copy(model.state_dict()),
            )
        else:
            state["stale"] += 1
            state["stopped_early"] = state["stale"] >= config.patience
        bar.set_postfix(
            loss=f"{figures['loss']:.3f}",
            acc=f"{figures['train_accuracy']:.3f}",
            val_map=f"{figures['val_map']:.3f}",
            val_top1=f"{figures['val_top1']:.3f}",
            best=f"{state['best_score']:.3f}",
        )
    bar.close()
    figures["seconds"] = time.perf_counter() - epoch_started
    state["history"].append(figures)
    state["epoch"] = epoch


def _progress_figures(state: dict) -> dict:
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), {})
    return {
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_val_top1": best.get("val_top1"),
        "best_val_map": best.get("val_map"),
        "stopped_early": state["stopped_early"],
        "history": state["history"],
    }


def _train_epoch(model, head, loader, optimizer, scheduler, device, amp: bool, head_only: bool, bar) -> dict:
    """One pass over the training images; returns the epoch's mean loss and training accuracy.

    Head-only epochs come first ("linear probing, then fine-tuning", Kumar et al. 2022): gradients
    from a random head would otherwise wreck the pretrained features in the first steps. The frozen
    backbone runs without autograd, so those epochs are also about three times cheaper.
    """
    loss_sum = correct = seen = 0.0
    for batch, labels in loader:
        batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp), torch.set_grad_enabled(not head_only):
            features = model(batch)
        loss, cosine = head(features.float(), labels)  # the loss in float32 even under autocast
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(batch)
        correct += (cosine.argmax(1) == labels).sum().item()
        seen += len(batch)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        bar.update()
    return {
        "loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "lr": optimizer.param_groups[0]["lr"],
        "head_lr": optimizer.param_groups[2]["lr"],
        "head_only": head_only,
    }


def _training_preprocess(backbone: Backbone, image_size: int | None) -> Preprocess:
    if image_size is None:
        return backbone.preprocess
    if backbone.model.pretrained_cfg.get("fixed_input_size"):
        height, width = backbone.preprocess.size
        raise TrainError(f"{backbone.name} only takes {height}x{width} pictures; leave --image-size out.")
    return dataclasses.replace(backbone.preprocess, size=(image_size, image_size))


def _optimizer(model, head, config: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay on weight matrices and kernels only: decaying biases and normalisation scales
    # only shrinks the features.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": list(head.parameters()), "weight_decay": 0.0, "lr": config.lr * config.head_lr_factor},
        ],
        lr=config.lr,
    )


def _head_epochs(config: TrainConfig) -> int:
    return min(config.head_epochs, config.epochs - 1)


def _schedules(config: TrainConfig, steps_per_epoch: int) -> list:
    """Learning-rate factors per step for the optimiser's groups (backbone x2, head): the backbone
    waits out the head-only epochs, warms up linearly, then follows a cosine to zero; the head
    learns at full rate alone, then follows the same cosine."""
    start = _head_epochs(config) * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch

    def cosine(step: int) -> float:
        progress = (step - start - warmup) / max(1.0, total - start - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def backbone(step: int) -> float:
        if step < start:
            return 0.0
        if step < start + warmup:
            return (step - start + 1) / (warmup + 1)
        return cosine(step)

    def head(step: int) -> float:
        return 1.0 if step < start + warmup else cosine(step)

    return [backbone, backbone, head]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _timm_version() -> str:
    import timm

    return timm.__version__
