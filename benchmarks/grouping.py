"""Grouping the queries into individuals (issue 13): ARI, pairwise precision/recall and the
AnimalCLEF2025 score of the transductive decision, against two baselines, per dataset.

    python benchmarks/grouping.py --presets offline,fusion --datasets NyalaData,LionData,Holstein2025

For every (preset, dataset) one gallery is built (features cached under --cache) and the queries
identified once; the rows are then the same run decided four ways:

* ``today, new alone``: the per-query decision (best identity, or new_individual below the
  threshold), every new_individual its own cluster;
* ``today, new as one``: the same decision with new_individual read as one label, as a 2025
  submission would be if scored by ARI;
* ``average`` and ``single``: the grouping (grouping/), each linkage with its own linking
  threshold chosen on the database (no query labels).

ARI is measured on the queries only (scikit-learn's adjusted_rand_score via wildreid.metrics).

``--curves`` (a diagnostic that reads the query labels; no choice is made from it) prints, for the
``average`` grouping of each dataset, the simulated ARI on the database (simulate.py, no query
label) and the queries' real ARI at every linking threshold the simulation weighs, at the known
threshold the run decided with; then, for other known thresholds, the linking threshold the
simulation would choose with each and the real ARI there. It says whether a miss comes from the
thresholds' choice (the real curve peaks where the simulated one does not) or from the evidence
(no threshold does much better).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_data import benchmark_dataset, changed_preset, memoise_counts  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from wildreid.data.dataset import NEW_INDIVIDUAL  # noqa: E402
from wildreid.decide.cluster import METHODS, cluster_graph  # noqa: E402
from wildreid.decide.decision import decide  # noqa: E402
from wildreid.decide.grouping import DatasetGrouping, Grouping  # noqa: E402
from wildreid.decide.simulate import choose_link_threshold  # noqa: E402
from wildreid.evaluate.metrics import evaluate  # noqa: E402
from wildreid.gallery.gallery import Gallery  # noqa: E402
from wildreid.presets import get_preset  # noqa: E402


def grouped_run(
    name: str,
    preset_name: str,
    cache: Path,
    method: str = "average",
    galleries: Path | None = None,
    changes: dict | None = None,
):
    """(dataset, gallery, result) of one grouped identification. With ``galleries``, the gallery
    is saved there once built (with the linking thresholds of every method) and loaded next time.
    ``changes``: preset fields changed (real_data.preset_changes)."""
    dataset = benchmark_dataset(name)
    preset = changed_preset(get_preset(preset_name), changes or {}).replace(grouping=method)
    changed = "".join(f"-{key}={value}" for key, value in sorted((changes or {}).items()))
    folder = galleries / f"{preset_name}{changed}-{name}" if galleries is not None else None
    started = time.perf_counter()
    if folder is not None and folder.is_dir():
        gallery = Gallery.load(folder, preset=preset_name)
        gallery.preset = gallery.preset.replace(grouping=method)
    else:
        gallery = Gallery.build(dataset, preset, cache_dir=cache, progress=False)
        for group in gallery.groups.values():
            for other in METHODS:
                if other not in group.fit.links:
                    group.link_choice(other, gallery.method)
        if folder is not None:
            gallery.save(folder)
    built = time.perf_counter() - started
    started = time.perf_counter()
    result = gallery.identify(dataset, cache_dir=cache, progress=False)
    result.timings["benchmark_build_s"], result.timings["benchmark_identify_s"] = built, time.perf_counter() - started
    result.dataset = dataset
    return dataset, gallery, result


def figures(dataset, predictions, candidates) -> dict:
    evaluation = evaluate(dataset, predictions, candidates)
    keys = ("score", "baks", "baus", "ari", "pair_precision", "pair_recall")
    return {key: round(float(evaluation[key]), 3) for key in keys}


def regrouped(result, gallery, method: str) -> tuple:
    """The run's queries grouped again with another linkage (its own threshold chosen on the
    database from the fit's scored pairs): (predictions, candidates)."""
    datasets = {}
    for name, grouping in result.grouping.datasets.items():
        group = gallery.groups[name]
        link = group.fit.links.get(method) or group.link_choice(method, gallery.method)
        datasets[name] = DatasetGrouping.fit(
            name,
            grouping.rows,
            grouping.image_ids,
            grouping.graph,
            method=method,
            link_threshold=link.threshold,
            known_threshold=grouping.known_threshold,
        )
    other = Grouping(datasets)
    table = other.per_query(len(result.queries))
    candidates = result.candidates.drop(columns=list(table.columns)).assign(**{c: table[c] for c in table})
    predictions = result.predictions.assign(identity=table["group_identity"].to_numpy())
    return predictions, candidates, {n: g.link_threshold for n, g in datasets.items()}


