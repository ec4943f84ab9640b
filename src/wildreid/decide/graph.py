"""The match graph of one dataset's queries: queries and known individuals as nodes, calibrated
P(same individual) as edges.

Query-vs-query edges come from the same stages as query-vs-gallery ones (a shortlist from an
index of the queries, local verification, the gallery's calibration), so the two kinds of edge
live on one scale. Only shortlisted pairs are edges: the graph grows with the queries times the
shortlist, never as queries x database or queries x queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Each query keeps its strongest links to this many other queries (an edge stays when either end
# keeps it): a k-nearest-neighbour graph. Its density then does not depend on how many queries a
# batch has, so a threshold chosen on database pseudo-queries (whose shortlists hold fewer of
# each other) means the same on a real batch; average linkage counts a missing edge as 0, so
# without this a larger batch would link more.
QUERY_NEIGHBOURS = 5


@dataclass
class MatchGraph:
    """Nodes 0..queries-1 are queries, node queries + i is known individual ``identities[i]``.
    Each undirected edge appears once, with left < right."""

    queries: int
    identities: np.ndarray  # (I,) object
    left: np.ndarray  # (E,) int
    right: np.ndarray  # (E,) int
    probability: np.ndarray  # (E,) float: calibrated P(same individual)

    @property
    def nodes(self) -> int:
        return self.queries + len(self.identities)

    @classmethod
    def build(
        cls,
        queries: int,
        query_pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
        identity_links: tuple[np.ndarray, np.ndarray, np.ndarray],
        neighbours: int = QUERY_NEIGHBOURS,
    ) -> "MatchGraph":
        """``query_pairs``: (query, query, P) in any direction; ``identity_links``: (query,
        identity label, P). A pair seen twice (a found b, b found a) keeps its larger P: being
        shortlisted from either side is enough to be compared. Query-to-query edges are then
        thinned to each query's ``neighbours`` strongest (see QUERY_NEIGHBOURS)."""
        first, second, probability = (np.asarray(a) for a in query_pairs)
        keep = first != second
        first, second, probability = first[keep], second[keep], np.asarray(probability[keep], np.float64)
        link_queries, link_identities, link_probability = (np.asarray(a) for a in identity_links)
        labels, codes = np.unique(np.asarray(link_identities, dtype=object), return_inverse=True)
        left = np.concatenate([np.minimum(first, second), link_queries]).astype(np.int64)
        right = np.concatenate([np.maximum(first, second), queries + codes]).astype(np.int64)
        weight = np.concatenate([probability, np.asarray(link_probability, np.float64)])
        finite = np.isfinite(weight)
        left, right, weight = left[finite], right[finite], weight[finite]
        # Highest P first, then one edge per (left, right).
        order = np.lexsort((-weight, right, left))
        left, right, weight = left[order], right[order], weight[order]
        first_of_pair = np.ones(len(left), dtype=bool)
        first_of_pair[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
        left, right, weight = left[first_of_pair], right[first_of_pair], weight[first_of_pair]
        keep = _nearest_queries(queries, left, right, weight, neighbours)
        return cls(queries, labels.astype(object), left[keep], right[keep], weight[keep])

    def subgraph(self, keep_queries: np.ndarray) -> tuple["MatchGraph", np.ndarray]:
        """The graph of some queries (a boolean mask) and all known individuals; also returns the
        kept queries' old numbers."""
        kept = np.flatnonzero(keep_queries)
        renumber = np.full(self.nodes, -1, dtype=np.int64)
        renumber[kept] = np.arange(len(kept))
        renumber[self.queries :] = len(kept) + np.arange(len(self.identities))
        inside = (renumber[self.left] >= 0) & (renumber[self.right] >= 0)
        graph = MatchGraph(
            len(kept),
            self.identities,
            renumber[self.left[inside]],
            renumber[self.right[inside]],
            self.probability[inside],
        )
        return graph, kept


def _nearest_queries(queries: int, left, right, weight, neighbours: int) -> np.ndarray:
    """Edges to keep: every query-to-individual edge, and a query-to-query edge when it is among
    the ``neighbours`` strongest of either end."""
    between_queries = right < queries
    keep = ~between_queries
    index = np.flatnonzero(between_queries)
    ends = np.concatenate([left[index], right[index]])
    edge = np.concatenate([index, index])
    order = np.lexsort((-weight[edge], ends))  # per end, strongest first
    ends, edge = ends[order], edge[order]
    rank = np.arange(len(ends)) - np.searchsorted(ends, ends)
    keep[edge[rank < neighbours]] = True
    return keep
