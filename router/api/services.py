"""The adapters a router process runs with, gathered once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from router.backends.state import BackendStateProvider
from router.catalog.store import CatalogStore
from router.clock import Clock
from router.db.database import Database
from router.settings import Settings


@dataclass
class Services:
    settings: Settings
    catalogs: CatalogStore
    database: Database
    backend_state: BackendStateProvider
    clock: Clock


def services() -> Services:
    svc: Services = current_app.extensions["comfy_router"]
    return svc
