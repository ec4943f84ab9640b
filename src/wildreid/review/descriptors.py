"""Global descriptors of catalogue photos: computed once, kept in the embedding cache.

Their one home is the on-disk embedding cache (``extract.EmbeddingCache``, beside the catalogue:
``<catalogue>.cache``), keyed by content hash, where every extraction of the pipeline looks: a
photo in the catalogue and the same bytes anywhere else share one vector, and so do runs with
regions or speed options, which the cache keys apart. The cache is derived data: a catalogue
copied without it has its photos described again, once. Here the catalogue's photos missing from
the cache are described in chunks, so that a long first description reports its progress.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wildreid.catalog.store import Catalog
from wildreid.describe.backbones import Backbone
from wildreid.describe.extract import EmbeddingCache, extract_embeddings

CHUNK = 64  # photos per extraction call: progress is reported, and kept, chunk by chunk


def prepare_descriptors(
    catalog: Catalog, backbone: Backbone, cache_dir: str | Path, *, progress: Callable[[int, int], None] | None = None
) -> int:
    """Make sure every catalogue photo has a descriptor for ``backbone`` in the embedding cache at
    ``cache_dir``; return how many were computed (photos that cannot be read are tried again
    next time)."""
    cached = EmbeddingCache(cache_dir, backbone.cache_key).hashes()
    missing = list({image["sha256"]: image for image in catalog.images() if image["sha256"] not in cached}.values())
    for start in range(0, len(missing), CHUNK):
        chunk = missing[start : start + CHUNK]
        # num_workers=0: this may run in a web server's worker thread, where forking loader
        # processes is unsafe; the chunks are small anyway.
        extract_embeddings(
            [str(catalog.photo_path(image["stored_path"])) for image in chunk],
            backbone,
            cache_dir=cache_dir,
            num_workers=0,
            progress=False,
        )
        if progress:
            progress(start + len(chunk), len(missing))
    return len(missing)
