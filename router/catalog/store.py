"""Holds the catalog in force; a reload swaps it atomically and keeps the last good one.

The file is watched cheaply: at most once a second a request stats it, and a changed
mtime or size triggers a reload (no watcher thread to survive forks). `POST /admin/reload`
reloads at once. A reload that fails leaves the last good catalog serving and is reported
by `/readyz` and the log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from router.catalog.loader import CatalogError, load_catalog
from router.catalog.schema import Catalog

log = logging.getLogger(__name__)

Transform = Callable[[Catalog], Catalog]


class CatalogStore:
    def __init__(self, catalog: Catalog, path: Path | None = None, *, check_every_s: float = 1.0) -> None:
        self._catalog = catalog
        self.path = path
        self.last_error: CatalogError | None = None
        self.check_every_s = check_every_s
        self._transforms: list[Transform] = []
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._checked_at = time.monotonic()

    @classmethod
    def from_file(cls, path: Path) -> CatalogStore:
        return cls(load_catalog(path), path)

    @property
    def current(self) -> Catalog:
        # A single attribute read is atomic: a request sees the old or the new catalog, never a mix.
        return self._catalog

    def add_transform(self, transform: Transform) -> None:
        """Applied now and to every reloaded catalog (e.g. COMFYUI_URL, simulator URLs)."""
        with self._lock:
            self._transforms.append(transform)
            self._catalog = transform(self._catalog)

    def replace(self, catalog: Catalog) -> None:
        with self._lock:
            self._catalog = catalog
            self.last_error = None

    def reload(self) -> CatalogError | None:
        """Re-read the file; on error keep serving the last good catalog and return the error."""
        if self.path is None:
            return None
        with self._lock:
            self._stamp = self._file_stamp()
            try:
                catalog = load_catalog(self.path)
                for transform in self._transforms:
                    catalog = transform(catalog)
            except CatalogError as exc:
                if self.last_error is None or str(exc) != str(self.last_error):
                    log.error("catalog reload failed, still serving the last good catalog: %s", exc)
                self.last_error = exc
                return exc
            self._catalog = catalog
            log.info("catalog reloaded from %s: %d models", self.path, len(catalog.models))
            self.last_error = None
            return None

    def maybe_reload(self) -> None:
        """Reload when the file changed; stats it at most every `check_every_s`."""
        now = time.monotonic()
        if self.path is None or now - self._checked_at < self.check_every_s:
            return
        self._checked_at = now
        if self._file_stamp() != self._stamp:
            self.reload()

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)
