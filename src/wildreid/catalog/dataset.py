"""A catalogue as the database of an identification run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from wildreid.catalog.store import Catalog, CatalogError
from wildreid.data.dataset import DATABASE, QUERY, Dataset, validate_dataset

# Database image ids carry a prefix so that they can never collide with a query's id.
PREFIX = "catalog:"


def catalog_image_id(image_id: str | None) -> int | None:
    """The catalogue image id behind a database image_id of :func:`catalog_to_dataset`."""
    if image_id is None or not str(image_id).startswith(PREFIX):
        return None
    return int(str(image_id)[len(PREFIX) :])


def catalog_photos(catalog: Catalog, images: list[dict] | None = None) -> pd.DataFrame:
    """The catalogue's photos (all of them, or ``images`` from ``catalog.images()``) as database
    rows: image_id ``catalog:<image id>`` (see :func:`catalog_image_id`), identity = individual id."""
    images = catalog.images() if images is None else images
    return pd.DataFrame(
        {
            "image_id": [f"{PREFIX}{image['id']}" for image in images],
            "identity": [image["individual_id"] for image in images],
            "path": [str(catalog.photo_path(image["stored_path"])) for image in images],
            "split": DATABASE,
            "dataset": [image["dataset"] for image in images],
            "date": [image["sighting_date"] for image in images],
            "orientation": [image["orientation"] for image in images],
            "viewpoint": [image["viewpoint"] for image in images],
            "species": [image["species"] or None for image in images],
        },
        columns=["image_id", "identity", "path", "split", "dataset", "date", "orientation", "viewpoint", "species"],
    )


def query_table(
    catalog: Catalog,
    query_paths: Sequence[str | Path],
    *,
    query_ids: Sequence[str] | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """Query photos as rows of ``dataset`` (which may be left out when the catalogue holds a
    single dataset): image_id (``query_ids``, default the paths), path, split, dataset."""
    known = catalog.datasets()
    if not known:
        raise CatalogError(f"{catalog.path}: the catalogue has no photos yet; add some with `wildreid catalog import`.")
    if dataset is None:
        if len(known) > 1:
            raise CatalogError(
                f"the catalogue holds several datasets ({', '.join(known)}); say which "
                "one the queries belong to (--dataset)."
            )
        dataset = known[0]
    elif dataset not in known:
        raise CatalogError(f"dataset '{dataset}': not in the catalogue; choose one of {', '.join(known)}.")
    paths = [str(Path(p).resolve()) for p in query_paths]
    ids = list(query_ids) if query_ids is not None else paths
    if len(ids) != len(paths):
        raise ValueError(f"query_ids: {len(ids)} ids for {len(paths)} query paths.")
    return pd.DataFrame(
        {
            "image_id": [str(i) for i in ids],
            "identity": None,
            "path": paths,
            "split": QUERY,
            "dataset": dataset,
        }
    )


def catalog_to_dataset(
    catalog: Catalog,
    query_paths: Sequence[str | Path],
    *,
    query_ids: Sequence[str] | None = None,
    dataset: str | None = None,
) -> Dataset:
    """A validated :class:`Dataset`: the catalogue's photos (:func:`catalog_photos`) as the
    database, ``query_paths`` as the queries (:func:`query_table`)."""
    queries = query_table(catalog, query_paths, query_ids=query_ids, dataset=dataset)
    table = pd.concat([catalog_photos(catalog), queries], ignore_index=True)
    result = Dataset(table, f"catalogue {catalog.path}")
    validate_dataset(result)
    return result
