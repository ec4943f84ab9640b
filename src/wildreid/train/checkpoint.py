"""The output folder of a fine-tuning run: the checkpoint written after every epoch and resumed
from, and the exported model.

A run can be killed at any moment: every epoch ends with an atomically written checkpoint
(model, head, optimiser, schedule, RNG states, best weights so far), and the same command
started again resumes after the last finished epoch, refusing a checkpoint written with other
settings or other training images.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wildreid.describe.backbones import Preprocess
from wildreid.describe.trained import RECORD, TrainError
from wildreid.util.files import FILE_MODE, atomic_path, current_umask

CHECKPOINT = "checkpoint.pt"
MODEL_FILES = ("config.json", "model.safetensors")


def prepare_out_dir(out: Path, overwrite: bool) -> None:
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


def save_checkpoint(path: Path, config, fingerprint, model, head, optimizer, scheduler, state, seconds: float) -> None:
    """Everything needed to continue exactly where this epoch ended, written atomically: a kill
    while writing leaves the previous epoch's checkpoint intact."""
    payload = {
        "format": 1,
        "settings": json.dumps(config.result_settings(), sort_keys=True, default=str),
        "data": fingerprint,
        "model": cpu_copy(model.state_dict()),
        "head": cpu_copy(head.state_dict()),
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


def resume_checkpoint(path: Path, config, fingerprint, model, head, optimizer, scheduler, device) -> dict:
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
    # Given through the model's pretrained_cfg, which every timm writes to config.json, not through
    # save_for_hf's data_config argument, which older timm lacks (1.0.29 failed here on a GPU
    # machine after training; 1.0.31 has it). The starting weights' test-time sizes are left out:
    # a loader would prefer them to the size trained with. The caller's model is left as it was.
    starting_cfg = getattr(model, "pretrained_cfg", None)
    kept = {k: v for k, v in dict(starting_cfg or {}).items() if not k.startswith("test_")}
    model.pretrained_cfg = {**kept, **data_config}
    try:
        save_for_hf(model, export, safe_serialization=True)
    finally:
        model.pretrained_cfg = starting_cfg
    # Weights first, config last: load_backbone needs config.json, so a folder is never taken for
    # a model before both files are complete.
    for name in reversed(MODEL_FILES):
        # safetensors writes its file 0600 whatever the umask; a model is shared like any output.
        os.chmod(export / name, FILE_MODE & ~current_umask())
        os.replace(export / name, out / name)
    export.rmdir()


def cpu_copy(state_dict: dict) -> dict:
    """Weights copied to host memory: what a checkpoint holds, and the best epoch's weights kept."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def data_fingerprint(images: pd.DataFrame, roles: np.ndarray, usable: np.ndarray) -> str:
    """The training images a checkpoint was written for: each one's id, identity, role and readability."""
    text = "\n".join(
        f"{i}|{identity}|{role}|{ok}"
        for i, identity, role, ok in zip(images["image_id"], images["identity"], roles, usable)
    )
    return hashlib.sha256(text.encode()).hexdigest()
