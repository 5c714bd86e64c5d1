"""`comfy-router serve`: the router under gunicorn (never Flask's debug server)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

log = logging.getLogger(__name__)


class RouterServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, app_factory: Any, options: dict[str, Any]) -> None:
        self._factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        app: Flask = self._factory()
        return app


def serve(host: str, port: int, workers: int, threads: int, app_factory: Any) -> None:
    # Threads, not processes, by default: the router waits on ComfyUI sockets most of the time.
    RouterServer(
        app_factory,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": 0,  # /select-and-run holds a request for up to the batch deadline
            "graceful_timeout": 30,
            "accesslog": "-",
            "preload_app": False,  # the app is built in each worker: pools and threads do not survive fork
            "child_exit": _worker_exited,
        },
    ).run()


def _worker_exited(_server: Any, worker: Any) -> None:
    """A dead worker's live gauges leave the multiprocess files (its counters stay counted)."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
