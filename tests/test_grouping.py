"""Grouping queries into individuals: the match graph, constrained clustering, the linking
threshold chosen on the database, and the ARI / pairwise metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from wildreid.decide.cluster import GROUPING_METHODS, METHODS, Clustering, cluster_graph
from wildreid.decide.graph import MatchGraph
from wildreid.decide.simulate import choose_link_threshold
from wildreid.evaluate.metrics import pairwise_precision_recall, query_clusters
from wildreid.util.registry import UnknownName


def graph(queries, pairs=(), links=()):
    """pairs: (q, q, P); links: (q, identity, P)."""
    pairs = np.array(pairs, dtype=object).reshape(-1, 3)
    links = np.array(links, dtype=object).reshape(-1, 3)
    return MatchGraph.build(
        queries,
        (pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2].astype(float)),
        (links[:, 0].astype(int), links[:, 1], links[:, 2].astype(float)),
    )


def named(clustering, g):
    return [
        str(g.identities[clustering.anchors[label]]) if label in clustering.anchors else f"group{label}"
        for label in clustering.query_labels(g.queries)
    ]


def test_graph_keeps_one_edge_per_pair_with_its_larger_probability():
    g = graph(3, pairs=[(0, 1, 0.2), (1, 0, 0.7), (2, 2, 0.9)], links=[(0, "X", 0.3), (0, "X", 0.6), (2, "Y", 0.1)])
    edges = {(int(a), int(b)): float(p) for a, b, p in zip(g.left, g.right, g.probability)}
    assert edges == {(0, 1): 0.7, (0, 3): 0.6, (2, 4): 0.1}  # no self-loop; X is node 3, Y node 4
    assert list(g.identities) == ["X", "Y"]


@pytest.mark.parametrize("method", ["average", "single"])
def test_known_threshold_decides_a_lone_query_as_today(method):
    g = graph(2, links=[(0, "X", 0.9), (0, "Y", 0.8), (1, "X", 0.4)])
    result = cluster_graph(g, method=method, link_threshold=0.5, known_threshold=0.5)
    # Query 0 takes its best individual (never two: X and Y cannot share a cluster); query 1's
    # best link is below the threshold, so it stays alone.
    assert named(result, g) == ["X", f"group{result.labels[1]}"]
    assert result.labels[1] not in result.anchors


def test_a_group_takes_the_individual_one_member_matches_strongly():
    g = graph(2, pairs=[(0, 1, 0.95)], links=[(0, "X", 0.9), (1, "X", 0.3)])
    result = cluster_graph(g, method="average", link_threshold=0.5, known_threshold=0.5)
    # Transductive: query 1 alone would be new (0.3 < 0.5), but it matches query 0 strongly and
    # the group's average link to X is (0.95 + 0.3) / 2 >= 0.5.
    assert named(result, g) == ["X", "X"]


def test_average_linkage_does_not_chain_where_single_linkage_does():
    chain = [(0, 1, 0.9), (1, 2, 0.9), (2, 3, 0.9)]
    g = graph(4, pairs=chain)
    average = cluster_graph(g, method="average", link_threshold=0.6, known_threshold=0.6)
    single = cluster_graph(g, method="single", link_threshold=0.6, known_threshold=0.6)
    assert len(set(single.query_labels(4))) == 1
    assert len(set(average.query_labels(4))) == 2  # {0,1} and {2,3}: 0.9 / 4 pairs is too weak


@pytest.mark.parametrize("method", ["average", "single"])
def test_cannot_link_and_must_link_are_kept(method):
    g = graph(3, pairs=[(0, 1, 0.9), (1, 2, 0.1)])
    apart = cluster_graph(g, method=method, link_threshold=0.5, known_threshold=0.5, cannot_link=[(0, 1)])
    assert apart.labels[0] != apart.labels[1]
    joined = cluster_graph(g, method=method, link_threshold=0.5, known_threshold=0.5, must_link=[(1, 2)])
    # A reviewer's "same" joins the two photos' groups ({0, 1} by their 0.9, and {2}), though
    # 1 and 2 score only 0.1.
    assert joined.labels[0] == joined.labels[1] == joined.labels[2]


def test_must_link_between_two_known_individuals_is_reported_not_kept():
    g = graph(2, links=[(0, "X", 0.9), (1, "Y", 0.9)])
    result = cluster_graph(g, method="average", link_threshold=0.5, known_threshold=0.5, must_link=[(2, 3)])
    assert result.labels[2] != result.labels[3]
    assert result.conflicts and result.conflicts[0][2] == "two known individuals"


def test_closed_set_takes_the_best_individual_however_weak():
    g = graph(1, links=[(0, "X", 0.01), (0, "Y", 0.02)])
    result = cluster_graph(g, method="average", link_threshold=0.5, known_threshold=None)
    assert named(result, g) == ["Y"]


def test_linking_threshold_chosen_on_the_database_separates_same_from_different():
    """Database photos of 30 individuals, 4 each; pairs of one individual score 0.8, others 0.2:
    the chosen threshold lies between, and the simulated grouping is nearly perfect."""
    rng = np.random.default_rng(0)
    identities = np.repeat([f"id{i}" for i in range(30)], 4).astype(object)
    rows, images, probability = [], [], []
    for a in range(len(identities)):
        for b in rng.choice(len(identities), 12, replace=False).tolist() + [
            c for c in range(len(identities)) if identities[c] == identities[a] and c != a
        ]:
            if a != b:
                rows.append(a)
                images.append(b)
                probability.append(0.8 if identities[a] == identities[b] else 0.2)
    choice = choose_link_threshold(
        np.array(rows), np.array(images), np.array(probability), identities, known_threshold=0.5
    )
    assert 0.2 < choice.threshold <= 0.8
    assert choice.simulated_ari > 0.9


def test_pairwise_precision_recall_and_ari():
    truth = ["a", "a", "a", "b", "b"]
    clusters = ["1", "1", "2", "2", "2"]
    precision, recall = pairwise_precision_recall(truth, clusters)
    # Predicted same pairs: (0,1), (2,3), (2,4), (3,4): one wrong pair... two wrong: (2,3), (2,4).
    assert precision == pytest.approx(2 / 4)
    # True same pairs: (0,1), (0,2), (1,2), (3,4): found (0,1) and (3,4).
    assert recall == pytest.approx(2 / 4)
    assert adjusted_rand_score(truth, truth) == 1.0


def test_query_clusters_reads_groups_and_leaves_new_individuals_alone():
    rows = pd.DataFrame(
        {
            "image_id": ["1", "2", "3", "4"],
            "prediction": ["X", "new_individual", "new_individual", "new_individual"],
            "group": ["X", "new_individual_1", "new_individual_1", ""],
        }
    )
    assert list(query_clusters(rows)) == ["X", "new_individual_1", "new_individual_1", "alone:4"]
    today = rows.drop(columns=["group"])
    assert list(query_clusters(today)) == ["X", "alone:2", "alone:3", "alone:4"]


def _grouping(g, link=0.5, known=0.5):
    from wildreid.decide.grouping import DatasetGrouping

    return DatasetGrouping.fit(
        "d",
        np.arange(g.queries),
        np.array([f"q{i}" for i in range(g.queries)], dtype=object),
        g,
        method="average",
        link_threshold=link,
        known_threshold=known,
    )


def test_review_queue_asks_the_most_useful_pair_first_and_never_a_settled_one():
    from wildreid.decide.queue import DIFFERENT, SAME, apply_answer, pair_questions

    # Two groups of three queries each, joined by one uncertain pair (0.45 < 0.5: kept apart),
    # and a lone query weakly linked (0.1) to a known individual.
    pairs = [(0, 1, 0.9), (1, 2, 0.9), (0, 2, 0.9), (3, 4, 0.9), (4, 5, 0.9), (3, 5, 0.9), (2, 3, 0.45)]
    g = graph(7, pairs=pairs, links=[(6, "X", 0.1)])
    grouping = _grouping(g)
    questions = pair_questions(grouping)
    first = questions[0]
    # The pair between the two groups: a 0.45 chance that keeping them apart is wrong, about
    # six photos.
    assert (first.left, first.right, first.kind) == (2, 3, "join")
    assert first.priority == pytest.approx(0.45 * 6)
    moved = apply_answer(grouping, 2, 3, SAME)
    assert moved == 6 and len(set(grouping.clustering.query_labels(7)[:6])) == 1
    # Settled: the same pair is never asked again, nor any pair inside the joined group's must-link.
    assert all((q.left, q.right) != (2, 3) for q in pair_questions(grouping, {(2, 3)}))
    # "different" between two photos of the joined group splits it, and the split holds.
    apply_answer(grouping, 0, 5, DIFFERENT)
    labels = grouping.clustering.query_labels(7)
    assert labels[0] != labels[5]
    assert grouping.cannot_link == [(0, 5)] and grouping.must_link == [(2, 3)]


def test_review_answer_same_with_a_known_individual_names_the_whole_group():
    from wildreid.decide.queue import SAME, apply_answer, settled_queries

    g = graph(3, pairs=[(0, 1, 0.9), (1, 2, 0.9), (0, 2, 0.9)], links=[(0, "X", 0.2)])
    grouping = _grouping(g)
    assert grouping.identity_of(0) is None  # 0.2 is below the known threshold
    x_node = 3
    apply_answer(grouping, 0, x_node, SAME)
    assert [grouping.identity_of(q) for q in range(3)] == ["X", "X", "X"]
    assert settled_queries(grouping).tolist() == [True, False, False]


def test_fast_adjusted_rand_index_equals_scikit_learn():
    from wildreid.decide.simulate import adjusted_rand_index

    rng = np.random.default_rng(1)
    for _ in range(20):
        truth, predicted = rng.integers(0, 6, 40), rng.integers(0, 9, 40)
        assert adjusted_rand_index(truth, predicted) == pytest.approx(adjusted_rand_score(truth, predicted))
    assert adjusted_rand_index(np.array([0, 0, 1]), np.array([4, 4, 7])) == pytest.approx(1.0)


def test_grouping_methods_are_registered_by_name():
    assert GROUPING_METHODS.names() == ["average", "single"] == list(METHODS)
    assert "average" in METHODS and ", ".join(METHODS) == "average, single"
    with pytest.raises(UnknownName, match="unknown grouping method 'ward'; choose one of average, single"):
        cluster_graph(graph(2), method="ward", link_threshold=0.5, known_threshold=0.5)
    with pytest.raises(ValueError):  # what callers caught before the registry
        cluster_graph(graph(2), method="ward", link_threshold=0.5, known_threshold=0.5)


@pytest.fixture
def strongest_edge_pairs():
    """A test's own grouping method: each query joins the query it is most strongly linked to,
    above the linking threshold, when that query has no partner yet; known individuals alone."""

    def pairs(graph, *, link_threshold, known_threshold, must_link, cannot_link):
        labels = np.arange(graph.nodes)
        for a, b, p in sorted(
            zip(graph.left.tolist(), graph.right.tolist(), graph.probability.tolist()), key=lambda e: -e[2]
        ):
            if b < graph.queries and p >= link_threshold and labels[a] == a and labels[b] == b:
                labels[b] = a
        _, labels = np.unique(labels, return_inverse=True)
        return Clustering(
            labels.astype(np.int64), {int(labels[graph.queries + i]): i for i in range(len(graph.identities))}
        )

    GROUPING_METHODS.register("pairs", pairs)
    yield "pairs"
    GROUPING_METHODS.unregister("pairs")


def test_a_new_grouping_method_is_used_by_name_end_to_end(strongest_edge_pairs):
    from wildreid.decide.grouping import DatasetGrouping, Grouping

    assert "pairs" in METHODS and GROUPING_METHODS.names()[-1] == "pairs"
    g = graph(4, pairs=[(0, 1, 0.9), (1, 2, 0.8), (2, 3, 0.7)], links=[(0, "X", 0.2)])
    grouping = DatasetGrouping.fit(
        "d",
        np.arange(4),
        np.array([f"q{i}" for i in range(4)], dtype=object),
        g,
        method="pairs",
        link_threshold=0.5,
        known_threshold=0.5,
    )
    labels = grouping.clustering.query_labels(4)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    table = Grouping({"d": grouping}).per_query(4)
    assert table["group"].tolist() == ["new_individual_1", "new_individual_1", "new_individual_2", "new_individual_2"]
