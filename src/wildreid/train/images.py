"""Which images a fine-tuning run trains on, which it holds out for validation, and their pixels,
decoded once and kept in memory.

Only database images are ever trained on (or, with a split file, the rows it marks for training).
A validation part is held out of them, both as whole identities (like new individuals at test time)
and as single images of identities that are trained on (like known individuals).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.functional as TF
from tqdm.auto import tqdm

from wildreid.data.dataset import DATABASE, QUERY, Dataset, read_text_csv
from wildreid.data.images import ImageReadError, content_hash, decode_image, read_image_bytes
from wildreid.describe.backbones import Preprocess
from wildreid.describe.cpu_decode import PIL_INTERPOLATION
from wildreid.describe.trained import TrainError

# Roles of the training images.
TRAIN = "train"
VAL_IMAGE = "val_image"  # held-out image of an identity that is trained on
VAL_IDENTITY = "val_identity"  # image of an identity held out entirely


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


class AugmentedImages(torch.utils.data.Dataset):
    """The training pictures, each augmented afresh whenever a loader asks for it, with its label."""

    def __init__(self, pixels: list[torch.Tensor], labels: list[int], transform):
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int):
        return self.transform(self.pixels[index]), self.labels[index]
