"""Choosing the training settings by validation on the database images alone.

`wildreid train` without ``--flip/--no-flip``, ``--lr`` or ``--epochs`` chooses what it was not
given here, then trains the model:

1. **Validation split** (train.split_validation, the split every training run uses): about
   ``--val-fraction`` of the *training* images is held out, half as whole identities (like new
   individuals) and half as single images of identities that stay in training (like new photos of
   known ones), each ranked against the held-out images and the training images of its identity.
   The figure compared is validation mAP (TrainConfig.monitor; ties broken by top-1): on a few
   dozen photos top-1 jumps by several points from one epoch to the next, mAP much less. Queries,
   and any image outside the training images, are never read: nothing here sees a test label.
2. **Candidates**: every combination of the settings not given (flips off/on, learning rates
   3e-4 and 1e-3 by default), each with the same schedule of ``max_epochs`` epochs, the same seed,
   split and initialisation, so they differ only in what is being chosen.
3. **Successive halving** (Jamieson & Talwalkar 2016; the rung rule of Hyperband): all candidates
   train ``first_rung`` epochs, the better half (by the best validation figure so far) continues to
   twice as many, and so on until one is left, which trains to the end of its schedule with early
   stopping. Its best epoch is the number of epochs chosen. Four candidates cost about 44 epochs
   of training instead of 80 for training each to the end. Every candidate is an ordinary,
   resumable training run paused between rungs (train(stop_after=...)), so a killed search
   continues where it stopped.
4. **Final model**: by default (``refit``) trained again on *every* training image with the chosen
   settings, for the chosen number of epochs (with the schedule fitted to them, so it anneals;
   more images make each epoch longer, so the steps grow with the data), without validation. With
   ``refit=False`` the chosen run itself is the model: it keeps the validation photos held out,
   which identification then uses to calibrate thresholds and fusion on photos the model never saw.

Everything is recorded in the final train.json under ``selection``: what was searched, each
round's candidates and validation figures, each candidate's epoch history, and what was chosen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from wildreid.describe.trained import RECORD, TrainError
from wildreid.train.checkpoint import CHECKPOINT, MODEL_FILES, prepare_out_dir
from wildreid.train.finetune import TrainConfig, TrainResult, train
from wildreid.train.images import TRAIN, VAL_IDENTITY, VAL_IMAGE, split_validation
from wildreid.util.files import atomic_path, write_text_atomic

SEARCHABLE = ("flip", "lr", "epochs")
SEARCH_DIR = "search"  # inside the output folder, removed once the final model is saved
PLAN = "plan.json"  # what the search in SEARCH_DIR is for; a re-run must match it to continue
SELECTION = "selection.json"  # written when the search ends: the final training resumes from it


@dataclass(frozen=True)
class SearchSpace:
    """What is tried for each setting the user did not give."""

    flip: tuple[bool, ...] = (False, True)
    # Around the fixed default (3e-4) and a step up: AdamW fine-tuning of small ImageNet CNNs
    # usually works between 1e-4 and 1e-3; two values keep four candidates affordable on a CPU.
    lr: tuple[float, ...] = (3e-4, 1e-3)
    max_epochs: int = 20  # schedule of the search's runs when the epochs are chosen
    # Epochs every candidate trains before the first cut: the 2 head-only ones, 1 of warm-up, then 3
    # at full rate. After 4 (one at full rate) the four LionData candidates' mAPs lay within 0.005.
    first_rung: int = 6

    def __post_init__(self):
        if not self.flip or not self.lr or self.max_epochs < 1 or self.first_rung < 1:
            raise ValueError("a search space needs at least one flip and lr value and positive epochs")


# A runner trains one candidate until the given epoch (or to its end) and returns its train.json
# record (status "paused" or "finished", "history" with val_top1/val_map per epoch). The default is
# train() in the candidate's folder; tests inject their own.
Runner = Callable[[pd.DataFrame, TrainConfig, Path, int], dict]


def free_settings(flip: bool | None, lr: float | None, epochs: int | None) -> set[str]:
    """The searchable settings the user left out (None)."""
    return {name for name, value in zip(SEARCHABLE, (flip, lr, epochs)) if value is None}


def candidate_configs(config: TrainConfig, free: set[str], space: SearchSpace) -> list[TrainConfig]:
    """One configuration per combination of the free settings' values; given settings stay."""
    unknown = set(free) - set(SEARCHABLE)
    if unknown:
        raise ValueError(f"cannot search {sorted(unknown)}; searchable: {SEARCHABLE}")
    flips = space.flip if "flip" in free else (config.augment.flip,)
    rates = space.lr if "lr" in free else (config.lr,)
    epochs = space.max_epochs if "epochs" in free else config.epochs
    return [
        dataclasses.replace(config, lr=lr, epochs=epochs, augment=dataclasses.replace(config.augment, flip=flip))
        for flip in flips
        for lr in rates
    ]


def candidate_name(config: TrainConfig) -> str:
    return f"flip-{'on' if config.augment.flip else 'off'}_lr-{config.lr:g}"


