"""The grouping of a run's queries, as data: per dataset its match graph and clustering; per
query its group (a known individual, a provisional new individual shared by its group, or alone)
and the evidence for it. Reviewers' answers regroup a dataset without touching the gallery."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from wildreid.data.dataset import NEW_INDIVIDUAL
from wildreid.decide.cluster import Clustering, cluster_graph
from wildreid.decide.graph import MatchGraph

KNOWN, NEW, ALONE = "known", "new", "alone"
EVIDENCE_LINKS = 3  # strongest links inside its group shown per query


@dataclass
class DatasetGrouping:
    name: str
    rows: np.ndarray  # (N,) the queries' rows in the run's query table
    image_ids: np.ndarray  # (N,) object
    graph: MatchGraph
    method: str
    link_threshold: float
    known_threshold: float | None  # P(same) needed to join a known individual; None = closed set
    clustering: Clustering
    must_link: list[tuple[int, int]] = field(default_factory=list)  # node pairs, from reviewers
    cannot_link: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def fit(cls, name, rows, image_ids, graph, *, method, link_threshold, known_threshold) -> "DatasetGrouping":
        clustering = cluster_graph(graph, method=method, link_threshold=link_threshold, known_threshold=known_threshold)
        return cls(name, rows, image_ids, graph, method, link_threshold, known_threshold, clustering)

    def regroup(self) -> Clustering:
        """Cluster again under the current constraints; the graph (the scores) is unchanged."""
        self.clustering = cluster_graph(
            self.graph,
            method=self.method,
            link_threshold=self.link_threshold,
            known_threshold=self.known_threshold,
            must_link=self.must_link,
            cannot_link=self.cannot_link,
        )
        return self.clustering

    def identity_of(self, query: int) -> str | None:
        label = self.clustering.labels[query]
        anchor = self.clustering.anchors.get(int(label))
        return None if anchor is None else str(self.graph.identities[anchor])

    def members(self, query: int) -> np.ndarray:
        labels = self.clustering.query_labels(self.graph.queries)
        return np.flatnonzero(labels == labels[query])


@dataclass
class Grouping:
    """All datasets' groupings of one run; ``names`` gives each provisional group its name."""

    datasets: dict[str, DatasetGrouping]

    def per_query(self, queries: int) -> pd.DataFrame:
        """One row per query of the run (in its order): group, kind, size, identity and evidence.
        Provisional groups are named new_individual_1, _2, ... in order of their first query."""
        group = np.full(queries, "", dtype=object)
        kind = np.full(queries, ALONE, dtype=object)
        size = np.ones(queries, dtype=np.int64)
        identity = np.full(queries, NEW_INDIVIDUAL, dtype=object)
        inside = np.full(queries, "", dtype=object)
        gallery = np.full(queries, "", dtype=object)
        numbered = 0
        for grouping in self.datasets.values():
            graph, clustering = grouping.graph, grouping.clustering
            labels = clustering.query_labels(graph.queries)
            counts = np.bincount(labels, minlength=labels.max() + 1 if len(labels) else 0)
            names: dict[int, str] = {}
            for node, label in enumerate(labels.tolist()):
                row = grouping.rows[node]
                size[row] = counts[label]
                if label in clustering.anchors:
                    kind[row] = KNOWN
                    identity[row] = group[row] = str(graph.identities[clustering.anchors[label]])
                elif counts[label] > 1:
                    if label not in names:
                        numbered += 1
                        names[label] = f"{NEW_INDIVIDUAL}_{numbered}"
                    kind[row], group[row] = NEW, names[label]
                else:
                    group[row] = ""
            inside_links, gallery_links = _evidence(grouping)
            inside[grouping.rows], gallery[grouping.rows] = inside_links, gallery_links
        return pd.DataFrame(
            {
                "group": group,
                "group_kind": kind,
                "group_size": size,
                "group_identity": identity,
                "links_in_group": inside,
                "best_gallery_link": gallery,
            }
        )


def _evidence(grouping: DatasetGrouping) -> tuple[list[str], list[str]]:
    """Per query node: its strongest links inside its group ("image_id:P; ...") and its strongest
    link to a known individual ("identity:P")."""
    graph, labels = grouping.graph, grouping.clustering.labels
    inside: list[list[tuple[float, str]]] = [[] for _ in range(graph.queries)]
    best_gallery: list[tuple[float, str] | None] = [None] * graph.queries
    for a, b, p in zip(graph.left.tolist(), graph.right.tolist(), graph.probability.tolist()):
        if b >= graph.queries:  # a query and a known individual
            name = str(graph.identities[b - graph.queries])
            if best_gallery[a] is None or p > best_gallery[a][0]:
                best_gallery[a] = (p, name)
        elif labels[a] == labels[b]:
            inside[a].append((p, str(grouping.image_ids[b])))
            inside[b].append((p, str(grouping.image_ids[a])))
    inside_text = [
        "; ".join(f"{image}:{p:.3f}" for p, image in sorted(links, reverse=True)[:EVIDENCE_LINKS]) for links in inside
    ]
    gallery_text = ["" if best is None else f"{best[1]}:{best[0]:.3f}" for best in best_gallery]
    return inside_text, gallery_text
