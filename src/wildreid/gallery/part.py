"""One comparison group of a gallery (a dataset, or "all"): its index, its keypoints, and what is
fitted on it (calibration and threshold). Queries meet only the images of their own group.

Fitting asks a bounded sample of the group's own photos as pseudo-queries, through the same
index and shortlist as real queries (``shortlist.py``), so its cost grows with the sample, not
with the square of the database.

With a view rule (views.py) every comparison, of a query with the database, of a pseudo-query with
the database, and of two queries with each other, is made only between compatible views (and,
with mirrored matching, between mirror views through the flipped photo).

With an adapter (adaptation.py) every global comparison goes through ``search_index``, the index of
the adapted vectors; vectors entering from outside (queries, mirrored photos) are adapted where they
enter (``rank``, ``match_graph``), their backbone's vectors kept beside (``Side.backbone``). A preset
may keep some uses of the global vector on the backbone's own (``Preset.adapt_uses``: which photos
are shortlisted, which cosine is scored, which query pairs the grouping compares), to measure each.
Over 600 lines: one object's state (its photos, indexes and fit) and the comparisons made with it;
the adaptation's choice and cross-fitting are kept apart.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from wildreid.decide.graph import MatchGraph
from wildreid.decide.ranking import IdentityRanking, rank_neighbours
from wildreid.decide.simulate import LinkChoice, choose_link_threshold
from wildreid.decide.thresholds import Neighbours, ThresholdChoice, choose_threshold, choose_threshold_and_top_m
from wildreid.describe.adapters import Adapter
from wildreid.gallery.calibration import Calibration
from wildreid.gallery.fusion_choice import between_queries, fit_fusion
from wildreid.gallery.index import VectorIndex
from wildreid.gallery.shortlist import ScoredPairs, shortlist_pairs
from wildreid.local.base import LocalFeatures, LocalMethod
from wildreid.local.lnbnn import KeypointIndex
from wildreid.local.pairs import BACKBONE_COSINE, FusionSettings
from wildreid.presets import AUTO, TOP_M_CHOICES, Preset

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
class PartFit:
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
    top_m: int = 1  # photos per identity averaged by the ranking (the preset's, or chosen on the database)
    # The adaptation chosen on the database, with its validation figures (adaptation.py's
    # fit_adaptation record); None where the preset asks for none.
    adaptation: dict | None = None
    # The fusion rule chosen on the database, with its validation figures (fusion_choice.py's
    # fit_fusion record); None where the preset asks for the mean.
    fusion_rule: dict | None = None


@dataclass
class Side:
    """What some photos bring to a comparison, seen one way (as taken, or mirrored): global
    vectors, keypoints of the main local method, and of each extra method by name. Once a group
    has adapted them, ``vectors`` are the adapted ones and ``backbone`` the backbone's own (None:
    not adapted, ``vectors`` are the backbone's)."""

    vectors: np.ndarray
    features: list[LocalFeatures | None] | None = None
    extra: dict[str, list[LocalFeatures | None]] = field(default_factory=dict)
    backbone: np.ndarray | None = None

    def take(self, rows) -> "Side":
        rows = np.asarray(rows, dtype=np.int64)
        return Side(
            self.vectors[rows],
            [self.features[r] for r in rows] if self.features is not None else None,
            {name: [found[r] for r in rows] for name, found in self.extra.items()},
            self.backbone[rows] if self.backbone is not None else None,
        )

    def unadapted(self) -> "Side":
        """The same photos compared by the backbone's own vectors."""
        return Side(self.backbone, self.features, self.extra) if self.backbone is not None else self

    def extend(self, other: "Side") -> "Side":
        return Side(
            np.concatenate([self.vectors, other.vectors]),
            self.features + other.features if self.features is not None else None,
            {name: found + other.extra[name] for name, found in self.extra.items()},
            np.concatenate([self.backbone, other.backbone]) if self.backbone is not None else None,
        )


