"""Each ComfyUI backend's own view: `/system_stats` (device VRAM, host RAM) and `/queue` (load).

A backend that does not answer is a row with `up=False` and the error, never an exception:
that row is what tells Grafana when the backend was down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

import requests

from monitor.edge_log import EdgeLog
from monitor.rows import SOURCE_COMFYUI, Row, blank_row, bytes_to_mb, error_text
from monitor.targets import BackendTarget


class ResponseLike(Protocol):
    def raise_for_status(self) -> Any: ...

    def json(self) -> Any: ...


class HttpGetter(Protocol):
    """What the probe needs of an HTTP client; `requests.Session` satisfies it."""

    def get(self, url: str, *, timeout: tuple[float, float]) -> ResponseLike: ...


# What a sick backend can raise while answering: transport errors, bad JSON, an unexpected shape.
_PROBE_ERRORS = (requests.RequestException, ValueError, KeyError, TypeError, AttributeError)


def _difference(total: int | None, free: int | None) -> int | None:
    return total - free if total is not None and free is not None else None


def parse_system_stats(doc: Any) -> Row:
    """The row fields `/system_stats` gives: the first device's VRAM and the backend host's RAM."""
    fields: Row = {}
    devices = doc.get("devices") or []
    if devices:
        device = devices[0]
        total, free = device.get("vram_total"), device.get("vram_free")
        fields.update(
            gpu_name=device.get("name"),
            gpu_index=device.get("index"),
            vram_total_mb=bytes_to_mb(total),
            vram_free_mb=bytes_to_mb(free),
            vram_used_mb=bytes_to_mb(_difference(total, free)),
        )
    system = doc.get("system") or {}
    ram_total, ram_free = system.get("ram_total"), system.get("ram_free")
    fields.update(
        ram_total_mb=bytes_to_mb(ram_total),
        ram_used_mb=bytes_to_mb(ram_total - ram_free)
        if ram_total is not None and ram_free is not None
        else None,
    )
    return fields


def parse_queue(doc: Any) -> Row:
    return {"queue_running": len(doc["queue_running"]), "queue_pending": len(doc["queue_pending"])}


class ComfyProbe:
    def __init__(
        self,
        targets: list[BackendTarget],
        *,
        host: str,
        logger: logging.Logger,
        session_factory: Callable[[], HttpGetter],
        timeout_s: float = 2.0,
    ) -> None:
        self._targets = targets
        self._host = host
        self._edge = EdgeLog(logger)
        # Connect fails fast (a closed port answers at once); the read may wait for a busy server.
        self._timeout = (min(1.0, timeout_s), timeout_s)
        # One client per backend: requests does not promise a Session is safe across threads.
        self._sessions = {t.id: session_factory() for t in targets}
        # Backends are probed in parallel so a hung one costs one timeout, not one per backend.
        self._pool = (
            ThreadPoolExecutor(max_workers=min(8, len(targets)), thread_name_prefix="probe")
            if targets
            else None
        )

    @property
    def targets(self) -> list[BackendTarget]:
        return list(self._targets)

    def read(self, ts: datetime) -> list[Row]:
        return self.begin(ts)()

    def begin(self, ts: datetime) -> Callable[[], list[Row]]:
        """Start every probe now; the returned function waits for their rows (in target order)."""
        if self._pool is None:
            return list
        pool = self._pool
        futures = [pool.submit(self._probe, ts, t) for t in self._targets]
        return lambda: [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for session in self._sessions.values():
            close = getattr(session, "close", None)
            if callable(close):
                close()

    def _probe(self, ts: datetime, target: BackendTarget) -> Row:
        row = blank_row(ts, self._host, SOURCE_COMFYUI)
        row["backend"] = target.id
        session = self._sessions[target.id]
        try:
            row.update(parse_system_stats(self._get(session, f"{target.url}/system_stats")))
            row.update(parse_queue(self._get(session, f"{target.url}/queue")))
        except _PROBE_ERRORS as exc:
            row.update(up=False, error=error_text(exc))
            self._edge.problem(f"backend {target.id} ({target.url})", f"down: {row['error']}")
            return row
        row["up"] = True
        self._edge.recovered(f"backend {target.id} ({target.url})", "up again")
        return row

    def _get(self, session: HttpGetter, url: str) -> Any:
        response = session.get(url, timeout=self._timeout)
        response.raise_for_status()
        return response.json()
