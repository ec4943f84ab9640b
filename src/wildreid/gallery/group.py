"""One comparison group of a gallery (a dataset, or "all"): its index, its keypoints, and what is
fitted on it (calibration and threshold). Queries meet only the images of their own group.

Fitting asks a bounded sample of the group's own photos as pseudo-queries, through the same
index and shortlist as real queries (``shortlist.py``), so its cost grows with the sample, not
with the square of the database.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from ..fusion import Calibration
from ..grouping import LinkChoice, MatchGraph, choose_link_threshold
from ..local.base import LocalFeatures, LocalMethod
from ..local.lnbnn import KeypointIndex
from ..presets import AUTO, Preset
from ..search import IdentityRanking, rank_neighbours
from ..thresholds import Neighbours, ThresholdChoice, choose_threshold
from .index import VectorIndex
from .shortlist import ScoredPairs, nearest, shortlist_pairs

# Pseudo-queries of the threshold simulation (global descriptor alone). Every shared dataset
# (at most 3,019 database photos) fits in it whole, so there the simulation is the batch one.
SIMULATION_POOL = 4000
# Neighbours kept per pseudo-query: all of them up to EXACT_SIMULATION photos (the simulation is
# then the batch one, exactly), else SIMULATION_DEPTH. A round hides about 44% of the photos; a
# pseudo-query whose kept neighbours are all hidden goes unanswered (counted as "new"), so the
# depth must well exceed an identity's photo count: 1,024 leaves a pseudo-query unanswered with
# odds of about 0.44^(1024 - its identity's photos).
EXACT_SIMULATION = 4096
SIMULATION_DEPTH = 1024
# Neighbours searched per query for ranking; deepened for rows that found fewer than k identities.
RANKING_DEPTH = 100
# Known individuals each query is linked to in the grouping graph (its best ones).
GROUPING_IDENTITIES = 10


@dataclass
class GroupFit:
    """What was fitted on the group's database, and on what."""

    threshold: float | None
    choice: ThresholdChoice | None
    # Raw scores -> P(same individual): all of the preset's scores with local matching, else the
    # cosine alone (which then serves only the grouping; ranking stays by cosine).
    calibration: Calibration | None
    pseudo_queries: np.ndarray  # database positions asked as pseudo-queries
    images: int  # the group's size when fitted
    fitted_at: str
    seconds: float = 0.0
    # The grouping's query-to-query threshold for the preset's linkage method, chosen on the database.
    links: dict[str, LinkChoice] = field(default_factory=dict)


