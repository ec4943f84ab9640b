"""Fine-tune a backbone for re-identification with an angular-margin (ArcFace) loss.

The trained network is the same timm model that identification uses: pooled features, no extra
layer. It is saved in timm's ``local-dir`` layout (config.json + model.safetensors, without the
ArcFace head), so ``--backbone local-dir:DIR`` and every preset use it unchanged, with the
preprocessing it was trained with.

Only database images are ever trained on (or, with a split file, the rows it marks for training).
A validation part is held out of them, both as whole identities (like new individuals at test time)
and as single images of identities that are trained on (like known individuals); validation mAP
picks the best epoch and stops training early.

A run can be killed at any moment: every epoch ends with an atomically written checkpoint
(model, head, optimiser, schedule, RNG states, best weights so far), and the same command
started again resumes after the last finished epoch. ``train.json`` beside the model records the
settings, the data and every epoch's figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from tqdm.auto import tqdm

from wildreid.data.dataset import DATABASE, QUERY, Dataset, read_text_csv
from wildreid.data.images import ImageReadError, content_hash, decode_image, read_image_bytes
from wildreid.describe.backbones import (
    OFFLINE_LITE0,
    Backbone,
    Preprocess,
    folder_fingerprint,
    load_backbone,
)
from wildreid.describe.extract import PIL_INTERPOLATION, default_device, pixels_to_input
from wildreid.describe.trained import RECORD, TrainError
from wildreid.train.augment import AugmentConfig, train_transform
from wildreid.util.files import atomic_path, write_text_atomic

CHECKPOINT = "checkpoint.pt"
MODEL_FILES = ("config.json", "model.safetensors")

# Validation figures that can pick the best epoch (TrainConfig.monitor).
MONITORS = ("val_map", "val_top1")

# Roles of the training images.
TRAIN = "train"
VAL_IMAGE = "val_image"  # held-out image of an identity that is trained on
VAL_IDENTITY = "val_identity"  # image of an identity held out entirely


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
# Which images to train on


def training_images(
    dataset: Dataset, *, split_file: str | Path | None = None, split_column: str = "split", train_value: str = DATABASE
) -> pd.DataFrame:
    """The rows of ``dataset`` to train on: image_id, identity, path, plus ``was_query``.

    By default the database images (never the queries). ``split_column``/``train_value`` pick
    another column of the metadata, and ``split_file`` (a CSV with ``image_id`` and
    ``split_column``, e.g. LionData's paper_split.csv) joins that column in by image_id.
    """
    table = dataset.table
    if split_file is not None:
        split_file = Path(split_file)
        split = read_text_csv(split_file, "split file")
        missing = [c for c in ("image_id", split_column) if c not in split.columns]
        if missing:
            raise TrainError(
                f"{split_file}: missing column(s) {missing}; it has {list(split.columns)}. "
                "A split file needs 'image_id' and the column named by --split-column."
            )
        if split["image_id"].duplicated().any():
            twice = split.loc[split["image_id"].duplicated(), "image_id"].head(5).tolist()
            raise TrainError(f"{split_file}: image_id listed more than once (e.g. {twice}).")
        unknown = sorted(set(split["image_id"]) - set(table["image_id"]))
        if unknown:
            raise TrainError(
                f"{split_file}: {len(unknown)} image_id(s) not in {dataset.source} "
                f"(e.g. {unknown[:5]}); the split file must belong to this dataset."
            )
        # Images the split file does not list are simply not trained on.
        values = table["image_id"].map(dict(zip(split["image_id"], split[split_column])))
        source = f"{split_file} column '{split_column}'"
    else:
        if split_column not in table.columns:
            raise TrainError(
                f"{dataset.source}: no column '{split_column}' to choose training images "
                f"from; it has {list(table.columns)}. Name one with --split-column, or "
                "give a CSV of image_id and that column with --split-file."
            )
        values = table[split_column]
        source = f"{dataset.source} column '{split_column}'"
    if split_column == "split" and split_file is None and train_value != DATABASE:
        raise TrainError(
            f"training images come from the database, not '{train_value}': "
            "queries are what a trained model is tested on."
        )
    chosen = values.astype(str).str.strip() == train_value
    if not chosen.any():
        found = sorted(set(values.dropna().astype(str)))[:10]
        raise TrainError(
            f"{source}: no row has the value '{train_value}' (values found: {found}). "
            "Pass the value that marks training images with --train-value."
        )
    rows = table[chosen]
    unlabelled = rows["identity"].isna()
    if unlabelled.any():
        raise TrainError(
            f"{source}: {int(unlabelled.sum())} training image(s) without identity (e.g. "
            f"image_id {rows.loc[unlabelled, 'image_id'].head(5).tolist()}); label them or "
            "leave them out of the training part."
        )
    images = rows[["image_id", "identity", "path"]].reset_index(drop=True)
    images["was_query"] = (rows["split"] == QUERY).to_numpy()
    if images["identity"].nunique() < 2:
        raise TrainError(
            f"{source}: the training images show {images['identity'].nunique()} "
            "identity; telling animals apart needs at least 2."
        )
    return images


def split_validation(images: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """A role per image: TRAIN, VAL_IDENTITY (whole identities held out) or VAL_IMAGE (one image of
    an identity that stays in training). About half the validation images are of each kind."""
    roles = np.full(len(images), TRAIN, dtype=object)
    wanted = int(round(fraction * len(images)))
    if wanted == 0:
        return roles
    rng = np.random.default_rng(seed)
    counts = images["identity"].value_counts()
    # Whole identities: only those with 2+ images (an image needs a match to be a test at all).
    # At least 2 identities must stay in training for the loss to mean anything.
    held: list[str] = []
    budget = wanted // 2
    for identity in rng.permutation(sorted(counts[counts >= 2].index)):
        if counts[identity] <= budget - counts[held].sum() and len(counts) - len(held) > 2:
            held.append(identity)
    roles[images["identity"].isin(held).to_numpy()] = VAL_IDENTITY
    # Single images: one each from identities that keep at least 2 training images.
    remaining = wanted - int((roles == VAL_IDENTITY).sum())
    eligible = [i for i in sorted(counts[counts >= 3].index) if i not in held]
    for identity in rng.permutation(eligible)[:remaining]:
        rows = np.flatnonzero((images["identity"] == identity).to_numpy())
        roles[rng.choice(rows)] = VAL_IMAGE
    return roles


# --------------------------------------------------------------------------------------------
# Images, decoded once and kept in memory as uint8


def source_size(size: tuple[int, int], min_crop_scale: float) -> tuple[int, int]:
    """Side of the stored training picture: large enough that the smallest random crop still has
    the model's full input resolution, so crops are never blurred by upsampling."""
    factor = 1 / math.sqrt(min_crop_scale)
    return math.ceil(size[0] * factor), math.ceil(size[1] * factor)


@dataclass
class LoadedImages:
    evaluation: list  # uint8 (C, H, W) at the model's size, exactly as identification resizes; None if unreadable
    training: list  # the augmentation source: the same squash, a little larger
    hashes: list  # SHA-256 of each file's bytes (as extract.content_hashes), None if unreadable
    failures: dict  # index -> why the image could not be read


def load_pixels(
    paths: list[str], preprocess: Preprocess, train_size: tuple[int, int], progress: bool = True
) -> LoadedImages:
    """Read every image once: its evaluation input, its augmentation source and its content hash."""
    interpolation = PIL_INTERPOLATION[preprocess.interpolation]
    height, width = preprocess.size

    def one(path):
        try:
            data = read_image_bytes(path)
            image = decode_image(data, str(path))
        except ImageReadError as error:
            return None, None, None, str(error)
        evaluation = TF.pil_to_tensor(image.resize((width, height), interpolation))
        training = TF.pil_to_tensor(image.resize((train_size[1], train_size[0]), interpolation))
        return evaluation, training, content_hash(data), None

    # Decoding and resizing release the GIL: threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(
            tqdm(pool.map(one, paths), total=len(paths), desc="loading images", unit="img", disable=not progress)
        )
    evaluation, training, hashes, errors = (list(column) for column in zip(*results)) if results else ([],) * 4
    return LoadedImages(evaluation, training, hashes, {i: e for i, e in enumerate(errors) if e})


