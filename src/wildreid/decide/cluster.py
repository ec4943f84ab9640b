"""Grouping a match graph into individuals, under constraints.

A grouping method is a function registered by name in ``GROUPING_METHODS``:

    method(graph, *, link_threshold, known_threshold, must_link, cannot_link) -> Clustering

Two thresholds, both P(same), both chosen on the database: joining a known individual needs
``known_threshold`` (the per-dataset new_individual threshold; None for a closed set, where a
query always takes its best linked individual, however weak); linking queries with queries needs
``link_threshold``. Constraints every method keeps: two known individuals never share a cluster;
``cannot_link`` pairs of nodes never do either; ``must_link`` pairs (a reviewer's "same") share
one unless that breaks a constraint, which ``Clustering.conflicts`` then reports.

agglomerative.py registers ``average`` and ``single`` linkage. To add a method, write it in a new
file of this wing under ``@GROUPING_METHODS.register("name")`` and add the file's module to
``GROUPING_METHODS``' modules below; ``cluster_graph(graph, method="name", ...)``, the gallery's
``grouping`` setting and ``--grouping`` then accept it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from wildreid.decide.graph import MatchGraph
from wildreid.util.registry import Registry


@dataclass
class Clustering:
    labels: np.ndarray  # (nodes,) cluster number of every node, numbered by first node
    anchors: dict[int, int] = field(default_factory=dict)  # cluster -> its known individual's index
    conflicts: list[tuple[int, int, str]] = field(default_factory=list)  # must-links that could not be kept

    def query_labels(self, queries: int) -> np.ndarray:
        return self.labels[:queries]


class GroupingMethod(Protocol):
    def __call__(
        self,
        graph: MatchGraph,
        *,
        link_threshold: float,
        known_threshold: float | None,
        must_link: list[tuple[int, int]],
        cannot_link: list[tuple[int, int]],
    ) -> Clustering: ...


GROUPING_METHODS: Registry[GroupingMethod] = Registry("grouping method", modules=("wildreid.decide.agglomerative",))
METHODS = GROUPING_METHODS  # the name callers read it by: ``name in METHODS``, ``", ".join(METHODS)``


def cluster_graph(
    graph: MatchGraph,
    *,
    method: str = "average",
    link_threshold: float,
    known_threshold: float | None,
    must_link: list[tuple[int, int]] = (),
    cannot_link: list[tuple[int, int]] = (),
) -> Clustering:
    """Cluster ``graph``'s nodes with the grouping method registered as ``method``."""
    group = GROUPING_METHODS.get(method)
    return group(
        graph,
        link_threshold=link_threshold,
        known_threshold=known_threshold,
        must_link=must_link,
        cannot_link=cannot_link,
    )


def numbered_by_first_node(cluster_of: np.ndarray) -> np.ndarray:
    """Cluster numbers 0, 1, ... in the order the clusters' first nodes come, from any cluster keys
    (one per node), so that labels read in input order."""
    _, labels = np.unique(cluster_of, return_index=False, return_inverse=True)
    first_seen = {}
    for label in labels.tolist():
        first_seen.setdefault(label, len(first_seen))
    return np.array([first_seen[label] for label in labels.tolist()], dtype=np.int64)
