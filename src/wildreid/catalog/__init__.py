"""The catalogue: a durable SQLite record of known individuals, their photos (in a
content-addressed store beside it), descriptors and review decisions."""

from .camtrap import CamtrapError, CamtrapSettings, export_camtrap_dp, validate_camtrap_dp
from .dataset import catalog_to_dataset
from .export import export_metadata
from .identify import candidates_of, catalog_gallery, identify_with_catalog
from .importer import ImportReport, import_dataset
from .photos import PhotoStore, sniff_image_type
from .schema import SCHEMA_VERSION
from .store import AlreadyDecided, Catalog, CatalogError, CheckReport

__all__ = [
    "AlreadyDecided",
    "CamtrapError",
    "CamtrapSettings",
    "Catalog",
    "CatalogError",
    "CheckReport",
    "ImportReport",
    "PhotoStore",
    "SCHEMA_VERSION",
    "candidates_of",
    "catalog_gallery",
    "catalog_to_dataset",
    "export_camtrap_dp",
    "export_metadata",
    "identify_with_catalog",
    "import_dataset",
    "sniff_image_type",
    "validate_camtrap_dp",
]
