"""Grouping a match graph into individuals, under constraints.

Agglomerative clustering on the sparse graph: clusters merge in order of decreasing linkage, a
pair whose linkage falls below its threshold never merges. Two linkages:

* ``average``: the mean P(same) over all query/individual pairs of the two clusters, a pair
  without an edge counting 0 (it was not even shortlisted). One strong edge cannot chain two
  groups together: it is outweighed by the pairs that do not match.
* ``single``: the strongest edge between the clusters: connected components above the threshold,
  kept apart by the cannot-links (Kruskal's order).

Two thresholds, both P(same), both chosen on the database: a merge that would give a group a
known individual needs ``known_threshold`` (the per-dataset new_individual threshold); a merge of
queries with queries needs ``link_threshold``. Constraints: two known individuals never share a
cluster; ``cannot_link`` pairs of nodes never do either. Order: a reviewer's "same" between a
query and a known individual (``must_link``) pins it first; then each query whose best known
individual passes ``known_threshold`` is anchored to it (today's per-query decision); then
clusters merge; last, a reviewer's "same" between two queries joins their two clusters (a
conflict with a cannot-link or two known individuals is reported in ``conflicts``, not kept).
The cost is one pass over the edges with a heap: O(E log E) for E edges.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from wildreid.decide.graph import MatchGraph

METHODS = ("average", "single")


@dataclass
class Clustering:
    labels: np.ndarray  # (nodes,) cluster number of every node, numbered by first node
    anchors: dict[int, int] = field(default_factory=dict)  # cluster -> its known individual's index
    conflicts: list[tuple[int, int, str]] = field(default_factory=list)  # must-links that could not be kept

    def query_labels(self, queries: int) -> np.ndarray:
        return self.labels[:queries]


def cluster_graph(
    graph: MatchGraph,
    *,
    method: str = "average",
    link_threshold: float,
    known_threshold: float | None,
    must_link: list[tuple[int, int]] = (),
    cannot_link: list[tuple[int, int]] = (),
) -> Clustering:
    """Cluster ``graph``'s nodes. ``known_threshold`` None: a closed set (a query always takes its
    best linked individual, however weak)."""
    if method not in METHODS:
        raise ValueError(f"unknown grouping method '{method}'; choose one of {', '.join(METHODS)}")
    known_threshold = -np.inf if known_threshold is None else known_threshold
    nodes = graph.nodes
    # Plain lists, not arrays: the loop below touches single elements, where numpy scalars are slow.
    size = [1] * nodes
    alive = [True] * nodes
    version = [0] * nodes
    owner = list(range(nodes))  # union-find parent
    anchor = {graph.queries + i: i for i in range(len(graph.identities))}
    pinned: dict[int, int] = {}  # cluster -> the known individual a reviewer named one of its photos
    links: list[dict[int, float]] = [dict() for _ in range(nodes)]  # summed (average) or max (single) P
    for a, b, p in zip(graph.left.tolist(), graph.right.tolist(), graph.probability.tolist()):
        links[a][b] = p
        links[b][a] = p
    forbidden: list[set[int]] = [set() for _ in range(nodes)]
    for a, b in cannot_link:
        forbidden[a].add(b)
        forbidden[b].add(a)

    def root(node: int) -> int:
        while owner[node] != node:
            owner[node] = owner[owner[node]]
            node = owner[node]
        return node

    def named(cluster: int) -> int | None:
        """The known individual a cluster holds, or is pinned to by a reviewer's "same"."""
        return anchor.get(cluster, pinned.get(cluster))

    def compatible(a: int, b: int) -> bool:
        if a in anchor and b in anchor:
            return False
        ia, ib = named(a), named(b)
        return (ia is None or ib is None or ia == ib) and b not in forbidden[a]

    def linkage(a: int, b: int) -> float:
        total = links[a].get(b, 0.0)
        return total / (size[a] * size[b]) if method == "average" else total

    def threshold(a: int, b: int) -> float:
        return known_threshold if (named(a) is not None or named(b) is not None) else link_threshold

    def merge(a: int, b: int) -> int:
        """Join clusters a and b; the one with more links absorbs the other (so that each link is
        moved O(log n) times). Returns the joined cluster."""
        if len(links[a]) < len(links[b]):
            a, b = b, a
        links[a].pop(b, None)
        links[b].pop(a, None)
        for c, value in links[b].items():
            links[c].pop(b, None)
            merged = links[a].get(c, 0.0) + value if method == "average" else max(links[a].get(c, 0.0), value)
            links[a][c] = links[c][a] = merged
        links[b] = {}
        for c in forbidden[b]:
            forbidden[c].discard(b)
            forbidden[c].add(a)
        forbidden[a] |= forbidden[b]
        forbidden[a].discard(b)
        forbidden[b] = set()
        if b in anchor:
            anchor[a] = anchor.pop(b)
        if b in pinned:
            pinned[a] = pinned.pop(b)
        size[a] += size[b]
        alive[b] = False
        owner[b] = a
        version[a] += 1
        return a

    conflicts = []

    def join_must_links(pairs) -> None:
        for a, b in pairs:
            ra, rb = root(a), root(b)
            if ra == rb:
                continue
            if not compatible(ra, rb):
                reason = "two known individuals" if (ra in anchor and rb in anchor) else "a cannot-link"
                conflicts.append((a, b, reason))
                continue
            merge(ra, rb)

    # A reviewer's "same" is kept once the groups have formed: it joins the two photos' groups
    # (joining the two photos first would leave their group mates behind, as average linkage
    # divides the mates' links by the joined pair's size). Until then a query named by a
    # reviewer is pinned: its group may take no other known individual.
    for a, b in must_link:
        if (a >= graph.queries) != (b >= graph.queries):
            query, individual = (a, b) if b >= graph.queries else (b, a)
            pinned[query] = anchor[individual]

    # Anchoring first: a query whose best known individual passes the known threshold joins it,
    # as the per-query decision would, before queries are linked with each other. So grouping
    # never takes a known individual away from a query that matches it well (a stronger link to
    # a query that is itself new could otherwise outvote it); it can only give one to a query
    # whose group matches it, or group queries that are new.
    best_known: dict[int, tuple[float, int]] = {}
    for a, b, p in zip(graph.left.tolist(), graph.right.tolist(), graph.probability.tolist()):
        if b >= graph.queries and p >= known_threshold and p > best_known.get(a, (-np.inf, -1))[0]:
            best_known[a] = (p, b)
    for query, (_, individual) in sorted(best_known.items(), key=lambda item: -item[1][0]):
        ra, rb = root(query), root(individual)
        if ra != rb and compatible(ra, rb):
            merge(ra, rb)

    # Only pairs that could merge now are queued; a pair below its threshold comes back when a
    # merge changes its linkage (every merge re-queues the joined cluster's pairs).
    heap = []

    def push_all(a: int) -> None:
        for c in links[a]:
            value = linkage(a, c)
            if value >= threshold(a, c) and compatible(a, c):
                heapq.heappush(heap, (-value, min(a, c), max(a, c), version[a], version[c]))

    if method == "single":
        _kruskal(graph, root, compatible, threshold, merge)
    for a in range(nodes):
        for c in links[a]:
            value = linkage(a, c)
            if a < c and value >= threshold(a, c) and compatible(a, c):
                heap.append((-value, a, c, version[a], version[c]))
    heapq.heapify(heap)
    while heap:
        _, a, c, version_a, version_c = heapq.heappop(heap)
        if not (alive[a] and alive[c]) or version[a] != version_a or version[c] != version_c:
            continue  # stale: one side has merged since, and its pairs were queued again
        if compatible(a, c):  # a cannot-link may have arrived with a merge
            push_all(merge(a, c))

    join_must_links(must_link)
    roots = np.array([root(node) for node in range(nodes)])
    _, labels = np.unique(roots, return_index=False, return_inverse=True)
    # Number clusters by their first node, so that labels read in input order.
    first_seen = {}
    for label in labels.tolist():
        first_seen.setdefault(label, len(first_seen))
    labels = np.array([first_seen[label] for label in labels.tolist()], dtype=np.int64)
    anchors = {int(labels[node]): identity for node, identity in anchor.items()}
    return Clustering(labels, anchors, conflicts)


def _kruskal(graph: MatchGraph, root, compatible, threshold, merge) -> None:
    """Single linkage without a heap: edges in decreasing P, each joining its two clusters when
    allowed. An edge refused only for want of an individual (below the linking threshold but not
    the known one) is tried again once its clusters have changed, until nothing more joins;
    the heap loop that follows then finds nothing left to merge."""
    order = np.argsort(-graph.probability, kind="stable")
    pending = list(zip(graph.left[order].tolist(), graph.right[order].tolist(), graph.probability[order].tolist()))
    while pending:
        refused, joined = [], False
        for a, b, p in pending:
            ra, rb = root(a), root(b)
            if ra == rb or not compatible(ra, rb):
                continue
            if p >= threshold(ra, rb):
                merge(ra, rb)
                joined = True
            else:
                refused.append((a, b, p))
        if not joined:
            break
        pending = refused