KNOWN_SWEEP = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)  # P(same) to join a known individual, for --curves


def query_ari(graph, truth: np.ndarray, method: str, link: float, known: float | None) -> float:
    """The queries' ARI grouped at these thresholds (reads the query labels)."""
    clustering = cluster_graph(graph, method=method, link_threshold=link, known_threshold=known)
    return round(float(adjusted_rand_score(truth, clustering.query_labels(graph.queries))), 3)


def threshold_curves(dataset, gallery, result, method: str = "average") -> list[dict]:
    """Rows of --curves for each dataset of the run (see the module's docstring). Reads the query
    labels: a diagnostic of the thresholds' choice, never a choice."""
    truth_of = dict(zip(dataset.queries["image_id"].astype(str), dataset.queries["identity"].astype(str)))
    rows = []
    for name, grouping in result.grouping.datasets.items():
        group, graph = gallery.groups[name], grouping.graph
        truth = np.array([truth_of[str(image_id)] for image_id in grouping.image_ids])

        chosen, known = group.fit.links[method], grouping.known_threshold
        for link, simulated in zip(chosen.grid, chosen.curve):
            rows.append(
                {
                    "dataset": name,
                    "known_threshold": round(known, 3),
                    "link_threshold": round(float(link), 4),
                    "chosen": bool(np.isclose(link, chosen.threshold)),
                    "simulated_ari": round(float(simulated), 3),
                    "query_ari": query_ari(graph, truth, method, float(link), known),
                }
            )
        pair_rows, images, probability, pair_probability = group.fit_pairs
        for other in KNOWN_SWEEP:
            choice = choose_link_threshold(
                pair_rows,
                images,
                probability,
                group.identities,
                pair_probability=pair_probability,
                known_threshold=other,
                method=method,
                near_duplicates=group.near_duplicates,
            )
            rows.append(
                {
                    "dataset": name,
                    "known_threshold": other,
                    "link_threshold": round(choice.threshold, 4),
                    "chosen": "by the simulation at this known threshold",
                    "simulated_ari": round(choice.simulated_ari, 3),
                    "query_ari": query_ari(graph, truth, method, choice.threshold, other),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="offline,fusion")
    parser.add_argument("--datasets", default="LionData,NyalaData,Holstein2025")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench-out" / "cache-grouping")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "grouping.json")
    parser.add_argument(
        "--galleries", type=Path, default=None, help="save built galleries here and load them next time"
    )
    parser.add_argument(
        "--curves", action="store_true", help="ARI by linking and known threshold, simulated and real (diagnostic)"
    )
    args = parser.parse_args()
    if args.curves:
        memoise_counts(args.cache)  # keypoint counts kept across runs (they are deterministic)
        for preset_name in args.presets.split(","):
            for name in args.datasets.split(","):
                dataset, gallery, result = grouped_run(name, preset_name, args.cache)
                for row in threshold_curves(dataset, gallery, result):
                    print(json.dumps({"preset": preset_name, **row}), flush=True)
        return
    rows = []
    for preset_name in args.presets.split(","):
        for name in args.datasets.split(","):
            dataset, gallery, result = grouped_run(name, preset_name, args.cache, galleries=args.galleries)
            candidates = result.candidates
            today = candidates.drop(columns=[c for c in candidates.columns if c.startswith("group")])
            threshold = next(iter(result.thresholds.values()))
            decided = decide(result.ranking.identities[:, 0], result.ranking.scores[:, 0], threshold)
            today_predictions = result.predictions.assign(identity=decided)
            as_one = today.assign(prediction=decided)
            as_one["group"] = np.where(decided == NEW_INDIVIDUAL, NEW_INDIVIDUAL, decided)
            variants = {
                "today, new alone": figures(dataset, today_predictions, today),
                "today, new as one": figures(dataset, today_predictions, as_one),
            }
            thresholds = {}
            for method in METHODS:
                started = time.perf_counter()
                predictions, grouped, links = regrouped(result, gallery, method)
                variants[method] = figures(dataset, predictions, grouped)
                thresholds[method] = links
                variants[method]["grouping_s"] = round(time.perf_counter() - started, 2)
            for variant, values in variants.items():
                row = {"preset": preset_name, "dataset": name, "decision": variant, **values}
                if variant in thresholds:
                    row["link_threshold"] = round(next(iter(thresholds[variant].values())), 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
            print(
                json.dumps(
                    {
                        "preset": preset_name,
                        "dataset": name,
                        "build_s": round(result.timings["benchmark_build_s"], 1),
                        "identify_and_group_s": round(result.timings["benchmark_identify_s"], 1),
                        "known_threshold": next(iter(result.grouping.datasets.values())).known_threshold,
                    }
                ),
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