@dataclass
class Group:
    name: str
    image_ids: np.ndarray  # (D,) object: gallery image id of each database position
    identities: np.ndarray  # (D,) object
    near_duplicates: np.ndarray | None  # (D,) object: clip/date of each photo, None where unknown
    index: VectorIndex
    features: list[LocalFeatures | None] | None = None
    keypoints: KeypointIndex | None = None
    fit: GroupFit | None = None
    askable: np.ndarray | None = None  # (D,) bool: photos a calibration may ask (see Gallery)
    notes: list = field(default_factory=list)
    # The last fit's scored pseudo-query pairs (rows, images, P(same)); in memory only, so that
    # another linkage's threshold can be chosen without matching again (link_choice).
    fit_pairs: tuple | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.identities)

    # ------------------------------------------------------------------ fitting

    def fit_to(self, preset: Preset, method: LocalMethod | None, *, seed: int = 0) -> GroupFit:
        """Calibration (with local matching) and threshold, on the group's own photos; then the
        grouping's linking threshold, from the same scored pairs."""
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        pool = np.flatnonzero(self.askable) if self.askable is not None else np.arange(self.size)
        if method is not None:
            pseudo = np.zeros(self.size, dtype=bool)
            pseudo[rng.permutation(pool)[: preset.fusion.calibration_anchors]] = True
            rows = np.flatnonzero(pseudo)
            pairs = self._pseudo_query_pairs(rows, preset, method)
            same = (self.identities[rows[pairs.queries]] == self.identities[pairs.images]).astype(float)
            calibration = Calibration.fit(pairs.raw, same)
            fused = calibration.fuse(pairs.raw)
            neighbours = Neighbours.from_pairs(rows[pairs.queries], pairs.images, fused, pseudo)
            scored = (rows[pairs.queries], pairs.images, fused, calibration.fuse(_between_queries(pairs.raw)))
        else:
            pseudo = np.zeros(self.size, dtype=bool)
            pseudo[pool if len(pool) <= SIMULATION_POOL else rng.choice(pool, SIMULATION_POOL, replace=False)] = True
            neighbours = self._global_neighbours(np.flatnonzero(pseudo))
            calibration, scored = self._cosine_calibration(np.flatnonzero(pseudo), preset)
        threshold, choice = _threshold(preset.threshold, self.name, neighbours, self.identities, self.near_duplicates)
        self.fit_pairs = scored
        links = {}
        if calibration is not None and preset.grouping is not None:
            links[preset.grouping] = self._link_choice(preset.grouping, threshold, calibration, method, seed)
        self.fit = GroupFit(
            threshold,
            choice,
            calibration,
            np.flatnonzero(pseudo),
            self.size,
            time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            time.perf_counter() - started,
            links,
        )
        return self.fit

    def link_choice(self, linkage: str, method: LocalMethod | None, *, seed: int = 0) -> LinkChoice:
        """The linking threshold for another linkage method, from the last fit's scored pairs
        (held in memory since that fit), and kept in the fit."""
        if self.fit_pairs is None:
            raise ValueError(f"'{self.name}': no scored pairs in memory; refit the gallery first.")
        self.fit.links[linkage] = self._link_choice(linkage, self.fit.threshold, self.fit.calibration, method, seed)
        return self.fit.links[linkage]

    def _link_choice(self, linkage, threshold, calibration, method, seed) -> LinkChoice:
        rows, images, probability, pair_probability = self.fit_pairs
        return choose_link_threshold(
            rows,
            images,
            probability,
            self.identities,
            pair_probability=pair_probability,
            known_threshold=_as_probability(threshold, calibration, method),
            method=linkage,
            near_duplicates=self.near_duplicates,
            seed=seed,
        )

    def _cosine_calibration(self, rows: np.ndarray, preset: Preset):
        """Cosine -> P(same) on each pseudo-query's shortlist of nearest photos (itself and its
        near-duplicates excluded), as a query's shortlist would be; with the scored pairs."""
        queries, images = nearest(self.index, self.index.vectors(rows), preset.fusion.shortlist, self._excluded(rows))
        if len(queries) == 0:
            return None, None
        cosine = self.index.pair_cosine(self.index.vectors(rows), queries, images)
        same = (self.identities[rows[queries]] == self.identities[images]).astype(float)
        calibration = Calibration.fit({"cosine": cosine}, same)
        probability = calibration.fuse({"cosine": cosine})
        return calibration, (rows[queries], images, probability, probability)

    def _excluded(self, rows: np.ndarray) -> list[set[int]]:
        """What each database photo asked as a pseudo-query may not match: itself, and photos
        of its own clip or date (real queries come from other visits)."""
        excluded = [{int(row)} for row in rows]
        if self.near_duplicates is not None:
            members: dict = {}
            for position, group in enumerate(self.near_duplicates):
                if group is not None and group == group:
                    members.setdefault(group, []).append(position)
            for banned, row in zip(excluded, rows):
                banned.update(members.get(self.near_duplicates[row], ()))
        return excluded

    def _pseudo_query_pairs(self, rows: np.ndarray, preset: Preset, method: LocalMethod) -> ScoredPairs:
        return shortlist_pairs(
            self.index,
            self.index.vectors(rows),
            [self.features[r] for r in rows],
            self.keypoints,
            self.features,
            method,
            preset.fusion,
            excluded=self._excluded(rows),
        )

    def _global_neighbours(self, rows: np.ndarray) -> Neighbours:
        depth = self.size if self.size <= EXACT_SIMULATION else SIMULATION_DEPTH
        scores, columns = self.index.search(self.index.vectors(rows), depth)
        return Neighbours(rows, columns, scores)

    # ------------------------------------------------------------------ queries

    def rank(
        self,
        vectors: np.ndarray,
        features: list[LocalFeatures | None] | None,
        preset: Preset,
        method: LocalMethod | None,
        k: int,
    ) -> tuple[IdentityRanking, ScoredPairs | None]:
        """The k best identities of each query: by fused P(same) over its shortlist when the
        preset matches keypoints, else by cosine over its nearest photos."""
        if len(vectors) == 0 or self.size == 0:
            empty = np.zeros((len(vectors), 0))
            return rank_neighbours(empty.astype(np.int64), empty, self.identities, k), None
        if method is not None:
            pairs = shortlist_pairs(self.index, vectors, features, self.keypoints, self.features, method, preset.fusion)
            fused = self.fit.calibration.fuse(pairs.raw)
            lists = Neighbours.from_pairs(pairs.queries, pairs.images, fused, np.ones(len(vectors), dtype=bool))
            return rank_neighbours(lists.columns, lists.scores, self.identities, k), pairs
        return self._rank_by_cosine(vectors, k), None

    def _rank_by_cosine(self, vectors: np.ndarray, k: int) -> IdentityRanking:
        wanted = min(k, len(np.unique(self.identities)))
        depth = min(self.size, max(RANKING_DEPTH, 4 * k))
        scores, columns = self.index.search(vectors, depth)
        ranking = rank_neighbours(columns, scores, self.identities, k)
        # A query whose nearest photos show fewer than k identities looks deeper, up to all of them.
        while depth < self.size:
            short = np.flatnonzero((ranking.best_images >= 0).sum(axis=1) < wanted)
            if len(short) == 0:
                break
            depth = min(self.size, depth * 4)
            scores, columns = self.index.search(vectors[short], depth)
            deeper = rank_neighbours(columns, scores, self.identities, k)
            for name in ("identities", "scores", "best_images"):
                getattr(ranking, name)[short] = getattr(deeper, name)
        return ranking

    def match_graph(
        self,
        vectors: np.ndarray,
        features: list[LocalFeatures | None] | None,
        ranking: IdentityRanking,
        preset: Preset,
        method: LocalMethod | None,
    ) -> MatchGraph:
        """The queries compared with each other (a shortlist from an index of the queries, local
        verification, the group's calibration) and with their best known individuals (from their
        ranking), every edge as P(same individual)."""
        calibration = self.fit.calibration
        query_index = VectorIndex.build(vectors)
        settings = dataclasses.replace(preset.fusion, use_lnbnn=False)  # see _between_queries
        pairs = shortlist_pairs(
            query_index,
            vectors,
            features if method is not None else None,
            None,
            features if method is not None else None,
            method,
            settings,
            excluded=[{row} for row in range(len(vectors))],
        )
        query_probability = calibration.fuse(_between_queries(pairs.raw))
        known = np.array([identity is not None for identity in ranking.identities.ravel()]).reshape(
            ranking.identities.shape
        )
        link_queries = np.nonzero(known)[0]
        link_scores = ranking.scores[known]
        if method is None:  # ranked by cosine: the same calibration as the query pairs
            link_scores = calibration.fuse({"cosine": link_scores})
        return MatchGraph.build(
            len(vectors),
            (pairs.queries, pairs.images, query_probability),
            (link_queries, ranking.identities[known], link_scores),
        )

    def known_probability(self, threshold: float | None, method: LocalMethod | None) -> float | None:
        """A decision threshold on the ranking's scale, as P(same)."""
        return _as_probability(threshold, self.fit.calibration, method)

    # ------------------------------------------------------------------ growing

    def add(self, image_ids, identities, near_duplicates, vectors, features) -> None:
        """Append photos to the index and the keypoint index; nothing is refitted."""
        self.image_ids = np.concatenate([self.image_ids, np.asarray(image_ids, dtype=object)])
        self.identities = np.concatenate([self.identities, np.asarray(identities, dtype=object)])
        if self.near_duplicates is not None or near_duplicates is not None:
            old = (
                self.near_duplicates if self.near_duplicates is not None else np.full(self.size - len(image_ids), None)
            )
            new = near_duplicates if near_duplicates is not None else np.full(len(image_ids), None)
            self.near_duplicates = np.concatenate([np.asarray(old, dtype=object), np.asarray(new, dtype=object)])
        if self.askable is not None:
            self.askable = np.concatenate([self.askable, np.zeros(len(image_ids), dtype=bool)])
        self.index.add(vectors)
        if self.features is not None:
            self.features = self.features + list(features)
            self.keypoints.add(list(features))


