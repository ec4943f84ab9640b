"""Agglomerative grouping on the sparse match graph: the ``average`` and ``single`` methods.

Clusters merge in order of decreasing linkage; a pair whose linkage falls below its threshold
never merges. Two linkages:

* ``average``: the mean P(same) over all query/individual pairs of the two clusters, a pair
  without an edge counting 0 (it was not even shortlisted). One strong edge cannot chain two
  groups together: it is outweighed by the pairs that do not match.
* ``single``: the strongest edge between the clusters: connected components above the threshold,
  kept apart by the cannot-links (Kruskal's order).

A merge that would give a group a known individual needs ``known_threshold``; a merge of queries
with queries needs ``link_threshold`` (cluster.py). Order: a reviewer's "same" between a query
and a known individual (``must_link``) pins it first; then each query whose best known
individual passes ``known_threshold`` is anchored to it (today's per-query decision); then
clusters merge; last, a reviewer's "same" between two queries joins their two clusters (a
conflict with a cannot-link or two known individuals is reported in ``conflicts``, not kept).
The cost is one pass over the edges with a heap: O(E log E) for E edges.
"""

from __future__ import annotations

import heapq

import numpy as np

from wildreid.decide.cluster import GROUPING_METHODS, Clustering, numbered_by_first_node
from wildreid.decide.graph import MatchGraph


@GROUPING_METHODS.register("average")
def average(
    graph: MatchGraph,
    *,
    link_threshold: float,
    known_threshold: float | None,
    must_link: list[tuple[int, int]] = (),
    cannot_link: list[tuple[int, int]] = (),
) -> Clustering:
    """Average linkage: two clusters merge on the mean P(same) of all their pairs."""
    clusters = _Clusters(graph, "average", link_threshold, known_threshold, cannot_link)
    return clusters.agglomerate(must_link)


@GROUPING_METHODS.register("single")
def single(
    graph: MatchGraph,
    *,
    link_threshold: float,
    known_threshold: float | None,
    must_link: list[tuple[int, int]] = (),
    cannot_link: list[tuple[int, int]] = (),
) -> Clustering:
    """Single linkage: two clusters merge on their strongest edge."""
    clusters = _Clusters(graph, "single", link_threshold, known_threshold, cannot_link)
    return clusters.agglomerate(must_link, kruskal_first=True)


