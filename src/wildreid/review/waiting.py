"""What grouping one dataset's waiting photos needs, kept between uploads: each photo's
description and ranking, and the keypoint comparisons between photos.

The web app groups a dataset's waiting photos again after every upload. Done from scratch, that
describes, ranks and compares every waiting photo again, so an upload would cost more the longer
the review backlog. Kept here, an upload pays for itself: it is described and ranked once, when
it is identified (``remember``), and grouping adds only its comparisons with the others.

A ranking belongs to the gallery state it was made against (``Gallery.state``) and to its depth:
when a reviewer's confirmation changes the gallery, the waiting photos are ranked again, all at
once. Descriptions and comparisons do not depend on the gallery and are kept. What is no longer
waiting is forgotten at each grouping. Held in memory only: after a restart the first grouping
describes (from the embedding cache) and ranks every waiting photo, as each grouping once did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from wildreid.decide.grouping import Grouping
from wildreid.decide.ranking import IdentityRanking
from wildreid.gallery.gallery import Gallery
from wildreid.gallery.queries import QueryPhotos, empty_ranking, ranking_depth, ranking_rows, set_ranking_rows
from wildreid.gallery.query_pairs import PairMemory

PhotoId = tuple[str, str]  # (image_id in the gallery's tables, content hash): a waiting photo
_RANKING = ("identities", "scores", "best_images")  # the arrays of an IdentityRanking


class WaitingPhotos:
    def __init__(self):
        self.photos: QueryPhotos | None = None  # one row per photo remembered
        self.ids: list[PhotoId] = []  # of each row
        self.rows: dict[PhotoId, int] = {}
        self.ranked_for: tuple | None = None  # (gallery state, depth) the rankings were made for
        self.ranked: IdentityRanking | None = None  # one row per photo, valid where is_ranked
        self.is_ranked = np.zeros(0, dtype=bool)
        self.pairs = PairMemory()

    def remember(self, ids: list[PhotoId], photos: QueryPhotos, ranked: IdentityRanking, ranked_for: tuple) -> None:
        """Keep photos just described and ranked (made for ``ranked_for``: gallery state, depth)."""
        if ranked_for != self.ranked_for:
            self._forget_rankings(ranked_for)
        new = [row for row, photo in enumerate(ids) if photo not in self.rows]
        if new:
            self._extend([ids[row] for row in new], photos.take(new), ranking_rows(ranked, new))

    def missing(self, ids: list[PhotoId]) -> list[int]:
        """The positions in ``ids`` of the photos not remembered (to describe)."""
        return [row for row, photo in enumerate(ids) if photo not in self.rows]

    def group(self, gallery: Gallery, ids: list[PhotoId], unknown: pd.DataFrame, *, cache_dir, grouping) -> Grouping:
        """The grouping ``gallery.identify`` makes of the waiting photos ``ids`` (in this order)
        with ``grouping``, describing only those not remembered (``unknown``: their image_id,
        path, dataset, as ``missing`` lists them), ranking only those not ranked against the
        gallery as it is, and comparing only the pairs not compared before."""
        method = gallery.grouping_method(grouping)
        depth = ranking_depth(gallery.preset.top_k, method)
        if self.ranked_for != (gallery.state, depth):
            self._forget_rankings((gallery.state, depth))
        if len(unknown):
            described = gallery.describe(unknown, cache_dir=cache_dir, progress=False)
            self._extend([ids[row] for row in self.missing(ids)], described, None)
        rows = np.array([self.rows[photo] for photo in ids], dtype=np.int64)
        unranked = rows[~self.is_ranked[rows]]
        if len(unranked):
            set_ranking_rows(self.ranked, unranked, gallery.rank(self.photos.take(unranked), depth))
            self.is_ranked[unranked] = True
        if not np.array_equal(rows, np.arange(len(self.ids))):
            self._keep_only(rows)
        return gallery.group(self.photos, self.ranked, grouping=method, pairs=self.pairs)

    def _forget_rankings(self, ranked_for: tuple) -> None:
        self.ranked_for = ranked_for
        self.ranked = empty_ranking(len(self.ids), ranked_for[1])
        self.is_ranked = np.zeros(len(self.ids), dtype=bool)

    def _extend(self, ids: list[PhotoId], photos: QueryPhotos, ranked: IdentityRanking | None) -> None:
        """Append photos, ranked (for ``ranked_for``) or not yet."""
        self.rows.update({photo: len(self.ids) + row for row, photo in enumerate(ids)})
        self.ids = self.ids + ids
        self.photos = photos if self.photos is None else self.photos.extend(photos)
        found = ranked if ranked is not None else empty_ranking(len(ids), self.ranked_for[1])
        self.ranked = IdentityRanking(
            *(np.concatenate([getattr(self.ranked, name), getattr(found, name)]) for name in _RANKING)
        )
        self.is_ranked = np.concatenate([self.is_ranked, np.full(len(ids), ranked is not None)])

    def _keep_only(self, rows: np.ndarray) -> None:
        """Keep only these rows, in this order."""
        self.photos = self.photos.take(rows)
        self.ids = [self.ids[row] for row in rows]
        self.rows = {photo: row for row, photo in enumerate(self.ids)}
        self.ranked = ranking_rows(self.ranked, rows)
        self.is_ranked = self.is_ranked[rows]
