"""Catalog backends without a URL are served by the built-in ComfyUI simulator (`make run`)."""

from __future__ import annotations

import atexit
import logging

from router.catalog.schema import Backend, Catalog
from router.catalog.store import CatalogStore

log = logging.getLogger(__name__)


def start_missing_simulators(catalogs: CatalogStore) -> list[str]:
    """Catalog backends without a URL are served by the built-in ComfyUI simulator (make run)."""
    catalog = catalogs.current
    missing = [b for b in catalog.backends if b.url is None]
    if not catalog.backends:
        missing = [
            Backend(id="simulator", gpu_name="NVIDIA A100 80GB PCIe", vram_mb=81920, usd_per_hour=1.19)
        ]
        catalog = catalog.model_copy(update={"backends": tuple(missing)})
    if not missing:
        return []
    from router.simulator import start_simulator

    urls: dict[str, str] = {}
    for b in missing:
        handle = start_simulator(catalog, gpu=b.id, port=0)
        atexit.register(handle.stop)
        urls[b.id] = handle.url
        log.warning(
            "backend %s has no ComfyUI URL: serving it with the built-in ComfyUI SIMULATOR at %s "
            "(set COMFYUI_URL or the catalog's backend url to use a real ComfyUI)",
            b.id,
            handle.url,
        )
    implicit = missing if not catalogs.current.backends else []

    def with_simulator_urls(c: Catalog) -> Catalog:
        # Re-applied on every reload: a reloaded catalog still says url null for these backends.
        backends = c.backends or tuple(implicit)
        return c.model_copy(
            update={
                "backends": tuple(
                    b.model_copy(update={"url": urls[b.id]}) if b.url is None and b.id in urls else b
                    for b in backends
                )
            }
        )

    catalogs.add_transform(with_simulator_urls)
    return [b.id for b in missing]
