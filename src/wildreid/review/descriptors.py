"""Global descriptors of catalogue photos: computed once, kept in the catalogue.

The pipeline reads descriptors from its on-disk embedding cache (``extract.EmbeddingCache``).
Before a run, the catalogue's own descriptors are written into that cache, so a catalogue
copied to another machine (or a cleared cache) does not mean extracting every photo again; and
photos without a descriptor for this backbone get one, stored back into the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from wildreid.catalog.store import Catalog
from wildreid.describe.backbones import Backbone
from wildreid.describe.extract import EmbeddingCache, extract_embeddings

CHUNK = 64  # photos per extraction call: progress is reported, and kept, chunk by chunk


def prepare_descriptors(
    catalog: Catalog, backbone: Backbone, cache_dir: str | Path, *, progress: Callable[[int, int], None] | None = None
) -> int:
    """Make sure every catalogue photo has a descriptor for ``backbone`` in the catalogue and in
    the embedding cache at ``cache_dir``; return how many were computed."""
    key = backbone.cache_key
    missing = catalog.images_without_descriptors(key)
    for start in range(0, len(missing), CHUNK):
        chunk = missing[start : start + CHUNK]
        # num_workers=0: this may run in a web server's worker thread, where forking loader
        # processes is unsafe; the chunks are small anyway.
        extraction = extract_embeddings(
            [str(catalog.photo_path(m["stored_path"])) for m in chunk],
            backbone,
            cache_dir=cache_dir,
            num_workers=0,
            progress=False,
        )
        good = [row for row in range(len(chunk)) if row not in extraction.failures]
        catalog.save_descriptors(key, [chunk[row]["sha256"] for row in good], extraction.embeddings[good])
        if progress:
            progress(start + len(chunk), len(missing))

    cache = EmbeddingCache(cache_dir, key)
    cached = cache.load()
    lacking = [image["sha256"] for image in catalog.images() if image["sha256"] not in cached]
    if lacking:  # only read from the catalogue what the cache lacks (usually nothing)
        vectors = catalog.descriptors(key, lacking)
        if vectors:
            cache.save(list(vectors), np.stack(list(vectors.values())))
    return len(missing)
