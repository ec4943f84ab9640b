"""What a model saved by `wildreid train` was trained on, read from its train.json."""

from __future__ import annotations

import json
from dataclasses import dataclass

from wildreid.describe.backbones import local_folder

RECORD = "train.json"


class TrainError(ValueError):
    """Training cannot start or resume as asked; the message says what to change."""


@dataclass(frozen=True)
class TrainedOn:
    """Which photos a model saved by `wildreid train` saw: content hashes."""

    trained: frozenset[str]
    held_out: frozenset[str]


def trained_on(backbone_name: str) -> TrainedOn | None:
    """For a model folder (``local-dir:DIR``, as load_backbone finds it) holding a train.json that
    lists its images: what it was trained on and what was held out for validation. None for any
    other backbone (or an older record)."""
    folder = local_folder(backbone_name)
    record_path = folder / RECORD if folder is not None else None
    if record_path is None or not record_path.is_file():
        return None
    try:
        data = json.loads(record_path.read_text()).get("data", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise TrainError(
            f"{record_path}: not a readable training record ({error}); restore it, or "
            "remove it to use the model without its calibration photos."
        ) from None
    if "trained_image_hashes" not in data:
        return None
    return TrainedOn(frozenset(data["trained_image_hashes"]), frozenset(data.get("held_out_image_hashes", [])))
