"""The Flask app factory. Adapters (catalog, database, backend state, clock) are injected here."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from router.api import routes_meta, routes_select
from router.api.errors import register_error_handlers
from router.api.services import Services
from router.backends.state import BackendStateProvider, DeclaredBackendState, effective_backends
from router.catalog.schema import Catalog
from router.catalog.store import CatalogStore
from router.clock import Clock, SystemClock
from router.db.database import Database
from router.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    catalog: Catalog | CatalogStore | None = None,
    database: Database | None = None,
    backend_state: BackendStateProvider | None = None,
    clock: Clock | None = None,
    **extra: Any,
) -> Flask:
    settings = settings or Settings()
    catalogs = _catalog_store(settings, catalog)
    if database is None:
        database = Database(settings.database_url)
        if settings.migrate_on_start:
            database.migrate()
    app = Flask("router")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["comfy_router"] = Services(
        settings=settings,
        catalogs=catalogs,
        database=database,
        backend_state=backend_state or DeclaredBackendState(),
        clock=clock or SystemClock(),
    )
    app.extensions["comfy_router_extra"] = extra
    register_error_handlers(app)
    app.register_blueprint(routes_select.bp)
    app.register_blueprint(routes_meta.bp)
    return app


def _catalog_store(settings: Settings, catalog: Catalog | CatalogStore | None) -> CatalogStore:
    if isinstance(catalog, CatalogStore):
        return catalog
    store = CatalogStore(catalog) if catalog is not None else CatalogStore.from_file(settings.config_path)
    if settings.comfyui_url:
        current = store.current
        store.replace(
            current.model_copy(update={"backends": effective_backends(current, settings.comfyui_url)})
        )
    return store