class _AugmentedImages(torch.utils.data.Dataset):
    def __init__(self, pixels: list[torch.Tensor], labels: list[int], transform):
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int):
        return self.transform(self.pixels[index]), self.labels[index]


# --------------------------------------------------------------------------------------------
# The loss


class ArcFaceHead(torch.nn.Module):
    """Additive angular margin loss (ArcFace, Deng et al. 2019), optionally sub-center
    (Deng et al. 2020: ``sub_centers`` prototypes per identity, the closest one counts).

    Features and prototypes are L2-normalised, so the logits are cosines: training pulls an
    image's feature towards its identity by an angle ``margin`` beyond what is needed, which is
    what makes plain cosine nearest-neighbour search work afterwards.
    """

    def __init__(self, dim: int, classes: int, margin: float, scale: float, sub_centers: int = 1):
        super().__init__()
        self.classes, self.sub_centers, self.margin, self.scale = classes, sub_centers, margin, scale
        self.weight = torch.nn.Parameter(torch.empty(classes * sub_centers, dim))
        torch.nn.init.normal_(self.weight, std=0.01)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, classes) cosine to each identity's nearest prototype."""
        cosine = F.linear(F.normalize(features.float()), F.normalize(self.weight))
        return cosine.view(len(features), self.classes, self.sub_centers).amax(dim=2)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss over the batch, and the plain cosines (for accuracy)."""
        cosine = self.cosine(features)
        target = cosine.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - target * target)
        with_margin = target * math.cos(self.margin) - sine * math.sin(self.margin)  # cos(theta + m)
        # Beyond theta = pi - m, cos(theta + m) would rise again; continue it as a straight line
        # instead (InsightFace's rule), so the loss keeps pushing the wrong way-round images.
        with_margin = torch.where(
            target > math.cos(math.pi - self.margin),
            with_margin,
            target - math.sin(math.pi - self.margin) * self.margin,
        )
        logits = cosine.scatter(1, labels[:, None], with_margin) * self.scale
        return F.cross_entropy(logits, labels), cosine.detach()


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
    _prepare_out_dir(out, overwrite)
    device = torch.device(config.device or default_device())
    amp = device.type == "cuda"  # bf16 autocast: about twice as fast on a GPU, no loss scaling needed
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _seed_everything(config.seed)

    backbone = load_backbone(config.backbone, device="cpu")
    preprocess = _training_preprocess(backbone, config.image_size)
    model = backbone.model

    roles = split_validation(images, config.val_fraction, config.seed)
    loaded = load_pixels(
        images["path"].tolist(), preprocess, source_size(preprocess.size, config.augment.min_crop_scale), progress
    )
    eval_pixels, train_pixels, failures = loaded.evaluation, loaded.training, loaded.failures
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
    head = ArcFaceHead(backbone.dim, len(classes), config.margin, config.scale, config.sub_centers)

    # channels_last: 1.5-2x faster convolutions on CPU and on tensor cores; no effect on the weights.
    model.to(device, memory_format=torch.channels_last)
    head.to(device)
    optimizer = _optimizer(model, head, config)
    batch_size = min(config.batch_size, len(fit_rows))
    steps_per_epoch = max(1, len(fit_rows) // batch_size)  # the last, partial batch is dropped
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedules(config, steps_per_epoch))

    fingerprint = _data_fingerprint(images, roles, usable)
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
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.exists():
        state = _resume(checkpoint_path, config, fingerprint, model, head, optimizer, scheduler, device)
        state["resumed_from"].append(state["epoch"])
        tqdm.write(f"resuming from {checkpoint_path} after epoch {state['epoch']}")

    loader_data = _AugmentedImages(
        [train_pixels[i] for i in fit_rows],
        labels,
        train_transform(preprocess.size, preprocess.mean, preprocess.std, preprocess.interpolation, config.augment),
    )
    # Augmentation runs in worker processes, overlapping the model. On CPU one is enough (it needs
    # ~3 ms per image against the model's ~100 ms) and torch runs it single-threaded there, which on
    # a small busy machine is many times faster than in the main process's thread pool.
    workers = (
        config.num_workers
        if config.num_workers is not None
        else (min(8, os.cpu_count() or 1) if device.type == "cuda" else 1)
    )
    validation = _Validation(images, roles, val_rows, fit_rows, eval_pixels, preprocess)
    if validation.rows.size and not state["history"]:
        # Epoch 0: the starting weights. If no epoch beats them, they are what is saved: training
        # must earn its place.
        figures = {"epoch": 0, **validation.evaluate(model, device, amp, config.batch_size)}
        state.update(best_score=figures[config.monitor], best_epoch=0, best_weights=_cpu_copy(model.state_dict()))
        state["history"].append(figures)
        tqdm.write(f"before training: validation mAP {figures['val_map']:.3f}, top-1 {figures['val_top1']:.3f}")

    last = config.epochs if stop_after is None else min(config.epochs, stop_after)
    while state["epoch"] < last and not state["stopped_early"]:
        epoch_started = time.perf_counter()
        epoch = state["epoch"] + 1
        # The shuffle order depends only on the seed and the epoch, so a resumed run sees the same
        # batches as one that was never interrupted.
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        loader = torch.utils.data.DataLoader(
            loader_data,
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            generator=generator,
            pin_memory=device.type == "cuda",
        )
        # A bar updated by hand (not wrapping the loader): it must stay open after the last batch
        # to show the validation figures.
        bar = tqdm(
            total=len(loader),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not progress,
            leave=True,
            dynamic_ncols=True,
        )
        head_only = epoch <= _head_epochs(config)
        model.train(config.update_norm_statistics and not head_only)
        figures = {
            "epoch": epoch,
            **_train_epoch(model, head, loader, optimizer, scheduler, device, amp, head_only, bar),
        }
        if validation.rows.size:
            figures.update(validation.evaluate(model, device, amp, config.batch_size))
            if figures[config.monitor] > state["best_score"]:
                state.update(
                    best_score=figures[config.monitor],
                    best_epoch=epoch,
                    stale=0,
                    best_weights=_cpu_copy(model.state_dict()),
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
        _save_checkpoint(
            checkpoint_path,
            config,
            fingerprint,
            model,
            head,
            optimizer,
            scheduler,
            state,
            state["seconds_before"] + time.perf_counter() - started,
        )
    if state["stopped_early"]:
        tqdm.write(f"stopped early: no better validation {config.monitor} for {config.patience} epochs")
    elif state["epoch"] < config.epochs:
        # Paused (stop_after): the checkpoint is the run; nothing is saved as a model yet.
        return TrainResult(None, out, {"status": "paused", **_progress_figures(state)})

    # The result: the best validated epoch's weights, or the last epoch's without validation.
    if state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    model.to(memory_format=torch.contiguous_format).eval()  # safetensors wants contiguous tensors
    save_model(model, preprocess, out)
    record = {
        "status": "finished",
        "config": config.to_dict(),
        "start_weights": backbone.weights_id,
        "model": {
            "folder": str(out.resolve()),
            "files": list(MODEL_FILES),
            "architecture": model.pretrained_cfg.get("architecture"),
            "dim": backbone.dim,
            "preprocess": dataclasses.asdict(preprocess),
            "use": f"--backbone local-dir:{out.resolve()}",
        },
        "data": {
            **(source or {}),
            "images": int(len(images)),
            "identities": int(images["identity"].nunique()),
            "train_images": int(len(fit_rows)),
            "train_identities": len(classes),
            "val_images_of_trained_identities": int((roles[val_rows] == VAL_IMAGE).sum()),
            "val_images_of_held_out_identities": int((roles[val_rows] == VAL_IDENTITY).sum()),
            "val_held_out_identities": int(images["identity"][roles == VAL_IDENTITY].nunique()),
            # With a split file, the training part may hold queries of the dataset's own split.
            "trained_images_marked_query": int(images["was_query"].iloc[fit_rows].sum()),
            "unreadable": {images["image_id"].iloc[i]: error for i, error in failures.items()},
            # By content (SHA-256), so identification can tell which database photos this model
            # has seen, wherever they are stored later (see trained_on).
            "trained_image_hashes": [loaded.hashes[row] for row in fit_rows],
            "held_out_image_hashes": [loaded.hashes[row] for row in val_rows],
        },
        "device": str(device),
        "bf16_autocast": amp,
        **({"selection": selection} if selection is not None else {}),
        **_progress_figures(state),
        "resumed_after_epochs": state["resumed_from"],
        "wall_time_s": round(state["seconds_before"] + time.perf_counter() - started, 1),
        "versions": {"torch": torch.__version__, "timm": _timm_version()},
    }
    write_text_atomic(out / RECORD, json.dumps(record, indent=2, default=str))
    checkpoint_path.unlink(missing_ok=True)  # train.json now says finished; the checkpoint is spent
    model.to(device)
    trained = Backbone(f"local-dir:{out}", model, preprocess, folder_fingerprint(out), backbone.dim)
    return TrainResult(trained, out, record)


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


class _Validation:
    """Validation top-1 and mAP: each held-out image against a gallery of the other held-out images
    and the training images of the identities that have a held-out image (a match must exist for an
    image to count; the gallery is kept small because it is embedded again every epoch). mAP counts
    every right picture, not only the first, so it moves more smoothly than top-1 on a few dozen
    images (see TrainConfig.monitor)."""

    def __init__(self, images, roles, val_rows, fit_rows, eval_pixels, preprocess):
        identities = images["identity"].to_numpy(dtype=object)
        with_val_image = set(identities[val_rows[roles[val_rows] == VAL_IMAGE]])
        extra = [r for r in fit_rows if identities[r] in with_val_image]
        self.rows = np.asarray(val_rows, dtype=int)
        self.gallery_rows = np.concatenate([self.rows, np.asarray(extra, dtype=int)])
        self.identities = identities[self.gallery_rows]
        self.is_new = roles[self.rows] == VAL_IDENTITY
        self.pixels = [eval_pixels[r] for r in self.gallery_rows]
        self.preprocess = preprocess

    def evaluate(self, model, device, amp: bool, batch_size: int) -> dict:
        vectors = embed(model, self.pixels, self.preprocess, device, amp, batch_size)
        queries = vectors[: len(self.rows)]
        similarity = queries @ vectors.T
        similarity[np.arange(len(queries)), np.arange(len(queries))] = -np.inf  # not itself
        truth = self.identities[: len(self.rows)]
        correct = self.identities[similarity.argmax(1)] == truth
        figures = {
            "val_top1": float(correct.mean()),
            "val_map": mean_average_precision(similarity, truth, self.identities),
        }
        if (~self.is_new).any():
            figures["val_top1_known"] = float(correct[~self.is_new].mean())
        if self.is_new.any():
            figures["val_top1_new"] = float(correct[self.is_new].mean())
        return figures


def mean_average_precision(similarity: np.ndarray, query_identities, gallery_identities) -> float:
    """Mean over queries of the average precision of the gallery ranked by similarity (entries of
    -inf, the query itself, are not part of the ranking). Queries without a match count 0."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    precisions = []
    for row, ranking in enumerate(order):
        ranking = ranking[np.isfinite(similarity[row, ranking])]
        hits = np.asarray(gallery_identities)[ranking] == query_identities[row]
        if not hits.any():
            precisions.append(0.0)
            continue
        ranks = np.flatnonzero(hits) + 1
        precisions.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return float(np.mean(precisions))