@dataclass
class Taught:
    """Photos outside the database that reviewers' answers labelled (decide/answers.py): the
    adapter learns from them too (adaptation.py). They are never matched against, nor asked as
    pseudo-queries, so no threshold is fitted on them."""

    image_ids: np.ndarray  # (T,) object
    labels: np.ndarray  # (T,) object: a database identity, or a provisional name
    vectors: np.ndarray  # (T, d) the backbone's vectors

    @property
    def size(self) -> int:
        return len(self.labels)


@dataclass
class DatasetPart:
    name: str
    image_ids: np.ndarray  # (D,) object: gallery image id of each database position
    identities: np.ndarray  # (D,) object
    near_duplicates: np.ndarray | None  # (D,) object: clip/date of each photo, None where unknown
    index: VectorIndex
    features: list[LocalFeatures | None] | None = None
    keypoints: KeypointIndex | None = None
    fit: PartFit | None = None
    askable: np.ndarray | None = None  # (D,) bool: photos a calibration may ask (see Gallery)
    notes: list = field(default_factory=list)
    # The last fit's scored pseudo-query pairs (rows, images, P(same)); in memory only, so that
    # another linkage's threshold can be chosen without matching again (link_choice).
    fit_pairs: tuple | None = field(default=None, repr=False)
    views: np.ndarray | None = None  # (D,) object: each photo's view (views.py), None where unknown
    extra: dict[str, list[LocalFeatures | None]] = field(default_factory=dict)  # more local methods
    mirrored: Side | None = None  # the photos flipped left-right (mirrored matching)
    # The descriptor adapted to this group (describe/adapters.py), and the index of the adapted
    # vectors that every global comparison searches. ``index`` keeps the backbone's own vectors,
    # the one source both are made from (a refit learns the adapter again from them).
    adapter: Adapter | None = None
    adapted: VectorIndex | None = None
    # During a fit only: per identity fold, (the fold's photos, this group seen through an adapter
    # fitted without them); pseudo-queries are scored through their fold's (adaptation.py).
    cross_fit: list | None = field(default=None, repr=False)
    taught: Taught | None = None  # photos labelled by reviewers' answers, for the adapter

    @property
    def size(self) -> int:
        return len(self.identities)

    @property
    def search_index(self) -> VectorIndex:
        """The index every global comparison searches: of the adapted vectors, if adapted."""
        return self.adapted if self.adapted is not None else self.index

    def adapts(self, use: str, preset: Preset) -> bool:
        """Whether ``use`` of the global vector (presets.ADAPT_USES) goes through the adapter."""
        return self.adapter is not None and use in preset.adapt_uses

    def index_for(self, use: str, preset: Preset) -> VectorIndex:
        """The index ``use`` searches or scores with: of the adapted vectors where it adapts."""
        return self.search_index if self.adapts(use, preset) else self.index

    def use_adapter(self, adapter: Adapter | None) -> None:
        """Compare through ``adapter`` (None: the backbone's vectors as they are) from now on."""
        self.adapter = adapter
        self.adapted = None
        if adapter is not None:
            self.adapted = VectorIndex.build(adapter.transform(self.index.vectors(np.arange(self.size))))

    def adapt(self, vectors: np.ndarray) -> np.ndarray:
        """The backbone's vectors as this group compares them."""
        return self.adapter.transform(vectors) if self.adapter is not None else vectors

    def adapt_side(self, side: Side | None) -> Side | None:
        """``side`` as this group compares it: adapted vectors, the backbone's kept beside them."""
        if side is None or self.adapter is None:
            return side
        return Side(self.adapt(side.vectors), side.features, side.extra, side.vectors)

    # ------------------------------------------------------------------ fitting

    def fit_to(
        self,
        preset: Preset,
        method: LocalMethod | None,
        *,
        seed: int = 0,
        extra_methods: dict[str, LocalMethod] | None = None,
    ) -> PartFit:
        """Calibration (with local matching) and threshold, on the group's own photos; then the
        grouping's linking threshold, from the same scored pairs. A pseudo-query meets only the
        photos of compatible views, as a real query does."""
        from wildreid.gallery.adaptation import fit_adaptation

        started = time.perf_counter()
        fusion_rule = None
        adaptation = fit_adaptation(self, preset, seed=seed)
        rng = np.random.default_rng(seed)
        pool = np.flatnonzero(self.askable) if self.askable is not None else np.arange(self.size)
        if method is not None:
            pseudo = np.zeros(self.size, dtype=bool)
            pseudo[rng.permutation(pool)[: preset.fusion.calibration_anchors]] = True
            rows = np.flatnonzero(pseudo)
            pairs = self.asked_pairs(rows, preset, method, extra_methods or {})
            same = (self.identities[rows[pairs.queries]] == self.identities[pairs.images]).astype(float)
            calibration, fused, between, fusion_rule = fit_fusion(
                pairs,
                rows,
                same,
                self.identities,
                self.near_duplicates,
                setting=preset.fusion_rule,
                top_m_choices=preset.top_m_choices,
                seed=seed,
                name=self.name,
            )
            if fusion_rule is not None:
                self.notes.append(fusion_rule["note"])
            neighbours = Neighbours.from_pairs(rows[pairs.queries], pairs.images, fused, pseudo)
            scored = (rows[pairs.queries], pairs.images, fused, between)
        else:
            pseudo = np.zeros(self.size, dtype=bool)
            pseudo[pool if len(pool) <= SIMULATION_POOL else rng.choice(pool, SIMULATION_POOL, replace=False)] = True
            neighbours = self.asked_neighbours(np.flatnonzero(pseudo), preset)
            calibration, scored = self._cosine_calibration(np.flatnonzero(pseudo), preset)
        top_m, simulated = self._choose_top_m(neighbours) if preset.top_m == AUTO else (preset.top_m, None)
        threshold, choice = _threshold(
            preset.threshold, self.name, neighbours, self.identities, self.near_duplicates, top_m, simulated
        )
        self.fit_pairs = scored
        links = {}
        if calibration is not None and preset.grouping is not None:
            links[preset.grouping] = self._link_choice(preset.grouping, threshold, calibration, method, seed)
        self.fit = PartFit(
            threshold,
            choice,
            calibration,
            np.flatnonzero(pseudo),
            self.size,
            time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            time.perf_counter() - started,
            links,
            top_m,
            adaptation,
            fusion_rule,
        )
        self.cross_fit = None  # the fold views are needed no more (fit_pairs keeps their scores)
        return self.fit

    def _choose_top_m(self, neighbours: Neighbours) -> tuple[int, ThresholdChoice]:
        """The photos per identity whose simulated open-set score on the database is best (the
        simulation of thresholds.py, with each m's own best threshold; ties go to the smaller m),
        and that m's threshold choice."""
        chosen, choice, scores = choose_threshold_and_top_m(
            neighbours, self.identities, TOP_M_CHOICES, near_duplicate_groups=self.near_duplicates
        )
        self.notes.append(
            f"{self.name}: identities scored by the mean of their {chosen} best photo(s), chosen on the database "
            f"(simulated score {', '.join(f'm={m}: {v:.3f}' for m, v in scores.items())})."
        )
        return chosen, choice

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
        near-duplicates excluded, compatible views only), as a query's shortlist would be; with
        the scored pairs."""
        cosine_only = dataclasses.replace(preset.fusion, scores=("cosine",), use_lnbnn=False)
        pairs = self.asked_pairs(rows, preset, None, {}, settings=cosine_only)
        if len(pairs.queries) == 0:
            return None, None
        same = (self.identities[rows[pairs.queries]] == self.identities[pairs.images]).astype(float)
        calibration = Calibration.fit(pairs.raw, same, pairs.mirrored)
        probability = calibration.fuse(pairs.raw, pairs.mirrored)
        return calibration, (rows[pairs.queries], pairs.images, probability, probability)

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

    def own_side(self, rows: np.ndarray) -> Side:
        """Database photos as queries (pseudo-queries of a calibration)."""
        return Side(
            self.search_index.vectors(rows),
            [self.features[r] for r in rows] if self.features is not None else None,
            {name: [found[r] for r in rows] for name, found in self.extra.items()},
            self.index.vectors(rows) if self.adapter is not None else None,
        )

    def asked_pairs(self, rows, preset, method, extra_methods, settings=None) -> ScoredPairs:
        """The pairs of database photos asked as pseudo-queries; while cross-fitting, each fold's
        scored through an adapter that never saw its identities (adaptation.py)."""
        if not self.cross_fit:
            return self._pseudo_query_pairs(rows, preset, method, extra_methods, settings)
        from wildreid.gallery.adaptation import cross_fitted_pairs

        return cross_fitted_pairs(self.cross_fit, rows, preset, method, extra_methods, settings)

    def asked_neighbours(self, rows: np.ndarray, preset: Preset) -> Neighbours:
        """Pseudo-queries' nearest photos by cosine, cross-fitted as :meth:`asked_pairs`."""
        if not self.cross_fit:
            return self._global_neighbours(rows, preset)
        from wildreid.gallery.adaptation import cross_fitted_neighbours

        return cross_fitted_neighbours(self.cross_fit, rows, preset)

    def _pseudo_query_pairs(
        self,
        rows: np.ndarray,
        preset: Preset,
        method: LocalMethod | None,
        extra_methods: dict[str, LocalMethod],
        settings: FusionSettings | None = None,
    ) -> ScoredPairs:
        views = self.views[rows] if self.views is not None else None
        mirrored = self.adapt_side(self.mirrored.take(rows)) if self.mirrored is not None else None
        return self.pairs(
            self.own_side(rows),
            views,
            preset,
            method,
            extra_methods,
            mirrored=mirrored,
            excluded=self._excluded(rows),
            settings=settings,
        )

    # ------------------------------------------------------------------ viewpoints

    def view_masks(self, query_views, preset: Preset, excluded: list[set[int]] | None = None):
        """Per query, masks of the photos it meets directly and after a flip (views.py), and the
        views of the queries that fell back; masks are None where views play no part. A query
        whose view has no compatible photo (none left after its exclusions) meets every photo
        instead, as without views: a missing view in the database must not silence a query."""
        rule = preset.view_rule()
        if not rule.active or self.views is None or query_views is None:
            return None, None, []
        direct, flipped = rule.masks(query_views, self.views)
        if self.mirrored is None:
            flipped = [None] * len(direct)
        fallbacks = []
        for q, (mask, flip) in enumerate(zip(direct, flipped)):
            if mask is None:
                continue
            banned = list(excluded[q]) if excluded is not None else []
            left = int(mask.sum()) - int(mask[banned].sum()) if banned else int(mask.sum())
            if flip is not None:
                left += int(flip.sum()) - (int(flip[banned].sum()) if banned else 0)
            if left == 0:
                direct[q], flipped[q] = None, None
                fallbacks.append(query_views[q])
        return direct, flipped, fallbacks

    def pairs(
        self,
        side: Side,
        views,
        preset: Preset,
        method: LocalMethod | None,
        extra_methods: dict[str, LocalMethod],
        *,
        mirrored: Side | None = None,
        excluded: list[set[int]] | None = None,
        settings: FusionSettings | None = None,
    ) -> ScoredPairs:
        """Shortlisted, scored pairs of some photos with the group's: only compatible views, and
        mirror views through the flipped photos (``mirrored``). ``settings``: the preset's fusion
        settings unless given."""
        direct, flipped, _ = self.view_masks(views, preset, excluded)
        settings = settings or preset.fusion
        # Without keypoint matching there is no shortlist to verify: the pairs are the cosine's
        # own nearest photos (as a query ranked by cosine meets them), listed by the score's vector.
        listing_use = "shortlist" if method is not None else "score"
        listing, scoring = self.adapts(listing_use, preset), self.adapts("score", preset)
        listed, listed_mirrored = compared_as(side, mirrored, listing)
        scored, scored_mirrored = compared_as(side, mirrored, scoring)
        pairs = _scored_pairs(
            self.index_for(listing_use, preset),
            self.keypoints,
            self.features,
            self.extra,
            listed,
            settings,
            method,
            extra_methods,
            direct=direct,
            flipped=flipped,
            mirrored=listed_mirrored,
            excluded=excluded,
        )
        if listing != scoring:  # listed by one vector, scored by the other
            pairs = rescored(pairs, scored, scored_mirrored, self.index_for("score", preset))
        return with_backbone_cosine(pairs, settings, scored, scored_mirrored, self.index)

    def cosine_lists(
        self, vectors: np.ndarray, depth: int, views, preset: Preset, mirrored_vectors: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, columns) of each query's ``depth`` nearest compatible photos by cosine, best
        first, with its mirror-view photos compared through the flipped vector; padded -inf / -1."""
        direct, flipped, _ = self.view_masks(views, preset)
        index = self.index_for("score", preset)
        if direct is None:
            return index.search(vectors, depth)
        scores = np.full((len(vectors), 2 * depth), -np.inf)
        columns = np.full((len(vectors), 2 * depth), -1, dtype=np.int64)
        for masks, source, offset in ((direct, vectors, 0), (flipped, mirrored_vectors, depth)):
            if source is None:
                continue
            groups: dict[int, list[int]] = {}
            for q, mask in enumerate(masks):
                if masks is direct or mask is not None:
                    groups.setdefault(id(mask), []).append(q)
            for members in groups.values():
                rows = np.asarray(members, dtype=np.int64)
                found_scores, found_columns = index.search(source[rows], depth, masks[rows[0]])
                width = found_scores.shape[1]
                scores[rows, offset : offset + width] = found_scores
                columns[rows, offset : offset + width] = found_columns
        order = np.lexsort((np.where(columns >= 0, columns, np.iinfo(np.int64).max), -scores), axis=-1)
        return np.take_along_axis(scores, order, axis=1)[:, :depth], np.take_along_axis(columns, order, axis=1)[
            :, :depth
        ]

    def _global_neighbours(self, rows: np.ndarray, preset: Preset) -> Neighbours:
        depth = self.size if self.size <= EXACT_SIMULATION else SIMULATION_DEPTH
        views = self.views[rows] if self.views is not None else None
        adapted = self.adapts("score", preset)
        mirrored = None
        if self.mirrored is not None:
            mirrored = self.adapt(self.mirrored.vectors[rows]) if adapted else self.mirrored.vectors[rows]
        vectors = self.index_for("score", preset).vectors(rows)
        scores, columns = self.cosine_lists(vectors, depth, views, preset, mirrored)
        return Neighbours(rows, columns, scores)

    # ------------------------------------------------------------------ queries

    def rank(
        self,
        vectors: np.ndarray,
        features: list[LocalFeatures | None] | None,
        preset: Preset,
        method: LocalMethod | None,
        k: int,
        *,
        views: np.ndarray | None = None,
        extra: dict[str, list[LocalFeatures | None]] | None = None,
        extra_methods: dict[str, LocalMethod] | None = None,
        mirrored: Side | None = None,
    ) -> tuple[IdentityRanking, ScoredPairs | None]:
        """The k best identities of each query: by fused P(same) over its shortlist when the
        preset matches keypoints, else by cosine over its nearest photos. ``views``: each query's
        view (only compatible photos are met); ``extra``: the queries' features of the extra
        methods; ``mirrored``: the queries flipped left-right (for mirrored matching). Vectors are
        the backbone's; the group adapts them."""
        side, mirrored = self.adapt_side(Side(vectors, features, extra or {})), self.adapt_side(mirrored)
        if len(vectors) == 0 or self.size == 0:
            empty = np.zeros((len(vectors), 0))
            return rank_neighbours(empty.astype(np.int64), empty, self.identities, k), None
        if method is not None:
            pairs = self.pairs(side, views, preset, method, extra_methods or {}, mirrored=mirrored)
            fused = self.fit.calibration.fuse(pairs.raw, pairs.mirrored)
            lists = Neighbours.from_pairs(pairs.queries, pairs.images, fused, np.ones(len(vectors), dtype=bool))
            return rank_neighbours(lists.columns, lists.scores, self.identities, k, self.fit.top_m), pairs
        scored, scored_mirrored = compared_as(side, mirrored, self.adapts("score", preset))
        flipped = scored_mirrored.vectors if scored_mirrored is not None else None
        return self._rank_by_cosine(scored.vectors, k, views, preset, flipped), None

    def _rank_by_cosine(self, vectors: np.ndarray, k: int, views, preset: Preset, flipped) -> IdentityRanking:
        wanted = min(k, len(np.unique(self.identities)))
        depth = min(self.size, max(RANKING_DEPTH, 4 * k))
        top_m = self.fit.top_m if self.fit is not None else 1

        def lists(rows, depth):
            chosen = views[rows] if views is not None else None
            return self.cosine_lists(
                vectors[rows], depth, chosen, preset, flipped[rows] if flipped is not None else None
            )

        everything = np.arange(len(vectors))
        scores, columns = lists(everything, depth)
        ranking = rank_neighbours(columns, scores, self.identities, k, top_m)
        # A query whose nearest photos show fewer than k identities looks deeper, up to all of them.
        while depth < self.size:
            short = np.flatnonzero((ranking.best_images >= 0).sum(axis=1) < wanted)
            if len(short) == 0:
                break
            depth = min(self.size, depth * 4)
            scores, columns = lists(short, depth)
            deeper = rank_neighbours(columns, scores, self.identities, k, top_m)
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
        *,
        views: np.ndarray | None = None,
        extra: dict[str, list[LocalFeatures | None]] | None = None,
        extra_methods: dict[str, LocalMethod] | None = None,
        mirrored: Side | None = None,
    ) -> MatchGraph:
        """The queries compared with each other (a shortlist from an index of the queries, local
        verification, the group's calibration) and with their best known individuals (from their
        ranking), every edge as P(same individual). ``views``, ``extra``, ``mirrored``: as for
        :meth:`rank`."""
        side = self.adapt_side(Side(vectors, features if method is not None else None, extra or {}))
        mirrored = self.adapt_side(mirrored)
        listing, scoring = self.adapts("grouping", preset), self.adapts("score", preset)
        listed, listed_mirrored = compared_as(side, mirrored, listing)
        calibration = self.fit.calibration
        query_index = VectorIndex.build(listed.vectors)
        settings = dataclasses.replace(preset.fusion, use_lnbnn=False)  # see fusion_choice.between_queries
        features = side.features
        # Two queries are compared under the same view rule as a query and the database: two
        # queries of incompatible views are never linked (mirror views only through the flip).
        # Unlike against the database there is no fallback: a query without a compatible query
        # is left with no query link, which only leaves it to its own group.
        rule = preset.view_rule()
        direct, flipped = rule.masks(views, views) if rule.active and views is not None else (None, None)
        pairs = _scored_pairs(
            query_index,
            None,
            features,
            extra or {},
            listed,
            settings,
            method,
            extra_methods or {},
            direct=direct,
            flipped=flipped,
            mirrored=listed_mirrored,
            excluded=[{row} for row in range(len(vectors))],
        )
        more = query_pair_cosines(pairs, settings, side, mirrored, listing, scoring)
        pairs = dataclasses.replace(pairs, raw=pairs.raw | more)
        return graph_of_queries(len(vectors), pairs, pairs.raw, ranking, calibration, method)

    def known_probability(self, threshold: float | None, method: LocalMethod | None) -> float | None:
        """A decision threshold on the ranking's scale, as P(same)."""
        return _as_probability(threshold, self.fit.calibration, method)

    # ------------------------------------------------------------------ growing

    def add(self, image_ids, identities, near_duplicates, vectors, features, *, views=None, extra=None, mirrored=None):
        """Append photos to the index and the keypoint index; nothing is refitted. ``views``,
        ``extra`` (features by method), ``mirrored`` (a Side): as the group keeps them."""
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
        if self.views is not None or views is not None:
            old = self.views if self.views is not None else np.full(self.size - len(image_ids), None)
            new = views if views is not None else np.full(len(image_ids), None)
            self.views = np.concatenate([np.asarray(old, dtype=object), np.asarray(new, dtype=object)])
        self.index.add(vectors)
        if self.adapted is not None:  # a photo added later is compared through the saved adapter
            self.adapted.add(self.adapt(vectors))
        if self.features is not None:
            self.features = self.features + list(features)
            self.keypoints.add(list(features))
        for name in self.extra:
            self.extra[name] = self.extra[name] + list(extra[name])
        if self.mirrored is not None:
            self.mirrored = self.mirrored.extend(mirrored)


