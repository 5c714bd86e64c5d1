"""The adapters a router process runs with, gathered once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app

from router.api.metrics import RouterMetrics
from router.backends.state import BackendStateProvider
from router.catalog.store import CatalogStore
from router.clock import Clock
from router.db.database import Database
from router.db.spool_writer import DurableWriter
from router.limits.quotas import QuotaGate
from router.runs.outputs import OutputStore
from router.runs.runner import JobRunner
from router.settings import Settings


@dataclass
class Services:
    settings: Settings
    catalogs: CatalogStore
    database: Database
    backend_state: BackendStateProvider
    clock: Clock
    metrics: RouterMetrics = field(default_factory=RouterMetrics)
    runner: JobRunner | None = None
    outputs: OutputStore | None = None
    simulated: list[str] = field(default_factory=list)  # backend ids served by the built-in simulator
    quotas: QuotaGate | None = None  # per-client quotas, spend caps, concurrency (router/limits)
    writes: DurableWriter | None = None  # job/usage writes, spooled while the database is down


def services() -> Services:
    svc: Services = current_app.extensions["comfy_router"]
    return svc
