"""Searching only some rows of a FAISS index (compatible viewpoints), for the photo index and
the keypoint index alike."""

from __future__ import annotations

import faiss
import numpy as np


def search_parameters(index: faiss.Index, allowed: np.ndarray | None) -> faiss.SearchParameters | None:
    """FAISS search parameters that restrict a search to the ``allowed`` rows (None: all rows).
    The selector reads a bitmap, so the parameters keep it alive as long as they live."""
    if allowed is None:
        return None
    bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
    selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
    params: faiss.SearchParameters
    if isinstance(index, faiss.IndexIVF):
        # set field by field: what FAISS's keyword constructor does, and what its stubs declare
        params = ivf = faiss.SearchParametersIVF()
        ivf.nprobe = index.nprobe
    else:
        params = faiss.SearchParameters()
    params.sel = selector
    # owned by the parameters, not freed early (SWIG objects take any attribute; the stubs list only FAISS's own)
    params.bitmap, params.selector = bitmap, selector  # type: ignore[attr-defined]
    return params
