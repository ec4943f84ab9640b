"""Validation during fine-tuning: the held-out images found among each other and the training
images, as top-1 and mAP; validation mAP picks the best epoch and stops training early."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wildreid.describe.backbones import Preprocess
from wildreid.describe.cpu_decode import pixels_to_input
from wildreid.train.images import VAL_IDENTITY, VAL_IMAGE


class Validation:
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
