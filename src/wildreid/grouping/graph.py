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
    ) -> "MatchGraph":
        """``query_pairs``: (query, query, P) in any direction; ``identity_links``: (query,
        identity label, P). A pair seen twice (a found b, b found a) keeps its larger P: being
        shortlisted from either side is enough to be compared."""
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
        return cls(queries, labels.astype(object), left[first_of_pair], right[first_of_pair], weight[first_of_pair])

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
