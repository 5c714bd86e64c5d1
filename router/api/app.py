"""The Flask app factory: the composition root. Adapters are injected here, or built from settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask

from router.api import routes_jobs, routes_meta, routes_select
from router.api.auth import Authenticator, parse_keys, require_api_key
from router.api.errors import register_error_handlers
from router.api.metrics import RouterMetrics
from router.api.services import Services
from router.backends.live import LiveBackendState
from router.backends.simulated import start_missing_simulators
from router.backends.state import BackendStateProvider, effective_backends
from router.backends.support import support_checker
from router.catalog.schema import Backend, Catalog
from router.catalog.store import CatalogStore
from router.clock import Clock, SystemClock
from router.comfyui import ComfyUIClient
from router.db.database import Database
from router.db.spool_writer import DurableWriter
from router.limits import http as limits_http
from router.limits.quotas import QuotaGate
from router.runs.outputs import OutputStore
from router.runs.runner import JobRunner
from router.settings import Settings
from router.workflows.templates import TemplateRegistry

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    catalog: Catalog | CatalogStore | None = None,
    database: Database | None = None,
    backend_state: BackendStateProvider | None = None,
    clock: Clock | None = None,
    client_for: Callable[[Backend], ComfyUIClient] | None = None,
    start_simulators: bool = True,
    simulated: list[str] | None = None,
    **extra: Any,
) -> Flask:
    """Services not given are built from `settings`: the catalog file, DATABASE_URL, and live
    ComfyUI backends (the built-in simulator for catalog backends without a URL)."""
    settings = settings or Settings()
    catalogs = catalog_store(settings, catalog)
    clock = clock or SystemClock()
    if database is None:
        database = Database(settings.database_url)
        if settings.migrate_on_start:
            database.migrate()
    if simulated is None:
        simulated = start_missing_simulators(catalogs) if start_simulators and backend_state is None else []
    clients = client_for or _client_pool()
    templates = TemplateRegistry()
    runner = None
    writes = None
    outputs = OutputStore(settings.data_dir)
    metrics = RouterMetrics()
    quotas = QuotaGate(settings.limits, database, clock)
    if backend_state is None:
        writes = DurableWriter(database, settings.data_dir / "spool")
        metrics.add_spool_gauges(writes.depth, writes.dead_count)
        live = LiveBackendState(clients, clock, support_check=support_checker(templates))
        backend_state = live
        runner = JobRunner(
            catalogs=catalogs,
            database=database,
            state=live,
            client_for=clients,
            clock=clock,
            templates=templates,
            outputs=outputs,
            metrics=metrics,
            quotas=quotas,
            writes=writes,
            stall_min_s=settings.stall_min_s,
        )
        threading.Thread(target=_reattach, args=(runner,), name="reattach", daemon=True).start()
        writes.on_adopted_replayed = lambda: _reattach(runner)
        writes.resume()
    app = Flask("router")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["comfy_router"] = Services(
        settings=settings,
        catalogs=catalogs,
        database=database,
        backend_state=backend_state,
        clock=clock,
        runner=runner,
        outputs=outputs,
        simulated=simulated,
        quotas=quotas,
        metrics=metrics,
        writes=writes,
    )
    require_api_key(app, Authenticator(parse_keys(settings.api_keys), database))
    limits_http.register(app)
    metrics.instrument(app)
    app.before_request(catalogs.maybe_reload)
    describe = getattr(backend_state, "describe", None)
    if describe is not None:
        metrics.add_backend_collector(lambda: describe(catalogs.current))
    app.extensions["comfy_router_extra"] = extra
    register_error_handlers(app)
    for bp in (routes_select.bp, routes_jobs.bp, routes_meta.bp, limits_http.bp):
        app.register_blueprint(bp)
    return app


def _reattach(runner: JobRunner) -> None:
    try:
        runner.reattach_orphans()
    except Exception:  # recovery must never stop the router from serving
        log.exception("re-attaching to prompts left running failed")


def catalog_store(settings: Settings, catalog: Catalog | CatalogStore | None) -> CatalogStore:
    if isinstance(catalog, CatalogStore):
        return catalog
    store = CatalogStore(catalog) if catalog is not None else CatalogStore.from_file(settings.config_path)
    url = settings.comfyui_url
    if url:
        store.add_transform(lambda c: c.model_copy(update={"backends": effective_backends(c, url)}))
    return store


def _client_pool() -> Callable[[Backend], ComfyUIClient]:
    """One client (one HTTP session) per backend URL, shared by the threads of this process."""
    clients: dict[str, ComfyUIClient] = {}

    def client_for(backend: Backend) -> ComfyUIClient:
        url = str(backend.url).rstrip("/")
        client = clients.get(url)
        if client is None:
            client = clients.setdefault(url, ComfyUIClient(url, timeout_s=10.0))
        return client

    return client_for
