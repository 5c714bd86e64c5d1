"""Backends at their concurrency cap, as the selector sees them: not available, with the reason.

Wraps the backend state provider for decisions (router/limits/http.py `for_selection`); everything
else is delegated unchanged, and /readyz still reads the unwrapped provider. The cap
is soft by one decision: two routers deciding in the same instant may both pick a backend with one
slot left (the runner counts attempts as they start), but none picks a backend already at its cap.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from router.backends.state import BackendStateProvider
from router.catalog.schema import Catalog
from router.limits.quotas import QuotaGate
from router.selection import BackendView


class CappedBackendState:
    def __init__(self, inner: BackendStateProvider, gate: QuotaGate) -> None:
        self.inner = inner
        self.gate = gate

    def snapshot(self, catalog: Catalog) -> list[BackendView]:
        views = list(self.inner.snapshot(catalog))
        running = self.gate.backends_running()
        out = []
        for seen in views:
            cap = self.gate.limits.for_backend(seen.backend.id)
            n = running.get(seen.backend.id, 0)
            view = seen
            if seen.healthy and cap is not None and n >= cap:
                view = replace(
                    seen,
                    healthy=False,
                    unhealthy_reason=f"at its concurrency cap ({n} of {cap} generations running)",
                )
            out.append(view)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
