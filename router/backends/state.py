"""The seam between live backend state and the pure selector."""

from __future__ import annotations

from typing import Protocol

from router.catalog.schema import Backend, Catalog
from router.selection.types import BackendView


class BackendStateProvider(Protocol):
    def snapshot(self, catalog: Catalog) -> list[BackendView]:
        """One view per enabled catalog backend, at this instant."""
        ...


class DeclaredBackendState:
    """No live readings: every backend healthy, its declared VRAM free, nothing loaded, no queue."""

    def snapshot(self, catalog: Catalog) -> list[BackendView]:
        return [BackendView(b) for b in catalog.backends]


def effective_backends(catalog: Catalog, comfyui_url: str | None) -> tuple[Backend, ...]:
    """COMFYUI_URL replaces the catalog's list with one backend (DESIGN.md section 5).

    That backend keeps the first catalog backend's GPU figures when there is one, since
    a URL alone says nothing of the card behind it.
    """
    if comfyui_url is None:
        return catalog.backends
    template = catalog.backends[0] if catalog.backends else None
    return (
        Backend(
            id="comfyui",
            url=comfyui_url,
            gpu_name=template.gpu_name if template else "unknown GPU",
            vram_mb=template.vram_mb if template else 24576,
            speed_factor=template.speed_factor if template else 1.0,
            usd_per_hour=template.usd_per_hour if template else 0.0,
            tags=("comfyui_url",),
        ),
    )