@torch.inference_mode()
def embed(model, pixels: list[torch.Tensor], preprocess: Preprocess, device, amp: bool, batch_size: int) -> np.ndarray:
    """L2-normalised embeddings of uint8 pictures already at the model's input size."""
    was_training = model.training
    model.eval()
    vectors = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels_to_input(torch.stack(pixels[start : start + batch_size]), preprocess)
        batch = batch.to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            vectors.append(F.normalize(model(batch).float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(vectors).numpy()


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


def _cpu_copy(state_dict: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def _data_fingerprint(images: pd.DataFrame, roles: np.ndarray, usable: np.ndarray) -> str:
    text = "\n".join(
        f"{i}|{identity}|{role}|{ok}"
        for i, identity, role, ok in zip(images["image_id"], images["identity"], roles, usable)
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _timm_version() -> str:
    import timm

    return timm.__version__


# --------------------------------------------------------------------------------------------
# Output folder, checkpoint, exported model


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TrainError(f"{out}: exists and is not a folder; choose another --out.")
    record = out / RECORD
    if record.exists() and not (out / CHECKPOINT).exists():
        if not overwrite:
            raise TrainError(
                f"{out} already holds a trained model ({record}); choose another --out, "
                "or pass --overwrite to train again from the start."
            )
    if overwrite:
        for name in (CHECKPOINT, RECORD, *MODEL_FILES):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _save_checkpoint(path: Path, config, fingerprint, model, head, optimizer, scheduler, state, seconds: float) -> None:
    """Everything needed to continue exactly where this epoch ended, written atomically: a kill
    while writing leaves the previous epoch's checkpoint intact."""
    payload = {
        "format": 1,
        "settings": json.dumps(config.result_settings(), sort_keys=True, default=str),
        "data": fingerprint,
        "model": _cpu_copy(model.state_dict()),
        "head": _cpu_copy(head.state_dict()),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": {**state, "seconds_before": seconds},
        "rng": {
            "python": random.getstate(),
            "numpy": _numpy_rng_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def _resume(path: Path, config, fingerprint, model, head, optimizer, scheduler, device) -> dict:
    try:
        # weights_only: a checkpoint is data, never code to run.
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != 1:
            raise ValueError("not a wildreid training checkpoint")
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrainError(
            f"{path}: cannot read the checkpoint ({reason}); delete it or pass --overwrite to start again."
        ) from None
    saved = json.loads(payload["settings"])
    now = json.loads(json.dumps(config.result_settings(), sort_keys=True, default=str))
    changed = [
        f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now"
        for k in sorted(set(saved) | set(now))
        if saved.get(k) != now.get(k)
    ]
    if changed:
        raise TrainError(
            f"{path} was written with other settings ({'; '.join(changed)}). Resume with "
            "the same settings, choose another --out, or pass --overwrite to start again."
        )
    if payload["data"] != fingerprint:
        raise TrainError(
            f"{path} was written for other training images (or another validation split); "
            "choose another --out, or pass --overwrite to start again."
        )
    model.load_state_dict(payload["model"])
    head.load_state_dict(payload["head"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    rng = payload["rng"]
    random.setstate(rng["python"])
    _set_numpy_rng_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    model.to(device)
    return payload["state"]


def _numpy_rng_state():
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]


def _set_numpy_rng_state(state) -> None:
    name, keys, position, has_gauss, gauss = state
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))


def save_model(model: torch.nn.Module, preprocess: Preprocess, out: Path) -> None:
    """timm's local-dir layout: config.json (architecture, num_features, pretrained_cfg with the
    input size, mean, std and interpolation trained with) and model.safetensors. The model has no
    classifier (num_classes 0) and the ArcFace head is not part of it."""
    from timm.models import save_for_hf

    export = out / ".export"
    data_config = {
        "input_size": (3, *preprocess.size),
        "mean": tuple(preprocess.mean),
        "std": tuple(preprocess.std),
        "interpolation": preprocess.interpolation,
        # A plain resize of the whole picture, as wildreid's preprocessing does it.
        "crop_pct": 1.0,
    }
    save_for_hf(model, export, safe_serialization=True, data_config=data_config)
    # Weights first, config last: load_backbone needs config.json, so a folder is never taken for
    # a model before both files are complete.
    for name in reversed(MODEL_FILES):
        os.replace(export / name, out / name)
    export.rmdir()