def _threshold(
    setting,
    name: str,
    neighbours: Neighbours,
    identities,
    near_duplicates,
    top_m: int = 1,
    simulated: ThresholdChoice | None = None,
):
    """The threshold of one group: given by the preset, or chosen on its database (``simulated``:
    the choice at ``top_m`` already made while choosing m)."""
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
    choice = simulated or choose_threshold(neighbours, identities, near_duplicate_groups=near_duplicates, top_m=top_m)
    return choice.threshold, choice


def _scored_pairs(
    index: VectorIndex,
    keypoints: KeypointIndex | None,
    features: list[LocalFeatures | None] | None,
    extra_features: dict[str, list[LocalFeatures | None]],
    side: Side,
    settings: FusionSettings,
    method: LocalMethod | None,
    extra_methods: dict[str, LocalMethod],
    *,
    direct: list[np.ndarray | None] | None,
    flipped: list[np.ndarray | None] | None,
    mirrored: Side | None,
    excluded: list[set[int]] | None,
) -> ScoredPairs:
    """The shortlisted, scored pairs of ``side`` with the photos of ``index`` (their keypoints
    ``features``, ``extra_features`` by method): each query within its ``direct`` mask, and, where
    ``flipped`` gives one, its flipped photo (``mirrored``) within that mask (views.py)."""
    extra = {name: (m, side.extra[name], extra_features[name]) for name, m in extra_methods.items()}
    found = shortlist_pairs(
        index, side.vectors, side.features, keypoints, features, method, settings, excluded, allowed=direct, extra=extra
    )
    asked = [q for q, mask in enumerate(flipped or []) if mask is not None]
    if not asked or mirrored is None:
        return found
    asked = np.asarray(asked, dtype=np.int64)
    flipped_side = mirrored.take(asked)
    extra = {name: (m, flipped_side.extra[name], extra_features[name]) for name, m in extra_methods.items()}
    more = shortlist_pairs(
        index,
        flipped_side.vectors,
        flipped_side.features,
        keypoints,
        features,
        method,
        settings,
        [excluded[q] for q in asked] if excluded is not None else None,
        allowed=[flipped[q] for q in asked],
        extra=extra,
    )
    queries = np.concatenate([found.queries, asked[more.queries]])
    images = np.concatenate([found.images, more.images])
    is_mirrored = np.concatenate([np.zeros(len(found.queries), bool), np.ones(len(more.queries), bool)])
    order = np.lexsort((images, queries))
    raw = {name: np.concatenate([found.raw[name], more.raw[name]])[order] for name in found.raw}
    return ScoredPairs(queries[order], images[order], raw, is_mirrored[order])


