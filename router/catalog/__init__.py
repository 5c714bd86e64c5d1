"""The model catalog: schema, loading, and the JSON Schema exported for editors."""

from router.catalog.loader import CatalogError, CatalogProblem, load_catalog, parse_catalog
from router.catalog.schema import TIER_ORDER, Backend, Catalog, Model, TierName, TierSpec, TimeModel

__all__ = [
    "TIER_ORDER",
    "Backend",
    "Catalog",
    "CatalogError",
    "CatalogProblem",
    "Model",
    "TierName",
    "TierSpec",
    "TimeModel",
    "load_catalog",
    "parse_catalog",
]
