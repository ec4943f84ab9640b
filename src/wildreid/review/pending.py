"""The waiting photos of one dataset grouped into proposed individuals, with the reviewers'
answers kept as constraints.

Waiting photos (uploaded, identified, not filed yet) are identified together against the
catalogue's gallery with grouping (as ``Gallery.identify`` does): compared with each other as well
as with the known individuals, the same stages and calibration as query-vs-gallery. What each
photo's identification and earlier groupings computed is reused (waiting.py). The answers stored in
the catalogue (``changes.answer_pair``, ``changes.split_group``) are mapped from query ids and
individual ids to the nodes of the match graph and applied as must-links ("same") and
cannot-links ("different"), so a grouping rebuilt after a restart or a confirmation keeps every
answer. An answer given now regroups at once, without refitting the gallery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wildreid.catalog.changes import PENDING, pair_answers
from wildreid.catalog.store import Catalog
from wildreid.decide.grouping import DatasetGrouping
from wildreid.decide.queue import (
    CANT_TELL,
    DIFFERENT,
    SAME,
    PairQuestion,
    apply_answer,
    pair_questions,
    settled_queries,
)
from wildreid.gallery.gallery import Gallery
from wildreid.review.waiting import WaitingPhotos

# A question whose answer the machine is this sure of (P(same) below it for two groups kept
# apart, above 1 minus it for a pair put together) is not put to a person.
QUESTION_FLOOR = 0.01
UPLOAD = "upload-"  # image_id of a waiting photo in the gallery's tables: upload-<query id>
KNOWN, NEW, ALONE = "known", "new", "alone"


@dataclass
class ProposedGroup:
    query_ids: list[int]  # the waiting photos in it, oldest first
    kind: str  # KNOWN (with a known individual), NEW (several photos, no known individual), ALONE
    individual_id: str | None  # KNOWN: the individual the group links to
    cohesion: float | None  # mean P(same) over its photos' pairs (an unscored pair counts 0); None: one photo
    individual_probability: float | None  # KNOWN: the strongest P(same) of its photos to the individual
    settled: int  # its photos tied by reviewers' "same" answers


@dataclass
class PendingGrouping:
    dataset: str
    query_ids: list[int]  # the waiting photos it was built for (those that could not be read have no node)
    nodes: list[int]  # query id of each query node of the match graph
    grouping: DatasetGrouping | None  # None: no photo could be grouped
    asked: set[tuple[int, int]] = field(default_factory=set)  # node pairs answered (any answer)

    # ------------------------------------------------------------------ nodes

    def node_of_query(self, query_id: int) -> int | None:
        try:
            return self.nodes.index(int(query_id))
        except ValueError:
            return None

    def node_of_individual(self, individual_id: str) -> int | None:
        """The individual's node, when the graph has one (it was among some photo's candidates)."""
        if self.grouping is None:
            return None
        found = np.flatnonzero(self.grouping.graph.identities == individual_id)
        return int(self.grouping.graph.queries + found[0]) if len(found) else None

    def describe(self, node: int) -> tuple[str, int | str]:
        """("query", query id) or ("individual", individual id)."""
        queries = self.grouping.graph.queries
        if node < queries:
            return "query", self.nodes[node]
        return "individual", str(self.grouping.graph.identities[node - queries])

    def probability(self, left: int, right: int) -> float | None:
        """The P(same) of the graph's edge between two nodes (None: not even shortlisted)."""
        graph = self.grouping.graph
        a, b = min(left, right), max(left, right)
        found = np.flatnonzero((graph.left == a) & (graph.right == b))
        return float(graph.probability[found[0]]) if len(found) else None

    # ------------------------------------------------------------------ answers

    def apply_answers(self, answers: list[dict]) -> None:
        """Make the stored answers (``changes.pair_answers``) the constraints, replacing those
        held, and regroup. Answers about photos or individuals the graph does not hold (filed
        since, or no longer among the candidates) cannot constrain it and are left out."""
        if self.grouping is None:
            return
        must, cannot, asked = [], [], set()
        for answer in answers:
            left = self.node_of_query(answer["query_id"])
            right = (
                self.node_of_query(answer["other_query_id"])
                if answer["other_query_id"] is not None
                else self.node_of_individual(answer["individual_id"])
            )
            if left is None or right is None:
                continue
            pair = (min(left, right), max(left, right))
            asked.add(pair)
            if answer["answer"] == SAME:
                must.append(pair)
            elif answer["answer"] == DIFFERENT:
                cannot.append(pair)
        unchanged = (must, cannot) == (self.grouping.must_link, self.grouping.cannot_link)
        self.grouping.must_link, self.grouping.cannot_link, self.asked = must, cannot, asked
        if not unchanged:  # the same constraints would cluster the same
            self.grouping.regroup()

    def answer(self, left: int, right: int, answer: str) -> int:
        """Apply one answer now (``review.apply_answer``: regrouped at once, the gallery not
        refitted); return how many photos it settled: how much ``settled()`` grew (the photos of
        the groups the question was about, less those earlier answers had settled already);
        none for "can't tell". The flash of an answer and the "settled by answers" tile so
        count the same photos."""
        before = self.settled()
        apply_answer(self.grouping, left, right, answer)
        self.asked.add((min(left, right), max(left, right)))
        return 0 if answer == CANT_TELL else max(self.settled() - before, 0)

    # ------------------------------------------------------------------ what the page shows

    def questions(self) -> list[PairQuestion]:
        """The open questions, most useful first, less those whose answer is all but certain
        (``QUESTION_FLOOR``): a pair the machine gives P(same) 0.00 is not a question for a
        person, and counting such pairs made the count grow after every "different" (a photo
        answered apart from its group met a 0.00 pair with each other group and individual)."""
        if self.grouping is None:
            return []
        return [
            question
            for question in pair_questions(self.grouping, self.asked)
            if (question.probability if question.kind == "join" else 1.0 - question.probability) >= QUESTION_FLOOR
        ]

    def photos_with_questions(self) -> int:
        """Waiting photos that an open question is about: at most the photos waiting, and an
        answer takes its photos out unless the regrouping leaves them a question of their own."""
        queries = 0 if self.grouping is None else self.grouping.graph.queries
        return len({node for q in self.questions() for node in (q.left, q.right) if node < queries})

    def settled(self) -> int:
        """Waiting photos whose grouping reviewers' answers decided: those in a group that holds a
        photo or an individual some "same" or "different" answer was about."""
        if self.grouping is None:
            return 0
        grouping = self.grouping
        labels = grouping.clustering.labels
        ends = [node for pair in (*grouping.must_link, *grouping.cannot_link) for node in pair]
        return int(np.isin(labels[: grouping.graph.queries], labels[ends]).sum()) if ends else 0

    def groups(self) -> list[ProposedGroup]:
        """The proposed groups: the largest first, photos on their own last."""
        if self.grouping is None:
            return []
        graph, clustering = self.grouping.graph, self.grouping.clustering
        labels = clustering.query_labels(graph.queries)
        tied = settled_queries(self.grouping)
        # Each edge read once (not once per group): its group, if both ends are in one, and
        # whether it joins a photo to its group's individual. Probabilities stay in edge order,
        # so each group's sum is the one numpy makes of them.
        between = graph.right < graph.queries
        group_of_edge = labels[graph.left]
        inside = between & (group_of_edge == labels[np.where(between, graph.right, 0)])
        anchor_of = np.full(max(labels.max(initial=-1), *clustering.anchors, -1) + 1, -1, dtype=np.int64)
        anchor_of[list(clustering.anchors)] = list(clustering.anchors.values())
        anchors = anchor_of[group_of_edge]
        towards = ~between & (anchors >= 0) & (graph.right == graph.queries + anchors)
        members_of = _by_group(labels, np.arange(len(labels)))
        inside_of = _by_group(group_of_edge[inside], graph.probability[inside])
        towards_of = _by_group(group_of_edge[towards], graph.probability[towards])
        groups = []
        for label in dict.fromkeys(labels.tolist()):
            members = members_of[label]
            anchor = clustering.anchors.get(label)
            pairs = len(members) * (len(members) - 1) / 2
            linked = towards_of.get(label)
            groups.append(
                ProposedGroup(
                    query_ids=sorted(self.nodes[m] for m in members),
                    kind=KNOWN if anchor is not None else NEW if len(members) > 1 else ALONE,
                    individual_id=None if anchor is None else str(graph.identities[anchor]),
                    cohesion=float(inside_of.get(label, np.zeros(0)).sum() / pairs) if pairs else None,
                    individual_probability=float(linked.max()) if linked is not None else None,
                    settled=int(tied[members].sum()),
                )
            )
        groups.sort(key=lambda g: (g.kind == ALONE, -len(g.query_ids), g.query_ids[0]))
        return groups