class _Clusters:
    """The clusters of one agglomeration as they merge: a union-find over the nodes, each
    cluster's links to the others (summed P for average linkage, the largest for single), its
    cannot-links, and the known individual it holds or a reviewer pinned it to."""

    def __init__(
        self,
        graph: MatchGraph,
        linkage: str,
        link_threshold: float,
        known_threshold: float | None,
        cannot_link: list[tuple[int, int]],
    ):
        self.graph, self.average = graph, linkage == "average"
        self.link_threshold = link_threshold
        self.known_threshold = -np.inf if known_threshold is None else known_threshold
        nodes = graph.nodes
        # Plain lists, not arrays: the merging touches single elements, where numpy scalars are slow.
        self.size = [1] * nodes
        self.alive = [True] * nodes
        self.version = [0] * nodes
        self.owner = list(range(nodes))  # union-find parent
        self.anchor = {graph.queries + i: i for i in range(len(graph.identities))}
        self.pinned: dict[int, int] = {}  # cluster -> the known individual a reviewer named one of its photos
        self.links: list[dict[int, float]] = [dict() for _ in range(nodes)]
        for a, b, p in zip(graph.left.tolist(), graph.right.tolist(), graph.probability.tolist()):
            self.links[a][b] = p
            self.links[b][a] = p
        self.forbidden: list[set[int]] = [set() for _ in range(nodes)]
        for a, b in cannot_link:
            self.forbidden[a].add(b)
            self.forbidden[b].add(a)
        self.conflicts: list[tuple[int, int, str]] = []

    def agglomerate(self, must_link: list[tuple[int, int]], kruskal_first: bool = False) -> Clustering:
        # A reviewer's "same" is kept once the groups have formed: it joins the two photos' groups
        # (joining the two photos first would leave their group mates behind, as average linkage
        # divides the mates' links by the joined pair's size). Until then a query named by a
        # reviewer is pinned: its group may take no other known individual.
        for a, b in must_link:
            if (a >= self.graph.queries) != (b >= self.graph.queries):
                query, individual = (a, b) if b >= self.graph.queries else (b, a)
                self.pinned[query] = self.anchor[individual]
        self.anchor_queries()
        if kruskal_first:
            self.kruskal()
        self.merge_while_linked()
        self.join_must_links(must_link)
        return self.clustering()

    def root(self, node: int) -> int:
        owner = self.owner
        while owner[node] != node:
            owner[node] = owner[owner[node]]
            node = owner[node]
        return node

    def named(self, cluster: int) -> int | None:
        """The known individual a cluster holds, or is pinned to by a reviewer's "same"."""
        return self.anchor.get(cluster, self.pinned.get(cluster))

    def compatible(self, a: int, b: int) -> bool:
        if a in self.anchor and b in self.anchor:
            return False
        ia, ib = self.named(a), self.named(b)
        return (ia is None or ib is None or ia == ib) and b not in self.forbidden[a]

    def linkage(self, a: int, b: int) -> float:
        total = self.links[a].get(b, 0.0)
        return total / (self.size[a] * self.size[b]) if self.average else total

    def threshold(self, a: int, b: int) -> float:
        return self.known_threshold if (self.named(a) is not None or self.named(b) is not None) else self.link_threshold

    def merge(self, a: int, b: int) -> int:
        """Join clusters a and b; the one with more links absorbs the other (so that each link is
        moved O(log n) times). Returns the joined cluster."""
        links, forbidden = self.links, self.forbidden
        if len(links[a]) < len(links[b]):
            a, b = b, a
        links[a].pop(b, None)
        links[b].pop(a, None)
        for c, value in links[b].items():
            links[c].pop(b, None)
            merged = links[a].get(c, 0.0) + value if self.average else max(links[a].get(c, 0.0), value)
            links[a][c] = links[c][a] = merged
        links[b] = {}
        for c in forbidden[b]:
            forbidden[c].discard(b)
            forbidden[c].add(a)
        forbidden[a] |= forbidden[b]
        forbidden[a].discard(b)
        forbidden[b] = set()
        if b in self.anchor:
            self.anchor[a] = self.anchor.pop(b)
        if b in self.pinned:
            self.pinned[a] = self.pinned.pop(b)
        self.size[a] += self.size[b]
        self.alive[b] = False
        self.owner[b] = a
        self.version[a] += 1
        return a

    def anchor_queries(self) -> None:
        """A query whose best known individual passes the known threshold joins it, as the
        per-query decision would, before queries are linked with each other. So grouping never
        takes a known individual away from a query that matches it well (a stronger link to a
        query that is itself new could otherwise outvote it); it can only give one to a query
        whose group matches it, or group queries that are new."""
        graph, best_known = self.graph, {}
        for a, b, p in zip(graph.left.tolist(), graph.right.tolist(), graph.probability.tolist()):
            if b >= graph.queries and p >= self.known_threshold and p > best_known.get(a, (-np.inf, -1))[0]:
                best_known[a] = (p, b)
        for query, (_, individual) in sorted(best_known.items(), key=lambda item: -item[1][0]):
            ra, rb = self.root(query), self.root(individual)
            if ra != rb and self.compatible(ra, rb):
                self.merge(ra, rb)

    def kruskal(self) -> None:
        """Single linkage without a heap: edges in decreasing P, each joining its two clusters when
        allowed. An edge refused only for want of an individual (below the linking threshold but
        not the known one) is tried again once its clusters have changed, until nothing more
        joins; the heap loop that follows then finds nothing left to merge."""
        graph = self.graph
        order = np.argsort(-graph.probability, kind="stable")
        pending = list(zip(graph.left[order].tolist(), graph.right[order].tolist(), graph.probability[order].tolist()))
        while pending:
            refused, joined = [], False
            for a, b, p in pending:
                ra, rb = self.root(a), self.root(b)
                if ra == rb or not self.compatible(ra, rb):
                    continue
                if p >= self.threshold(ra, rb):
                    self.merge(ra, rb)
                    joined = True
                else:
                    refused.append((a, b, p))
            if not joined:
                break
            pending = refused

    def merge_while_linked(self) -> None:
        """Merge the most linked pair of clusters, again and again, while one passes its threshold.
        Only pairs that could merge now are queued; a pair below its threshold comes back when a
        merge changes its linkage (every merge re-queues the joined cluster's pairs)."""
        version, alive = self.version, self.alive
        heap = []
        for a in range(self.graph.nodes):
            for c in self.links[a]:
                value = self.linkage(a, c)
                if a < c and value >= self.threshold(a, c) and self.compatible(a, c):
                    heap.append((-value, a, c, version[a], version[c]))
        heapq.heapify(heap)
        while heap:
            _, a, c, version_a, version_c = heapq.heappop(heap)
            if not (alive[a] and alive[c]) or version[a] != version_a or version[c] != version_c:
                continue  # stale: one side has merged since, and its pairs were queued again
            if self.compatible(a, c):  # a cannot-link may have arrived with a merge
                joined = self.merge(a, c)
                for other in self.links[joined]:
                    value = self.linkage(joined, other)
                    if value >= self.threshold(joined, other) and self.compatible(joined, other):
                        pair = (min(joined, other), max(joined, other))
                        heapq.heappush(heap, (-value, *pair, version[joined], version[other]))

    def join_must_links(self, pairs: list[tuple[int, int]]) -> None:
        for a, b in pairs:
            ra, rb = self.root(a), self.root(b)
            if ra == rb:
                continue
            if not self.compatible(ra, rb):
                reason = "two known individuals" if (ra in self.anchor and rb in self.anchor) else "a cannot-link"
                self.conflicts.append((a, b, reason))
                continue
            self.merge(ra, rb)

    def clustering(self) -> Clustering:
        labels = numbered_by_first_node(np.array([self.root(node) for node in range(self.graph.nodes)]))
        anchors = {int(labels[node]): identity for node, identity in self.anchor.items()}
        return Clustering(labels, anchors, self.conflicts)
