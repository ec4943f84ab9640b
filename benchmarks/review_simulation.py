"""A simulated reviewer: how much each answer to the pair-review queue is worth (issue 13).

    python benchmarks/review_simulation.py --preset fusion --datasets NyalaData

The queries of a labelled dataset are grouped (as `wildreid identify` does), then a reviewer who
always answers right (from the ground truth: "same" when both photos show one individual, else
"different") answers the queue's questions one at a time; the grouping is recomputed after
every answer (no refit). Printed after 0, 10, 25, 50 and 100 answers: the AnimalCLEF2025 score
(BAKS/BAUS), ARI, pairwise precision/recall. Two question orders in the same run: the queue's
own (uncertainty x photos at stake, grouping/review.py) and random (each question drawn
uniformly from the open ones, seeded).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from grouping import figures, grouped_run  # noqa: E402

from wildreid.decide.grouping import Grouping  # noqa: E402
from wildreid.decide.queue import DIFFERENT, SAME, apply_answer, pair_questions  # noqa: E402

CHECKPOINTS = (0, 10, 25, 50, 100)


def truth_of_nodes(grouping, dataset) -> np.ndarray:
    """The true individual of every node: queries from the dataset's labels, known individuals
    by their own name."""
    identity = dict(zip(dataset.table["image_id"].astype(str), dataset.table["identity"]))
    queries = [identity[str(image_id)] for image_id in grouping.image_ids]
    return np.array(queries + [str(name) for name in grouping.graph.identities], dtype=object)


def simulate(result, dataset, order: str, seed: int) -> list[dict]:
    grouping = copy.deepcopy(result.grouping)
    ((name, dataset_grouping),) = grouping.datasets.items()
    truth = truth_of_nodes(dataset_grouping, dataset)
    rng = np.random.default_rng(seed)
    asked: set[tuple[int, int]] = set()
    rows, answers, started = [], 0, time.perf_counter()
    while True:
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
    args = parser.parse_args()
    for name in args.datasets.split(","):
        dataset, _, result = grouped_run(name, args.preset, args.cache, galleries=args.galleries)
        for order in ("queue", "random"):
            for row in simulate(result, dataset, order, args.seed):
                print(json.dumps({"preset": args.preset, "dataset": name, "order": order, **row}), flush=True)


if __name__ == "__main__":
    main()