def compared_as(side: Side, mirrored: Side | None, adapted: bool) -> tuple[Side, Side | None]:
    """(side, mirrored) as one use compares them: adapted, or by the backbone's own vectors."""
    if adapted or side.backbone is None:
        return side, mirrored
    return side.unadapted(), mirrored.unadapted() if mirrored is not None else None


def pair_cosines(pairs: ScoredPairs, vectors: np.ndarray, flipped: np.ndarray | None, index: VectorIndex):
    """The cosine of each pair: its query's row of ``vectors`` (of ``flipped`` where the pair was
    compared after a flip) against the other photo's vector in ``index``."""
    values = index.pair_cosine(vectors, pairs.queries, pairs.images)
    if pairs.mirrored is not None and flipped is not None:
        rows = np.flatnonzero(pairs.mirrored)
        values[rows] = index.pair_cosine(flipped, pairs.queries[rows], pairs.images[rows])
    return values


def rescored(pairs: ScoredPairs, side: Side, mirrored: Side | None, index: VectorIndex) -> ScoredPairs:
    """``pairs`` (listed by one vector) with the cosine of another: ``side``'s against ``index``."""
    if "cosine" not in pairs.raw:
        return pairs
    flipped = mirrored.vectors if mirrored is not None else None
    return dataclasses.replace(pairs, raw=pairs.raw | {"cosine": pair_cosines(pairs, side.vectors, flipped, index)})


