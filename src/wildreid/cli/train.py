"""`wildreid train`: fine-tune a backbone with ArcFace on a dataset's labelled photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from wildreid.cli.app import app, console
from wildreid.cli.options import AllowOutsidePaths, Device, IdentityColumn, ImageIdColumn, PathColumn, QueryDir
from wildreid.data.dataset import load_dataset


@app.command()
def train(
    root: Annotated[Path, typer.Argument(help="metadata.csv, a folder holding it, or a folder per identity.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the trained model (config.json + model.safetensors, timm's local-dir layout), "
            "train.json and the resumable checkpoint."
        ),
    ],
    backbone: Annotated[
        str,
        typer.Option(
            help="Starting weights: efficientnet-lite0 (offline), megadescriptor-..., any timm name, "
            "hf-hub:ORG/NAME, local-dir:FOLDER, random:TIMM_NAME."
        ),
    ] = "efficientnet-lite0",
    epochs: Annotated[
        Optional[int],
        typer.Option(
            help="Most epochs (early stopping may end sooner). Default: chosen by validation (at most 20).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[
        Optional[float],
        typer.Option(
            help="Peak backbone learning rate (AdamW, warm-up then cosine); the ArcFace head's is 10 times higher. "
            "Default: chosen by validation among 3e-4 and 1e-3.",
            show_default=False,
        ),
    ] = None,
    image_size: Annotated[
        Optional[int], typer.Option(help="Square input side in pixels (default: the backbone's own).")
    ] = None,
    margin: Annotated[float, typer.Option(help="ArcFace angular margin, radians.")] = 0.3,
    scale: Annotated[float, typer.Option(help="ArcFace logit scale.")] = 30.0,
    sub_centers: Annotated[
        int, typer.Option(help="Prototypes per identity; above 1 is sub-center ArcFace (for very varied pictures).")
    ] = 1,
    head_epochs: Annotated[
        int,
        typer.Option(
            help="First epochs that train the ArcFace head alone, the backbone frozen (protects the "
            "pretrained features from a random head)."
        ),
    ] = 2,
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Training images held out for validation (half whole identities, half single images); "
            "0 turns validation and early stopping off (then give --flip/--no-flip, --lr and --epochs)."
        ),
    ] = 0.15,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation mAP before stopping.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the validation split, initialisation and augmentation.")] = 0,
    flip: Annotated[
        Optional[bool],
        typer.Option(
            "--flip/--no-flip",
            help="Mirror training images at random (only right where an animal's two sides look alike). "
            "Default: chosen by validation.",
            show_default=False,
        ),
    ] = None,
    refit: Annotated[
        bool,
        typer.Option(
            "--refit/--no-refit",
            help="When settings were chosen by validation: train the final model again on every training image "
            "(default), or keep the chosen validated run, whose held-out photos identification then uses to "
            "calibrate (better inside the fusion preset).",
        ),
    ] = True,
    min_crop_scale: Annotated[
        float, typer.Option(help="Smallest random crop, as a fraction of the picture's area.")
    ] = 0.7,
    color_jitter: Annotated[
        float, typer.Option(help="Brightness/contrast jitter (saturation half of it; hue is never shifted); 0: off.")
    ] = 0.3,
    split_file: Annotated[
        Optional[Path],
        typer.Option(
            help="CSV of image_id and --split-column (e.g. LionData/paper_split.csv), joined to the metadata "
            "by image_id, choosing the training images."
        ),
    ] = None,
    split_column: Annotated[
        str, typer.Option(help="Column whose value --train-value marks the training images (default: the database).")
    ] = "split",
    train_value: Annotated[str, typer.Option(help="Value of --split-column that marks training images.")] = "database",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start from scratch even if OUT holds a checkpoint or a trained model.")
    ] = False,
    workers: Annotated[
        Optional[int], typer.Option(help="Augmentation processes (default: 1 on CPU, up to 8 with a GPU).")
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option(
            help="CPU threads for torch (default: one per core). On a small machine busy with other work, "
            "1 can be several times faster."
        ),
    ] = None,
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
    from wildreid.train.augment import AugmentConfig
    from wildreid.train.finetune import TrainConfig, training_images
    from wildreid.train.finetune import train as run_training
    from wildreid.train.tuning import SearchSpace, free_settings, train_with_search

    if threads:
        import torch

        torch.set_num_threads(threads)
    dataset = load_dataset(
        root,
        query_dir=query_dir,
        path_column=path_column,
        identity_column=identity_column,
        image_id_column=image_id_column,
        allow_outside_paths=allow_outside_paths,
    )
    images = training_images(dataset, split_file=split_file, split_column=split_column, train_value=train_value)
    # Settings not given are chosen by validation on the training images (tuning.py); the values
    # here are then only placeholders that the search replaces.
    free = free_settings(flip, lr, epochs)
    space = SearchSpace()
    config = TrainConfig(
        backbone=backbone,
        epochs=epochs if epochs is not None else space.max_epochs,
        batch_size=batch_size,
        lr=lr if lr is not None else TrainConfig.lr,
        image_size=image_size,
        margin=margin,
        scale=scale,
        sub_centers=sub_centers,
        head_epochs=head_epochs,
        val_fraction=val_fraction,
        patience=patience,
        seed=seed,
        augment=AugmentConfig(min_crop_scale=min_crop_scale, color_jitter=color_jitter, flip=bool(flip)),
        device=device,
        num_workers=workers,
    )
    console.print(
        f"training on [bold]{len(images)}[/] images of [bold]{images['identity'].nunique()}[/] "
        f"identities from {dataset.source}; backbone {backbone}"
    )
    if images["was_query"].any():
        console.print(
            f"[yellow]{int(images['was_query'].sum())} of the training images are queries in "
            f"{dataset.source}: scores on that split would be optimistic.[/]"
        )
    source = {
        "root": str(root),
        "split_file": str(split_file) if split_file else None,
        "split_column": split_column,
        "train_value": train_value,
    }
    if free:
        console.print(
            f"choosing {', '.join(sorted(free))} by validation on {val_fraction:.0%} of the training images "
            "(give --flip/--no-flip, --lr and --epochs to skip)"
        )
        result = train_with_search(images, out, config, free, space, refit=refit, source=source, overwrite=overwrite)
        chosen = result.record["selection"]["chosen"]
        console.print(
            f"chosen: flip {'on' if chosen['flip'] else 'off'}, lr {chosen['lr']:g}, {chosen['epochs']} epoch(s) "
            f"(validation mAP {chosen['val_map']:.3f}, top-1 {chosen['val_top1']:.3f}); "
            f"{result.record['selection']['final']}",
            highlight=False,
        )
    else:
        result = run_training(images, out, config, source=source, overwrite=overwrite)
    record = result.record
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
