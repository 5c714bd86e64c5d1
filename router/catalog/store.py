"""Holds the catalog in force; a reload swaps it atomically and keeps the last good one."""

from __future__ import annotations

import threading
from pathlib import Path

from router.catalog.loader import CatalogError, load_catalog
from router.catalog.schema import Catalog


class CatalogStore:
    def __init__(self, catalog: Catalog, path: Path | None = None) -> None:
        self._catalog = catalog
        self.path = path
        self.last_error: CatalogError | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path) -> CatalogStore:
        return cls(load_catalog(path), path)

    @property
    def current(self) -> Catalog:
        # A single attribute read is atomic: a request sees the old or the new catalog, never a mix.
        return self._catalog

    def replace(self, catalog: Catalog) -> None:
        with self._lock:
            self._catalog = catalog
            self.last_error = None

    def reload(self) -> CatalogError | None:
        """Re-read the file; on error keep serving the last good catalog and return the error."""
        if self.path is None:
            return None
        with self._lock:
            try:
                self._catalog = load_catalog(self.path)
            except CatalogError as exc:
                self.last_error = exc
                return exc
            self.last_error = None
            return None