def with_backbone_cosine(
    pairs: ScoredPairs, settings: FusionSettings, side: Side, mirrored: Side | None, backbone: VectorIndex
) -> ScoredPairs:
    """``pairs`` with the backbone's own cosine of each pair beside the adapted one, where the
    settings fuse it and ``side`` was adapted; ``backbone``: the index of the other photos'
    backbone vectors. A pair compared after a flip is scored through the flipped photo."""
    if BACKBONE_COSINE not in settings.scores or side.backbone is None:
        return pairs
    flipped = mirrored.backbone if mirrored is not None else None
    values = pair_cosines(pairs, side.backbone, flipped, backbone)
    return dataclasses.replace(pairs, raw=pairs.raw | {BACKBONE_COSINE: values})


def query_pair_cosines(
    pairs: ScoredPairs, settings: FusionSettings, side: Side, mirrored: Side | None, listing: bool, scoring: bool
) -> dict[str, np.ndarray]:
    """The cosines of pairs of queries that their listing did not give (``match_graph`` and the
    review app's ``remembered_graph`` alike): the scored cosine where the pairs were listed by the
    other vector, and the backbone's own beside an adapted one."""
    scored, scored_mirrored = compared_as(side, mirrored, scoring)
    found = {}
    if listing != scoring and "cosine" in settings.scores:
        found["cosine"] = rescored(pairs, scored, scored_mirrored, VectorIndex.build(scored.vectors)).raw["cosine"]
    if scored.backbone is not None and BACKBONE_COSINE in settings.scores:
        backbone = VectorIndex.build(scored.backbone)
        found[BACKBONE_COSINE] = with_backbone_cosine(pairs, settings, scored, scored_mirrored, backbone).raw[
            BACKBONE_COSINE
        ]
    return found


