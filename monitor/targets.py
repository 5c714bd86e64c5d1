"""Which ComfyUI backends the monitor probes: explicit URLs, else COMFYUI_URL, else the catalog's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from router.catalog import Catalog

# The id the monitor gives the single backend named by COMFYUI_URL.
COMFYUI_URL_BACKEND_ID = "comfyui"


@dataclass(frozen=True)
class BackendTarget:
    id: str
    url: str  # base URL, no trailing slash


def _strip(url: str) -> str:
    return url.rstrip("/")


def parse_backend_arg(value: str, catalog: Catalog | None = None) -> BackendTarget:
    """`ID=URL`, or a bare URL: then the catalog's id for that URL, else `host:port`."""
    ident, sep, url = value.partition("=")
    if sep and not ident.startswith(("http:", "https:")):
        return BackendTarget(id=ident, url=_strip(url))
    url = _strip(value)
    for backend in catalog.backends if catalog else ():
        if backend.url is not None and _strip(str(backend.url)) == url:
            return BackendTarget(id=backend.id, url=url)
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {value!r}")
    return BackendTarget(id=parts.netloc, url=url)


def resolve_targets(
    explicit: Iterable[str], comfyui_url: str | None, catalog: Catalog | None
) -> list[BackendTarget]:
    explicit = list(explicit)
    if explicit:
        return [parse_backend_arg(v, catalog) for v in explicit]
    if comfyui_url:
        return [BackendTarget(id=COMFYUI_URL_BACKEND_ID, url=_strip(comfyui_url))]
    # url None is the built-in simulator: the router starts it in-process, there is nothing to probe.
    return [
        BackendTarget(id=b.id, url=_strip(str(b.url)))
        for b in (catalog.backends if catalog else ())
        if b.url is not None and b.enabled
    ]
