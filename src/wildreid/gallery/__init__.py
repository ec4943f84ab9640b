"""The fitted database side of identification (see gallery.py): a FAISS index of the global
vectors, the keypoints and their LNBNN index, the calibration and the thresholds, per group."""

from .gallery import FITTED, FORMAT_VERSION, REFIT_GROWTH, Gallery, GalleryError

__all__ = ["FITTED", "FORMAT_VERSION", "REFIT_GROWTH", "Gallery", "GalleryError"]