def _as_probability(threshold: float | None, calibration: Calibration | None, method: LocalMethod | None):
    """The new_individual threshold as P(same): fused scores already are; a cosine goes through
    the cosine calibration (monotone, so the same queries pass)."""
    if threshold is None or calibration is None or method is not None or not np.isfinite(threshold):
        return threshold
    return float(calibration.fuse({"cosine": np.array([threshold])})[0])


def graph_of_queries(
    count: int,
    pairs: ScoredPairs,
    raw: dict[str, np.ndarray],
    ranking: IdentityRanking,
    calibration: Calibration,
    method: LocalMethod | None,
) -> MatchGraph:
    """The match graph of ``count`` queries: their pairs' ``raw`` scores fused to P(same), and
    each query linked to the known individuals of its ranking at their score (a cosine ranking
    calibrated as the query pairs are)."""
    query_probability = calibration.fuse(between_queries(raw), pairs.mirrored)
    known = np.array([identity is not None for identity in ranking.identities.ravel()]).reshape(
        ranking.identities.shape
    )
    link_scores = ranking.scores[known]
    if method is None:  # ranked by cosine: the same calibration as the query pairs
        link_scores = calibration.fuse({"cosine": link_scores})
    return MatchGraph.build(
        count,
        (pairs.queries, pairs.images, query_probability),
        (np.nonzero(known)[0], ranking.identities[known], link_scores),
    )
