"""Fine-tuning on LionData's published closed split: top-1 before and after training.

    python benchmarks/train_lion.py --threads 1              # `wildreid train`'s defaults (docs/train.md)
    python benchmarks/train_lion.py --flip --lr 3e-4 --epochs 20 --val-fraction 0 --out bench-out/lion-fixed

LionData/paper_split.csv is the train/test split behind the published MegaDescriptor figures
(top-1 on its 155 test images: MegaDescriptor-L-384 0.252). Its train part becomes the database
and is the only thing trained on; its test part becomes the queries, every one of a known
individual (closed set: threshold None, the best identity is always the answer). Top-1 is that of
the global descriptor alone (cosine 1-NN), through the same ``identify`` pipeline that
``wildreid identify --backbone local-dir:OUT`` runs.

Training settings are those of `wildreid train`: what is not given (--flip/--no-flip, --lr,
--epochs) is chosen by validation on the train part alone (wildreid.tuning), then the model is
trained again on the whole train part; the test part is read only to score the finished model.

Prints top-1 of the untrained offline backbone (also at the training size when that differs),
top-1 after training, and wall times; writes OUT/benchmark.json. Re-running with the same OUT
resumes an interrupted training (or, once finished, only evaluates; --overwrite trains again).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))

from wildreid.data.dataset import Dataset, load_dataset  # noqa: E402
from wildreid.describe.backbones import load_backbone  # noqa: E402
from wildreid.describe.extract import default_device  # noqa: E402
from wildreid.describe.trained import RECORD  # noqa: E402
from wildreid.evaluate.metrics import evaluate  # noqa: E402
from wildreid.gallery.pipeline import identify  # noqa: E402
from wildreid.presets import get_preset  # noqa: E402
from wildreid.train.augment import AugmentConfig  # noqa: E402
from wildreid.train.finetune import CHECKPOINT, TrainConfig, train, training_images  # noqa: E402
from wildreid.train.tuning import SearchSpace, free_settings, train_with_search  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import closed_split  # noqa: E402  (the split as every benchmark builds it)

LION = PROJECT.parent / "shared" / "data" / "LionData"
PUBLISHED = {
    "MegaDescriptor-L-384": 0.252,
    "MegaDescriptor-L-224": 0.206,
    "MegaDescriptor-T-224": 0.148,
    "MegaDescriptor-B-224": 0.135,
}


def closed_set_top1(dataset: Dataset, backbone_name: str, preprocess=None) -> tuple[float, float]:
    started = time.perf_counter()
    preset = get_preset("offline").replace(backbone=backbone_name, preprocess=preprocess, threshold=None)
    backbone = load_backbone(backbone_name, preprocess=preprocess, device=default_device())
    result = identify(dataset, preset, cache_dir=None, backbone=backbone, progress=False)
    figures = evaluate(dataset, result.predictions, result.candidates)
    return figures["top1"], time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=LION)
    parser.add_argument("--out", type=Path, default=PROJECT / "bench-out" / "train_lion")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    # Defaults: those of `wildreid train` (flip, learning rate and epochs chosen by validation on the
    # train part; the backbone's own input size, 224 px for Lite0).
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--margin", type=float, default=0.3)
    parser.add_argument("--scale", type=float, default=30.0)
    parser.add_argument("--sub-centers", type=int, default=1)
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--min-crop-scale", type=float, default=0.7)
    parser.add_argument("--color-jitter", type=float, default=0.3)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 (default) was several times faster on the shared "
        "2-core machine, and keeps the run bit-for-bit repeatable; 0: torch's choice",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    dataset = closed_split(args.data)
    queries, database = dataset.queries, dataset.database
    assert set(queries["identity"]) <= set(database["identity"]), "closed split: every query is known"
    print(
        f"LionData paper split: {len(database)} train (database) / {len(queries)} test (query) images, "
        f"{database['identity'].nunique()} identities",
        flush=True,
    )

    results = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "threads": torch.get_num_threads()}
    if not args.skip_baseline:
        base = load_backbone(args.backbone)
        results["before_top1"], seconds = closed_set_top1(dataset, args.backbone)
        print(
            f"before training ({args.backbone}, {base.preprocess.describe()}): top-1 "
            f"{results['before_top1']:.4f} ({seconds:.0f} s)",
            flush=True,
        )
        if args.image_size and base.preprocess.size != (args.image_size, args.image_size):
            at_size = replace(base.preprocess, size=(args.image_size, args.image_size))
            results["before_top1_at_train_size"], seconds = closed_set_top1(dataset, args.backbone, at_size)
            print(
                f"before training at {args.image_size} px: top-1 "
                f"{results['before_top1_at_train_size']:.4f} ({seconds:.0f} s)",
                flush=True,
            )

    # Training images: the paper split's train part, read through the same option the CLI offers
    # (`wildreid train LionData --split-file paper_split.csv --split-column paper_split --train-value train`).
    images = training_images(
        load_dataset(args.data),
        split_file=args.data / "paper_split.csv",
        split_column="paper_split",
        train_value="train",
    )
    assert not set(images["image_id"]) & set(queries["image_id"]), "no test image may be trained on"
    free, space = free_settings(args.flip, args.lr, args.epochs), SearchSpace()
    config = TrainConfig(
        backbone=args.backbone,
        epochs=args.epochs if args.epochs is not None else space.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else TrainConfig.lr,
        image_size=args.image_size,
        margin=args.margin,
        scale=args.scale,
        sub_centers=args.sub_centers,
        head_epochs=args.head_epochs,
        val_fraction=args.val_fraction,
        patience=args.patience,
        seed=args.seed,
        augment=AugmentConfig(min_crop_scale=args.min_crop_scale, color_jitter=args.color_jitter, flip=bool(args.flip)),
    )
    train_started = time.perf_counter()
    if (args.out / RECORD).exists() and not (args.out / CHECKPOINT).exists() and not args.overwrite:
        record = json.loads((args.out / RECORD).read_text())
        print(f"{args.out} already trained; evaluating it (--overwrite trains again)")
    elif free:
        source = {"split_file": "paper_split.csv"}
        record = train_with_search(
            images, args.out, config, free, space, refit=args.refit, source=source, overwrite=args.overwrite
        ).record
    else:
        record = train(
            images, args.out, config, source={"split_file": "paper_split.csv"}, overwrite=args.overwrite
        ).record
    if "selection" in record:
        results["chosen"] = record["selection"]["chosen"]
        results["search_wall_s"] = record["selection"]["search_wall_time_s"]
        print(f"chosen by validation on the train part: {results['chosen']}", flush=True)
    results["train_wall_s"] = record["wall_time_s"]  # the final training (the search not included)
    results["this_run_train_s"] = time.perf_counter() - train_started
    results["epochs_run"], results["best_epoch"] = record["epochs_run"], record["best_epoch"]
    results["best_val_top1"] = record["best_val_top1"]
    results["after_top1"], seconds = closed_set_top1(dataset, f"local-dir:{args.out.resolve()}")
    results["total_wall_s"] = time.perf_counter() - started
    print(
        f"after training ({record['epochs_run']} epochs, best {record['best_epoch']}, "
        f"{record['wall_time_s']:.0f} s of training): top-1 {results['after_top1']:.4f} ({seconds:.0f} s)"
    )
    target = PUBLISHED["MegaDescriptor-L-384"]
    verdict = "meets" if results["after_top1"] >= target else f"misses by {target - results['after_top1']:.4f}"
    print(
        f"target (MegaDescriptor-L-384, published): {target} -> {verdict}; "
        f"total wall time {results['total_wall_s']:.0f} s"
    )
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