def best_epoch(history: list[dict], until: int, monitor: str = "val_map") -> dict:
    """The epoch (of those up to ``until``) with the best ``monitor`` figure, the first of equals:
    the epoch train() keeps."""
    rows = [h for h in history if h["epoch"] <= until and monitor in h]
    if not rows:
        raise TrainError("the settings search needs validation figures; is --val-fraction above 0?")
    return max(rows, key=lambda h: h[monitor])  # max() returns the first of equals


def _rank_key(figures: dict, monitor: str) -> tuple[float, float]:
    """Candidates compare by the monitored figure at their best epoch, then by the other one."""
    other = "val_top1" if monitor == "val_map" else "val_map"
    return figures[monitor], figures.get(other, 0.0)


def successive_halving(
    images: pd.DataFrame, configs: list[TrainConfig], folders: list[Path], run: Runner, first_rung: int
) -> tuple[int, list[dict], list[dict]]:
    """Train all candidates ``first_rung`` epochs, keep the better half, double the epochs, and so
    on; the last one left trains to the end of its schedule. Returns the winner's index, the rounds
    (epochs, validation figures per candidate, who was kept) and every candidate's last record."""
    alive = list(range(len(configs)))
    records: list[dict] = [{} for _ in configs]
    rounds = []
    until = first_rung
    while True:
        if len(alive) == 1:
            until = configs[alive[0]].epochs
        until = min(until, max(configs[i].epochs for i in alive))
        for i in alive:
            records[i] = run(images, configs[i], folders[i], until)
        best = {i: best_epoch(records[i]["history"], until, configs[i].monitor) for i in alive}
        # Stable sort: on a perfect tie the earlier candidate (the grid's order) wins.
        ranked = sorted(alive, key=lambda i: _rank_key(best[i], configs[i].monitor), reverse=True)
        kept = ranked[: math.ceil(len(alive) / 2)] if len(alive) > 1 else ranked
        rounds.append(
            {
                "epochs": until,
                "validation": {
                    candidate_name(configs[i]): {
                        "val_top1": best[i]["val_top1"],
                        "val_map": best[i].get("val_map"),
                        "best_epoch": best[i]["epoch"],
                        "epochs_run": records[i]["epochs_run"],
                    }
                    for i in alive
                },
                "kept": [candidate_name(configs[i]) for i in kept],
            }
        )
        tqdm.write(
            f"search, {until} epochs, validation {configs[alive[0]].monitor}: "
            + ", ".join(f"{candidate_name(configs[i])} {best[i][configs[i].monitor]:.3f}" for i in ranked)
            + f" -> {', '.join(candidate_name(configs[i]) for i in kept)}"
        )
        if len(alive) == 1:
            return alive[0], rounds, records
        alive = kept
        until *= 2


def choose_settings(
    images: pd.DataFrame,
    folder: Path,
    config: TrainConfig,
    free: set[str],
    space: SearchSpace = SearchSpace(),
    *,
    run: Runner | None = None,
    progress: bool = True,
) -> dict:
    """Search ``free`` settings by validation on ``images`` (training images only), candidates
    trained in subfolders of ``folder``. Returns the selection record (see the module docstring)."""
    _needs_validation(config, free)
    started = time.perf_counter()
    configs = candidate_configs(config, free, space)
    folders = [folder / candidate_name(c) for c in configs]
    run = run or _train_candidate(progress)
    winner, rounds, records = successive_halving(images, configs, folders, run, space.first_rung)
    chosen = configs[winner]
    roles = split_validation(images, config.val_fraction, config.seed)
    best = best_epoch(records[winner]["history"], chosen.epochs, chosen.monitor)
    epochs = chosen.epochs if "epochs" not in free else max(1, best["epoch"])
    return {
        "searched": sorted(free, key=SEARCHABLE.index),
        "space": {
            "flip": list(space.flip) if "flip" in free else [config.augment.flip],
            "lr": list(space.lr) if "lr" in free else [config.lr],
            "schedule_epochs": chosen.epochs,
            "first_rung": space.first_rung,
        },
        "method": f"successive halving (keep the better half, double the epochs) on validation {config.monitor} "
        "at each candidate's best epoch so far; the survivor trains to the end with early stopping",
        "validation": {
            "fraction": config.val_fraction,
            "seed": config.seed,
            "train_images": int((roles == TRAIN).sum()),
            "val_images_of_trained_identities": int((roles == VAL_IMAGE).sum()),
            "val_images_of_held_out_identities": int((roles == VAL_IDENTITY).sum()),
        },
        "rounds": rounds,
        "candidates": {
            candidate_name(c): {
                "flip": c.augment.flip,
                "lr": c.lr,
                "epochs_run": r["epochs_run"],
                "status": r["status"],
                "history": r["history"],
            }
            for c, r in zip(configs, records)
        },
        "chosen": {
            "flip": chosen.augment.flip,
            "lr": chosen.lr,
            "epochs": epochs,
            "val_top1": best["val_top1"],
            "val_map": best.get("val_map"),
            "best_epoch": best["epoch"],
        },
        "search_wall_time_s": round(time.perf_counter() - started, 1),
    }


