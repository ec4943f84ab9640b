"""Review that learns: pair questions ordered by how much one answer would change the grouping,
and answers kept as constraints.

A question is a pair of nodes of a dataset's match graph (two queries, or a query and a known
individual). Candidates are

* between two clusters: the pair with the strongest edge between them (the easiest for a person
  to judge), asked when the clusters' linkage is uncertain: "same" would join them;
* inside a cluster: its weakest member against that member's best partner: "different" would
  split the cluster.

Priority = the expected number of photos one answer moves: the probability that the grouping is
wrong about the pair (P(same) for two clusters kept apart, 1 - P(same) for a pair put together;
P is the pair's calibrated probability), times the query photos at stake: both clusters of a
"join" question, the whole cluster of a "split" one. So uncertain links between large groups
come first, and a confident decision on a lone photo comes last. (Counting only the photos that
would move - the smaller group, or the one member split off - was tried: on NyalaData with
`fusion` it lifted ARI less per answer, benchmarks/review_simulation.py.) Pairs
that earlier answers already settle (joined by "same", kept apart by "different", two known
individuals, or answered "can't tell") are never asked.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from wildreid.decide.grouping import DatasetGrouping

SAME, DIFFERENT, CANT_TELL = "same", "different", "cant_tell"
ANSWERS = (SAME, DIFFERENT, CANT_TELL)


@dataclass(frozen=True)
class PairQuestion:
    left: int  # node of the match graph (a query; the smaller number)
    right: int  # node: a query or a known individual
    probability: float  # P(same) of the pair's edge
    linkage: float  # P(same) between the two clusters as the grouping sees them
    priority: float
    kind: str  # "join" (different clusters) or "split" (one cluster)


def pair_questions(grouping: DatasetGrouping, asked: Collection[tuple[int, int]] = frozenset()) -> list[PairQuestion]:
    """All open questions of one dataset, most useful first. ``asked``: node pairs already
    answered (any answer), never asked again."""
    graph, labels = grouping.graph, grouping.clustering.labels
    queries = graph.queries
    query_labels = labels[:queries]
    photos = np.bincount(query_labels, minlength=labels.max() + 1 if len(labels) else 0)
    anchored = set(grouping.clustering.anchors)
    joined = components(graph.nodes, grouping.must_link)
    apart = {frozenset((joined[a], joined[b])) for a, b in grouping.cannot_link}
    left, right, probability = graph.left, graph.right, graph.probability

    def settled(a: int, b: int) -> bool:
        key = (min(a, b), max(a, b))
        return (
            key in asked
            or joined[a] == joined[b]
            or frozenset((joined[a], joined[b])) in apart
            or (a >= queries and b >= queries)
        )

    # Between clusters: summed P and pair counts per cluster pair, to get the average linkage.
    la, lb = labels[left], labels[right]
    between = la != lb
    cluster_pairs: dict[tuple[int, int], list] = {}
    for a, b, p, ca, cb in zip(
        left[between].tolist(),
        right[between].tolist(),
        probability[between].tolist(),
        la[between].tolist(),
        lb[between].tolist(),
    ):
        if ca in anchored and cb in anchored:
            continue  # two known individuals: never one animal
        key = (min(ca, cb), max(ca, cb))
        entry = cluster_pairs.setdefault(key, [0.0, None])
        entry[0] += p
        if not settled(a, b) and (entry[1] is None or p > entry[1][2]):
            entry[1] = (a, b, p)
    sizes = np.bincount(labels, minlength=labels.max() + 1 if len(labels) else 0)
    questions = []
    for (ca, cb), (total, best) in cluster_pairs.items():
        if best is None:
            continue
        linkage = total / (sizes[ca] * sizes[cb]) if grouping.method == "average" else best[2]
        stake = int(photos[ca] + photos[cb])
        questions.append(PairQuestion(min(best[:2]), max(best[:2]), best[2], linkage, float(best[2] * stake), "join"))
    # Inside clusters: each cluster's weakest member against its best partner in the cluster.
    inside = ~between
    weakest: dict[int, tuple[float, int, int]] = {}
    best_partner: dict[int, tuple[float, int]] = {}
    for a, b, p in zip(left[inside].tolist(), right[inside].tolist(), probability[inside].tolist()):
        for node, other in ((a, b), (b, a)):
            if node < queries and not settled(node, other) and p > best_partner.get(node, (-1.0, -1))[0]:
                best_partner[node] = (p, other)
    for node, (p, other) in best_partner.items():
        cluster = int(labels[node])
        if cluster not in weakest or p < weakest[cluster][0]:
            weakest[cluster] = (p, node, other)
    for cluster, (p, node, other) in weakest.items():
        stake = int(photos[cluster])
        questions.append(PairQuestion(min(node, other), max(node, other), p, p, float((1.0 - p) * stake), "split"))
    questions.sort(key=lambda q: (-q.priority, q.left, q.right))
    return questions


def apply_answer(grouping: DatasetGrouping, left: int, right: int, answer: str) -> int:
    """Record one answer as a constraint and regroup at once (the gallery is not refitted).
    Returns how many query photos changed group."""
    if answer not in ANSWERS:
        raise ValueError(f"answer '{answer}': give one of {', '.join(ANSWERS)}.")
    before = grouping.clustering.labels[: grouping.graph.queries].copy()
    if answer == SAME:
        grouping.must_link.append((left, right))
    elif answer == DIFFERENT:
        grouping.cannot_link.append((left, right))
    else:
        return 0
    after = grouping.regroup().labels[: grouping.graph.queries]
    return _changed(before, after)


def settled_queries(grouping: DatasetGrouping) -> np.ndarray:
    """Queries a reviewer's answers have tied to another photo or individual ("same")."""
    joined = components(grouping.graph.nodes, grouping.must_link)
    counts = np.bincount(joined, minlength=grouping.graph.nodes)
    return counts[joined[: grouping.graph.queries]] > 1


def components(nodes: int, pairs) -> np.ndarray:
    """Connected components of ``pairs`` over nodes 0..nodes-1 (a label per node): the must-links
    here, reviewers' "same" answers in answers.py."""
    owner = list(range(nodes))

    def root(node: int) -> int:
        while owner[node] != node:
            owner[node] = owner[owner[node]]
            node = owner[node]
        return node

    for a, b in pairs:
        owner[root(a)] = root(b)
    return np.array([root(node) for node in range(nodes)], dtype=np.int64)


def _changed(before: np.ndarray, after: np.ndarray) -> int:
    """Queries whose set of group mates changed between two labelings."""
    changed = 0
    for node in range(len(before)):
        if set(np.flatnonzero(before == before[node])) != set(np.flatnonzero(after == after[node])):
            changed += 1
    return changed
