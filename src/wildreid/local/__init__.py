"""Local features and matchers, one file per method (hloc's plug-in layout).

Every method implements :class:`LocalMethod` (``base.py``): ``extract(image) -> LocalFeatures``
and ``match(a, b) -> tentative correspondences``; ``verify.py`` turns correspondences into
geometric inliers, ``cache.py`` keeps extracted features on disk. ``get_method(name)`` builds
one by name.
"""

from .base import LocalFeatures, LocalMethod, get_method, method_names

__all__ = ["LocalFeatures", "LocalMethod", "get_method", "method_names"]
