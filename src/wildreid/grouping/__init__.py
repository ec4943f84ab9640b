"""Grouping queries into individuals (the transductive decision): a match graph of queries and
known individuals (graph.py), clustered under reviewers' constraints (cluster.py), with its
linking threshold chosen on the database (simulate.py); the run's grouping as data (grouping.py)."""

from .cluster import METHODS, Clustering, cluster_graph
from .graph import MatchGraph
from .grouping import DatasetGrouping, Grouping
from .simulate import LinkChoice, choose_link_threshold

__all__ = [
    "METHODS",
    "Clustering",
    "DatasetGrouping",
    "Grouping",
    "LinkChoice",
    "MatchGraph",
    "choose_link_threshold",
    "cluster_graph",
]
