"""`wildreid train`: fine-tune a backbone with ArcFace on a dataset's labelled photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from wildreid.cli.app import OptionGroup, app, console
from wildreid.cli.options import (
    AllowOutsidePaths,
    DatasetColumns,
    DatasetRoot,
    Device,
    IdentityColumn,
    ImageIdColumn,
    PathColumn,
    QueryDir,
)


@dataclass(frozen=True)
class Hyperparameters(OptionGroup):
    """How the backbone is trained; flip, lr and epochs left out are chosen by validation."""

    epochs: Annotated[
        Optional[int],
        typer.Option(
            help="Most epochs (early stopping may end sooner). Default: chosen by validation (at most 20).",
            show_default=False,
        ),
    ] = None
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32
    lr: Annotated[
        Optional[float],
        typer.Option(
            help="Peak backbone learning rate (AdamW, warm-up then cosine); the ArcFace head's is 10 times higher. "
            "Default: chosen by validation among 3e-4 and 1e-3.",
            show_default=False,
        ),
    ] = None
    image_size: Annotated[
        Optional[int], typer.Option(help="Square input side in pixels (default: the backbone's own).")
    ] = None
    margin: Annotated[float, typer.Option(help="ArcFace angular margin, radians.")] = 0.3
    scale: Annotated[float, typer.Option(help="ArcFace logit scale.")] = 30.0
    sub_centers: Annotated[
        int, typer.Option(help="Prototypes per identity; above 1 is sub-center ArcFace (for very varied pictures).")
    ] = 1
    head_epochs: Annotated[
        int,
        typer.Option(
            help="First epochs that train the ArcFace head alone, the backbone frozen (protects the "
            "pretrained features from a random head)."
        ),
    ] = 2
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Training images held out for validation (half whole identities, half single images); "
            "0 turns validation and early stopping off (then give --flip/--no-flip, --lr and --epochs)."
        ),
    ] = 0.15
    patience: Annotated[int, typer.Option(help="Epochs without a better validation mAP before stopping.")] = 5
    seed: Annotated[int, typer.Option(help="Seed of the validation split, initialisation and augmentation.")] = 0
    flip: Annotated[
        Optional[bool],
        typer.Option(
            "--flip/--no-flip",
            help="Mirror training images at random (only right where an animal's two sides look alike). "
            "Default: chosen by validation.",
            show_default=False,
        ),
    ] = None
    refit: Annotated[
        bool,
        typer.Option(
            "--refit/--no-refit",
            help="When settings were chosen by validation: train the final model again on every training image "
            "(default), or keep the chosen validated run, whose held-out photos identification then uses to "
            "calibrate (better inside the fusion preset).",
        ),
    ] = True
    min_crop_scale: Annotated[
        float, typer.Option(help="Smallest random crop, as a fraction of the picture's area.")
    ] = 0.7
    color_jitter: Annotated[
        float, typer.Option(help="Brightness/contrast jitter (saturation half of it; hue is never shifted); 0: off.")
    ] = 0.3

    def config(self, backbone: str, *, device: str | None, workers: int | None, max_epochs: int):
        """The TrainConfig of these settings; a setting left to validation gets a placeholder the
        search replaces (``max_epochs``, TrainConfig's own learning rate, no flip)."""
        from wildreid.train.augment import AugmentConfig
        from wildreid.train.finetune import TrainConfig

        return TrainConfig(
            backbone=backbone,
            epochs=self.epochs if self.epochs is not None else max_epochs,
            batch_size=self.batch_size,
            lr=self.lr if self.lr is not None else TrainConfig.lr,
            image_size=self.image_size,
            margin=self.margin,
            scale=self.scale,
            sub_centers=self.sub_centers,
            head_epochs=self.head_epochs,
            val_fraction=self.val_fraction,
            patience=self.patience,
            seed=self.seed,
            augment=AugmentConfig(
                min_crop_scale=self.min_crop_scale, color_jitter=self.color_jitter, flip=bool(self.flip)
            ),
            device=device,
            num_workers=workers,
        )


@dataclass(frozen=True)
class TrainingSplit(OptionGroup):
    """Which photos are trained on (default: the database rows)."""

    split_file: Annotated[
        Optional[Path],
        typer.Option(
            help="CSV of image_id and --split-column (e.g. LionData/paper_split.csv), joined to the metadata "
            "by image_id, choosing the training images."
        ),
    ] = None
    split_column: Annotated[
        str, typer.Option(help="Column whose value --train-value marks the training images (default: the database).")
    ] = "split"
    train_value: Annotated[str, typer.Option(help="Value of --split-column that marks training images.")] = "database"

    def images(self, dataset):
        from wildreid.train.finetune import training_images

        return training_images(
            dataset, split_file=self.split_file, split_column=self.split_column, train_value=self.train_value
        )

    def source(self, root: Path) -> dict:
        """Where the training images came from, as train.json records it."""
        return {
            "root": str(root),
            "split_file": str(self.split_file) if self.split_file else None,
            "split_column": self.split_column,
            "train_value": self.train_value,
        }


ModelOut = Annotated[
    Path,
    typer.Option(
        help="Folder for the trained model (config.json + model.safetensors, timm's local-dir layout), "
        "train.json and the resumable checkpoint."
    ),
]
StartingWeights = Annotated[
    str,
    typer.Option(
        help="Starting weights: efficientnet-lite0 (offline), megadescriptor-..., any timm name, "
        "hf-hub:ORG/NAME, local-dir:FOLDER, random:TIMM_NAME."
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Start from scratch even if OUT holds a checkpoint or a trained model.")
]
Workers = Annotated[Optional[int], typer.Option(help="Augmentation processes (default: 1 on CPU, up to 8 with a GPU).")]
Threads = Annotated[
    Optional[int],
    typer.Option(
        help="CPU threads for torch (default: one per core). On a small machine busy with other work, "
        "1 can be several times faster."
    ),
]


@app.command()
def train(
    root: DatasetRoot,
    out: ModelOut,
    backbone: StartingWeights = "efficientnet-lite0",
    settings: Hyperparameters = Hyperparameters(),
    split: TrainingSplit = TrainingSplit(),
    overwrite: Overwrite = False,
    workers: Workers = None,
    threads: Threads = None,
    device: Device = None,
    query_dir: QueryDir = None,
    path_column: PathColumn = "path",
    identity_column: IdentityColumn = "identity",
    image_id_column: ImageIdColumn = "image_id",
    allow_outside_paths: AllowOutsidePaths = False,
):
    """Fine-tune a backbone on the database images with ArcFace; resumable; use it with --backbone local-dir:OUT.

    Flip, learning rate and epochs that are not given are chosen by validation on the database images.
    """
    from wildreid.train.finetune import train as run_training
    from wildreid.train.tuning import SearchSpace, free_settings, train_with_search

    if threads:
        import torch

        torch.set_num_threads(threads)
    columns = DatasetColumns(
        query_dir=query_dir, path_column=path_column, identity_column=identity_column, image_id_column=image_id_column
    )
    dataset = columns.load(root, allow_outside_paths=allow_outside_paths)
    images = split.images(dataset)
    # Settings not given are chosen by validation on the training images (tuning.py).
    free = free_settings(settings.flip, settings.lr, settings.epochs)
    space = SearchSpace()
    config = settings.config(backbone, device=device, workers=workers, max_epochs=space.max_epochs)
    _describe_training(images, dataset, backbone)
    source = split.source(root)
    if free:
        console.print(
            f"choosing {', '.join(sorted(free))} by validation on {settings.val_fraction:.0%} of the training images "
            "(give --flip/--no-flip, --lr and --epochs to skip)"
        )
        result = train_with_search(
            images, out, config, free, space, refit=settings.refit, source=source, overwrite=overwrite
        )
        _describe_choice(result.record["selection"])
    else:
        result = run_training(images, out, config, source=source, overwrite=overwrite)
    _describe_result(result.record, out)


def _describe_training(images, dataset, backbone: str) -> None:
    console.print(
        f"training on [bold]{len(images)}[/] images of [bold]{images['identity'].nunique()}[/] "
        f"identities from {dataset.source}; backbone {backbone}"
    )
    if images["was_query"].any():
        console.print(
            f"[yellow]{int(images['was_query'].sum())} of the training images are queries in "
            f"{dataset.source}: scores on that split would be optimistic.[/]"
        )


def _describe_choice(selection: dict) -> None:
    chosen = selection["chosen"]
    console.print(
        f"chosen: flip {'on' if chosen['flip'] else 'off'}, lr {chosen['lr']:g}, {chosen['epochs']} epoch(s) "
        f"(validation mAP {chosen['val_map']:.3f}, top-1 {chosen['val_top1']:.3f}); "
        f"{selection['final']}",
        highlight=False,
    )


def _describe_result(record: dict, out: Path) -> None:
    best, best_map = record["best_val_top1"], record["best_val_map"]
    console.print(
        f"trained {record['epochs_run']} epoch(s) in {record['wall_time_s']:.0f} s"
        + (
            f"; best validation mAP {best_map:.3f}, top-1 {best:.3f} (epoch {record['best_epoch']})"
            if best is not None
            else ""
        ),
        highlight=False,
    )
    console.print(f"model: {out} (use it with [bold]--backbone local-dir:{out}[/]); record: {out / 'train.json'}")