def _by_group(labels: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    """``values`` split by label, each label's in their order."""
    order = np.argsort(labels, kind="stable")
    labels, values = labels[order], values[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if len(labels) else np.zeros(0, np.int64)
    return {int(labels[start]): part for start, part in zip(starts, np.split(values, starts[1:]))}


def pending_queries(catalog: Catalog, dataset: str) -> list[dict]:
    """The photos of ``dataset`` waiting for a decision (identified; skipped ones included)."""
    return [query for query in catalog.queries(status=list(PENDING), limit=1_000_000) if query["dataset"] == dataset]


def group_pending(
    catalog: Catalog,
    gallery: Gallery,
    dataset: str,
    *,
    cache_dir: str | Path | None = None,
    memory: WaitingPhotos | None = None,
) -> PendingGrouping:
    """Group the waiting photos of ``dataset`` against ``gallery`` (the catalogue's, up to date:
    ``catalog_gallery``) with the gallery's own grouping method (average linkage when its preset
    groups none), and apply the stored answers. ``cache_dir``: the descriptor cache (a waiting
    photo grouped again is not described again); ``memory``: what earlier groupings and
    identifications of this dataset's photos computed (review/waiting.py), used and updated."""
    queries = catalog.query_photos(dataset, list(PENDING))  # as pending_queries, without their results
    query_ids = [query["id"] for query in queries]
    if not queries:
        return PendingGrouping(dataset, [], [], None)
    memory = WaitingPhotos() if memory is None else memory
    ids = [(f"{UPLOAD}{query['id']}", query["sha256"]) for query in queries]
    unknown = [queries[row] for row in memory.missing(ids)]
    table = pd.DataFrame(
        {
            "image_id": [f"{UPLOAD}{query['id']}" for query in unknown],
            "path": [str(catalog.photo_path(query["stored_path"])) for query in unknown],
            "dataset": dataset,
        }
    )
    method = gallery.preset.grouping or "average"
    grouped = memory.group(gallery, ids, table, cache_dir=cache_dir, grouping=method)
    groupings = list(grouped.datasets.values())
    if not groupings:  # no photo could be read
        return PendingGrouping(dataset, query_ids, [], None)
    [grouping] = groupings  # one dataset's photos: one group of the gallery
    nodes = [int(str(image_id).removeprefix(UPLOAD)) for image_id in grouping.image_ids]
    pending = PendingGrouping(dataset, query_ids, nodes, grouping)
    pending.apply_answers(pair_answers(catalog, dataset))
    return pending


def without_queries(pending: PendingGrouping, query_ids: set[int], answers: list[dict]) -> PendingGrouping:
    """``pending`` less some photos (just filed), at once: their nodes leave the match graph, the
    rest is regrouped under ``answers``. Their links to the others go with them, so a full regroup
    (``group_pending``, against the gallery that now holds them) should follow."""
    if pending.grouping is None:
        return PendingGrouping(pending.dataset, [q for q in pending.query_ids if q not in query_ids], [], None)
    old = pending.grouping
    keep = np.array([node not in query_ids for node in pending.nodes], dtype=bool)
    graph, kept = old.graph.subgraph(keep)
    grouping = DatasetGrouping.fit(
        old.name,
        old.rows[kept],
        old.image_ids[kept],
        graph,
        method=old.method,
        link_threshold=old.link_threshold,
        known_threshold=old.known_threshold,
    )
    reduced = PendingGrouping(
        pending.dataset,
        [q for q in pending.query_ids if q not in query_ids],
        [pending.nodes[node] for node in kept],
        grouping if graph.queries else None,
    )
    reduced.apply_answers(answers)
    return reduced


def answered_individuals(answers: list[dict], query_id: int) -> tuple[str | None, set[str]]:
    """What the stored answers (``changes.pair_answers``) say about one waiting photo and the known
    individuals, read as grouping reads them (``apply_answers``: "same" a must-link, "different"
    a cannot-link between whole must-linked components): (the individual the photo is tied to by
    "same" answers, directly or through other photos, or None; the individuals it is kept apart
    from). Tied to one individual, the photo is apart from every other one too (two known
    individuals are never one animal), but that follows from the tie and is not listed.

    The single-photo review page and the drop-downs offer individuals through this, so an answer
    "different" (or "not this one") never comes back as a suggestion."""
    owner: dict[tuple[str, object], tuple[str, object]] = {}

    def root(node: tuple[str, object]) -> tuple[str, object]:
        owner.setdefault(node, node)
        while owner[node] != node:
            owner[node] = owner[owner[node]]
            node = owner[node]
        return node

    def ends(answer: dict) -> tuple[tuple[str, object], tuple[str, object]]:
        other = answer["other_query_id"]
        right = ("query", int(other)) if other is not None else ("individual", answer["individual_id"])
        return ("query", int(answer["query_id"])), right

    for answer in answers:
        if answer["answer"] == SAME:
            left, right = ends(answer)
            owner[root(left)] = root(right)
    mine = root(("query", int(query_id)))
    tied = sorted(str(key) for kind, key in owner if kind == "individual" and root((kind, key)) == mine)
    apart: set[str] = set()
    for answer in answers:
        if answer["answer"] != DIFFERENT:
            continue
        left, right = ends(answer)
        for this, that in ((left, right), (right, left)):
            if root(this) == mine:
                other = root(that)
                apart |= {str(key) for kind, key in list(owner) if kind == "individual" and root((kind, key)) == other}
                if that[0] == "individual":
                    apart.add(str(that[1]))
    return (tied[0] if tied else None), apart