def _train_candidate(progress: bool) -> Runner:
    def run(images: pd.DataFrame, config: TrainConfig, folder: Path, until: int) -> dict:
        if (folder / RECORD).exists() and not (folder / CHECKPOINT).exists():
            return json.loads((folder / RECORD).read_text())  # finished in an earlier round or run
        return train(images, folder, config, stop_after=until, progress=progress).record

    return run


def train_with_search(
    images: pd.DataFrame,
    out: str | Path,
    config: TrainConfig,
    free: set[str],
    space: SearchSpace = SearchSpace(),
    *,
    refit: bool = True,
    source: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
    run: Runner | None = None,
) -> TrainResult:
    """Choose the ``free`` settings by validation (:func:`choose_settings`), then train the model
    in ``out`` with them (on every image with ``refit``, else keep the chosen validated run).
    Resumable at every stage: candidates and the final run each keep their checkpoint."""
    _needs_validation(config, free)
    out = Path(out)
    search = out / SEARCH_DIR
    if overwrite and search.exists():
        shutil.rmtree(search)
    prepare_out_dir(out, overwrite)
    _check_plan(search, images, config, free, space, refit)
    selection_path = search / SELECTION
    if selection_path.exists():
        selection = json.loads(selection_path.read_text())
        tqdm.write(f"settings already chosen ({selection_path}): {selection['chosen']}")
    else:
        selection = choose_settings(images, search, config, free, space, run=run, progress=progress)
        write_text_atomic(selection_path, json.dumps(selection, indent=2, default=str))
    chosen = selection["chosen"]
    winner = search / candidate_name(
        dataclasses.replace(config, lr=chosen["lr"], augment=dataclasses.replace(config.augment, flip=chosen["flip"]))
    )
    for folder in search.iterdir():  # the others' checkpoints are large, and their figures are recorded
        if folder.is_dir() and (refit or folder != winner):
            shutil.rmtree(folder)
    tqdm.write(f"chosen by validation: flip {chosen['flip']}, lr {chosen['lr']:g}, {chosen['epochs']} epochs")
    final = dataclasses.replace(
        config,
        lr=chosen["lr"],
        epochs=chosen["epochs"],
        augment=dataclasses.replace(config.augment, flip=chosen["flip"]),
    )
    if refit:
        selection["final"] = f"trained again on all {len(images)} training images, no validation"
        result = train(
            images,
            out,
            dataclasses.replace(final, val_fraction=0.0),
            source=source,
            selection=selection,
            progress=progress,
        )
    else:
        selection["final"] = "the chosen search run itself (its validation images held out)"
        result = _adopt(winner, out, selection, source)
    shutil.rmtree(search)  # the candidates' checkpoints are large; train.json keeps their figures
    return result


def _needs_validation(config: TrainConfig, free: set[str]) -> None:
    if config.val_fraction <= 0:
        raise TrainError(
            "choosing " + ", ".join(sorted(free, key=SEARCHABLE.index)) + " needs validation images, and "
            "--val-fraction is 0: give a --val-fraction above 0, or give --flip/--no-flip, --lr and --epochs."
        )


def _adopt(run_folder: Path, out: Path, selection: dict, source: dict | None) -> TrainResult:
    """Make the chosen candidate's finished run the model in ``out``."""
    from wildreid.describe.backbones import load_backbone

    record = json.loads((run_folder / RECORD).read_text())
    record["selection"] = selection
    record["data"].update(source or {})
    record["model"]["folder"] = str(out.resolve())
    record["model"]["use"] = f"--backbone local-dir:{out.resolve()}"
    # Copied, not moved: a run killed here finds the chosen run intact and adopts it again.
    # Weights first, config last, as save_model does.
    for name in reversed(MODEL_FILES):
        with atomic_path(out / name) as temporary:
            shutil.copyfile(run_folder / name, temporary)
    write_text_atomic(out / RECORD, json.dumps(record, indent=2, default=str))
    return TrainResult(load_backbone(f"local-dir:{out}"), out, record)


def _check_plan(
    search: Path, images: pd.DataFrame, config: TrainConfig, free: set[str], space: SearchSpace, refit: bool
) -> None:
    """A search folder left by a killed run continues only for the same images and settings."""
    settings = {k: v for k, v in config.result_settings().items() if k not in free}
    plan = {
        "free": sorted(free),
        "space": dataclasses.asdict(space),
        "settings": settings,
        "refit": refit,
        "images": hashlib.sha256(
            "\n".join(f"{i}|{identity}" for i, identity in zip(images["image_id"], images["identity"])).encode()
        ).hexdigest(),
    }
    plan = json.loads(json.dumps(plan, sort_keys=True, default=str))
    path = search / PLAN
    if path.exists():
        if json.loads(path.read_text()) != plan:
            raise TrainError(
                f"{search} holds a settings search for other images or settings; run the same command "
                "again, choose another --out, or pass --overwrite to start again."
            )
        return
    search.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(plan, indent=2))
