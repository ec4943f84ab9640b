"""A simulated reviewer: how much each answer to the pair-review queue is worth (issue 13), and
how much more when the gallery learns from the answers (issue 20).

    python benchmarks/review_simulation.py --preset fusion --datasets NyalaData
    python benchmarks/review_simulation.py --preset fusion --set adapt=auto --datasets NyalaData

The queries of a labelled dataset are grouped (as `wildreid identify` does), then a reviewer who
always answers right (from the ground truth: "same" when both photos show one individual, else
"different") answers the queue's questions one at a time; the grouping is recomputed after
every answer (no refit). Printed after 0, 10, 25, 50 and 100 answers: the AnimalCLEF2025 score
(BAKS/BAUS), ARI, pairwise precision/recall. Two question orders in the same run: the queue's
own (uncertainty x photos at stake, grouping/review.py) and random (each question drawn
uniformly from the open ones, seeded).

A third arm, ``queue+refit``, asks the queue's questions too, but at 25, 50 and 100 answers the
gallery learns from the answers so far (``Gallery.teach`` with the photos their "same" answers tie
together, decide/answers.py, then ``refit``: the adapter, calibration and thresholds fitted again)
and the queries are identified and grouped again, every answer re-applied as a constraint, before
the figures are taken. Only a preset that adapts its descriptor (``--set adapt=auto``) has anything
to learn; the arm runs last, since it changes the gallery.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from grouping import figures, grouped_run  # noqa: E402
from real_data import preset_changes  # noqa: E402

from wildreid.decide.answers import answered_labels  # noqa: E402
from wildreid.decide.grouping import Grouping  # noqa: E402
from wildreid.decide.queue import DIFFERENT, SAME, apply_answer, pair_questions  # noqa: E402

CHECKPOINTS = (0, 10, 25, 50, 100)
REFITS = (25, 50, 100)  # answers after which the queue+refit arm learns from them


def truth_of_nodes(grouping, dataset) -> np.ndarray:
    """The true individual of every node: queries from the dataset's labels, known individuals
    by their own name."""
    identity = dict(zip(dataset.table["image_id"].astype(str), dataset.table["identity"]))
    queries = [identity[str(image_id)] for image_id in grouping.image_ids]
    return np.array(queries + [str(name) for name in grouping.graph.identities], dtype=object)


def node_key(grouping, node: int) -> tuple[str, str]:
    """A node of the match graph as what it stands for: ('photo', image id) or ('known', name)."""
    queries = grouping.graph.queries
    if node < queries:
        return ("photo", str(grouping.image_ids[node]))
    return ("known", str(grouping.graph.identities[node - queries]))


def key_nodes(grouping) -> dict:
    return {node_key(grouping, node): node for node in range(grouping.graph.nodes)}


def learn_from(gallery, dataset, given: list, cache: Path):
    """Teach the gallery the photos the 'same' answers so far tie together, refit it, identify
    the queries again; the new result with every answer re-applied."""
    paths = dict(zip(dataset.table["image_id"].astype(str), dataset.table["path"]))
    same = [(left, right) for left, right, answer in given if answer == SAME]
    known = {key: key[1] for pair in same for key in pair if key[0] == "known"}
    labels = answered_labels(same, known)
    photos = pd.DataFrame(
        [{"image_id": key[1], "path": paths[key[1]], "identity": label} for key, label in labels.items()],
        columns=["image_id", "path", "identity"],
    )
    gallery.teach(photos, cache_dir=cache)
    gallery.refit()
    result = gallery.identify(dataset, cache_dir=cache, progress=False)
    result.dataset = dataset
    ((_, grouping),) = result.grouping.datasets.items()
    nodes = key_nodes(grouping)
    for left, right, answer in given:
        if left in nodes and right in nodes:
            apply_answer(grouping, nodes[left], nodes[right], answer)
    return result


def simulate(result, dataset, order: str, seed: int, gallery=None, cache: Path | None = None) -> list[dict]:
    """With ``gallery`` (the queue+refit arm) it learns from the answers at REFITS."""
    grouping = copy.deepcopy(result.grouping)
    ((name, dataset_grouping),) = grouping.datasets.items()
    truth = truth_of_nodes(dataset_grouping, dataset)
    rng = np.random.default_rng(seed)
    asked: set[tuple[int, int]] = set()
    given: list = []  # (key, key, answer), to re-apply after a refit
    rows, answers, started = [], 0, time.perf_counter()
    while True:
        if gallery is not None and answers in REFITS and given:
            learning = time.perf_counter()
            result = learn_from(gallery, dataset, given, cache)
            grouping = result.grouping
            ((name, dataset_grouping),) = grouping.datasets.items()
            truth = truth_of_nodes(dataset_grouping, dataset)
            nodes = key_nodes(dataset_grouping)
            asked = {(nodes[a], nodes[b]) for a, b, _ in given if a in nodes and b in nodes}
            started -= time.perf_counter() - learning  # the refit is reported apart
            rows.append({"answers": answers, "refit_s": round(time.perf_counter() - learning, 1)})
        if answers in CHECKPOINTS:
            rows.append({"answers": answers, **_figures(grouping, result, dataset)})
        if answers >= CHECKPOINTS[-1]:
            break
        questions = pair_questions(dataset_grouping, asked)
        if not questions:
            rows.append({"answers": answers, "note": "no questions left", **_figures(grouping, result, dataset)})
            break
        question = questions[0] if order == "queue" else questions[int(rng.integers(len(questions)))]
        answer = SAME if truth[question.left] == truth[question.right] else DIFFERENT
        apply_answer(dataset_grouping, question.left, question.right, answer)
        asked.add((question.left, question.right))
        given.append((node_key(dataset_grouping, question.left), node_key(dataset_grouping, question.right), answer))
        answers += 1
    rows[-1]["seconds_per_answer"] = round((time.perf_counter() - started) / max(answers, 1), 3)
    return rows


def _figures(grouping: Grouping, result, dataset) -> dict:
    table = grouping.per_query(len(result.queries))
    candidates = result.candidates.drop(columns=list(table.columns)).assign(**{c: table[c] for c in table})
    predictions = result.predictions.assign(identity=table["group_identity"].to_numpy())
    return figures(dataset, predictions, candidates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fusion")
    parser.add_argument("--datasets", default="NyalaData")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench-out" / "cache-grouping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--galleries", type=Path, default=None, help="save built galleries here and load them next time"
    )
    parser.add_argument("--set", action="append", default=[], help="KEY=JSON: change a preset field (adapt=auto)")
    args = parser.parse_args()
    changes = preset_changes(args.set)
    for name in args.datasets.split(","):
        dataset, gallery, result = grouped_run(name, args.preset, args.cache, galleries=args.galleries, changes=changes)
        label = args.preset + "".join(f" {setting}" for setting in args.set)
        for order in ("queue", "random", "queue+refit"):
            learning = gallery if order == "queue+refit" else None
            for row in simulate(result, dataset, order.split("+")[0], args.seed, learning, args.cache):
                print(json.dumps({"preset": label, "dataset": name, "order": order, **row}), flush=True)


if __name__ == "__main__":
    main()