def _threshold(setting, name: str, neighbours: Neighbours, identities, near_duplicates):
    """The threshold of one group: given by the preset, or chosen on its database."""
    if setting is None or isinstance(setting, float | int):
        return (None if setting is None else float(setting)), None
    if isinstance(setting, dict):
        if name not in setting:
            raise ValueError(
                f"no threshold given for dataset '{name}' (thresholds given for {sorted(setting)}); add '{name}=VALUE'."
            )
        return float(setting[name]), None
    if setting != AUTO:
        raise ValueError(f"unknown threshold setting {setting!r}")
    choice = choose_threshold(neighbours, identities, near_duplicate_groups=near_duplicates)
    return choice.threshold, choice


def _as_probability(threshold: float | None, calibration: Calibration | None, method: LocalMethod | None):
    """The new_individual threshold as P(same): fused scores already are; a cosine goes through
    the cosine calibration (monotone, so the same queries pass)."""
    if threshold is None or calibration is None or method is not None or not np.isfinite(threshold):
        return threshold
    return float(calibration.fuse({"cosine": np.array([threshold])})[0])


def _between_queries(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The scores that mean the same between two queries as between a query and the database:
    all but LNBNN, whose votes are normalised by the keypoints of the set searched (the
    database), so the same pair scores higher among a few queries than against a large database."""
    return {name: values for name, values in raw.items() if name != "lnbnn"}
