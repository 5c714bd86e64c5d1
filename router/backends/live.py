"""Live backend state: each ComfyUI's /system_stats and /queue behind a short TTL, health with
cooldown, the model last run there, and what we learned of its real speed.

ComfyUI keeps the last model loaded and no route says which it is, so the router tracks it from
its own runs. A backend that fails is put in cooldown (no requests to it, no wait for it) and
probed again when the cooldown ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from router.catalog.schema import Backend, Catalog
from router.clock import Clock
from router.comfyui.protocol import DeviceStats, QueueState, SystemStats
from router.selection.types import BackendView

log = logging.getLogger(__name__)

MB = 1024 * 1024


class StatsClient(Protocol):
    def system_stats(self) -> SystemStats: ...

    def queue(self) -> QueueState: ...

    def object_info(self, node_class: str | None = None) -> dict[str, Any]: ...


SupportCheck = Callable[[Catalog, Mapping[str, Any]], dict[tuple[str, str], tuple[str, ...]]]


@dataclass
class BackendHealth:
    """What the router knows of one backend. Mutated under LiveBackendState's lock only."""

    fetched_at_s: float | None = None
    vram_total_mb: int | None = None
    vram_free_mb: int | None = None
    vram_reclaimable_mb: int | None = None  # torch's allocated memory: cached models, evicted on demand
    queue_running: int | None = None
    queue_pending: int | None = None
    device_name: str | None = None
    simulated: bool = False
    healthy: bool = True
    last_error: str | None = None
    consecutive_failures: int = 0
    cooldown_until_s: float | None = None
    loaded_model: str | None = None
    slowness: float = 1.0  # observed / catalog seconds per step (EWMA)
    mean_run_s: float = 10.0  # EWMA of attempt durations: prices a queued prompt of unknown size
    missing: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    object_info_at_s: float | None = None


class LiveBackendState:
    def __init__(
        self,
        client_for: Callable[[Backend], StatsClient],
        clock: Clock,
        *,
        ttl_s: float = 2.0,
        cooldown_s: float = 15.0,
        object_info_ttl_s: float = 300.0,
        support_check: SupportCheck | None = None,
    ) -> None:
        self._client_for = client_for
        self._clock = clock
        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        self.object_info_ttl_s = object_info_ttl_s
        self._support_check = support_check
        self._health: dict[str, BackendHealth] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="backend-state")
        self._inflight: dict[str, Future[None]] = {}  # backend id -> the refresh under way

    # --- what the selector sees -------------------------------------------------------------

    def snapshot(self, catalog: Catalog) -> list[BackendView]:
        backends = [b for b in catalog.backends if b.enabled]
        refreshes = [self._refresh_shared(catalog, b) for b in backends if self._needs_refresh(b.id)]
        for done in refreshes:
            done.result()
        with self._lock:
            return [self._view(b, self._health.setdefault(b.id, BackendHealth())) for b in backends]

    def _view(self, b: Backend, h: BackendHealth) -> BackendView:
        in_cooldown = h.cooldown_until_s is not None and self._clock.monotonic() < h.cooldown_until_s
        healthy = h.healthy and not in_cooldown
        queued = (h.queue_running or 0) + (h.queue_pending or 0)
        speed = b.speed_factor / h.slowness if h.slowness > 0 else b.speed_factor
        backend = b if speed == b.speed_factor else b.model_copy(update={"speed_factor": speed})
        return BackendView(
            backend=backend,
            healthy=healthy,
            unhealthy_reason=None if healthy else (h.last_error or "in cooldown after a failure"),
            vram_free_mb=h.vram_free_mb,
            vram_reclaimable_mb=h.vram_reclaimable_mb,
            loaded_model=h.loaded_model,
            queue_s=queued * h.mean_run_s,
            missing=dict(h.missing),
        )

    # --- refreshing ---------------------------------------------------------------------------

    def _needs_refresh(self, backend_id: str) -> bool:
        now = self._clock.monotonic()
        with self._lock:
            h = self._health.get(backend_id)
            if h is None or h.fetched_at_s is None:
                return h is None or h.cooldown_until_s is None or now >= h.cooldown_until_s
            if h.cooldown_until_s is not None and now < h.cooldown_until_s:
                return False  # no traffic to a backend in cooldown
            return now - h.fetched_at_s >= self.ttl_s

    def _refresh_shared(self, catalog: Catalog, b: Backend) -> Future[None]:
        """The refresh of `b` under way, else a new one: however many requests find a backend stale
        at once, it is read once. (Each used to read it itself: under the load bench's 500 jobs at
        once, every request thread read /system_stats and /queue, whose listing grows with the load.)"""
        with self._lock:
            running = self._inflight.get(b.id)
            if running is None:
                running = self._inflight[b.id] = self._pool.submit(self._refresh_then_release, catalog, b)
            return running

    def _refresh_then_release(self, catalog: Catalog, b: Backend) -> None:
        try:
            self._refresh(catalog, b)
        finally:
            with self._lock:
                self._inflight.pop(b.id, None)  # only this refresh can be registered for b.id now

    def _refresh(self, catalog: Catalog, b: Backend) -> None:
        client = self._client_for(b)
        try:
            stats = client.system_stats()
            queue = client.queue()
            object_info = self._object_info_if_due(b.id, client)
        except Exception as exc:  # any failure to read a backend is a health event, not a crash
            self.record_failure(b.id, f"cannot read state: {exc}")
            return
        missing = (
            self._support_check(catalog, object_info)
            if object_info is not None and self._support_check
            else None
        )
        now = self._clock.monotonic()
        with self._lock:
            h = self._health.setdefault(b.id, BackendHealth())
            h.fetched_at_s = now
            device = stats.devices[0] if stats.devices else None
            h.vram_total_mb = int(device.vram_total_bytes / MB) if device else None
            h.vram_free_mb = int(device.vram_free_bytes / MB) if device else None
            h.vram_reclaimable_mb = _reclaimable_mb(device)
            h.device_name = device.name if device else None
            h.simulated = bool(h.device_name and "simulat" in h.device_name.lower())
            h.queue_running = len(queue.running)
            h.queue_pending = len(queue.pending)
            if object_info is not None:
                h.object_info_at_s = now
                h.missing = missing or {}
            self._mark_healthy(h)

    def _object_info_if_due(self, backend_id: str, client: StatsClient) -> Mapping[str, Any] | None:
        with self._lock:
            h = self._health.get(backend_id)
            last = h.object_info_at_s if h else None
        if self._support_check is None:
            return None
        if last is not None and self._clock.monotonic() - last < self.object_info_ttl_s:
            return None
        return client.object_info()

    # --- events from runs ---------------------------------------------------------------------

    def record_failure(self, backend_id: str, reason: str) -> None:
        with self._lock:
            h = self._health.setdefault(backend_id, BackendHealth())
            h.healthy = False
            h.last_error = reason
            h.consecutive_failures += 1
            h.cooldown_until_s = self._clock.monotonic() + self.cooldown_s
            h.fetched_at_s = None  # re-read when the cooldown ends
        log.warning("backend %s down (%s); cooldown %.0f s", backend_id, reason, self.cooldown_s)

    def record_run(self, backend_id: str, model_id: str | None, duration_s: float | None) -> None:
        """A prompt ran there: that model is now the one loaded, and the backend answers."""
        with self._lock:
            h = self._health.setdefault(backend_id, BackendHealth())
            if model_id is not None:
                h.loaded_model = model_id
            if duration_s is not None and duration_s > 0:
                h.mean_run_s = 0.8 * h.mean_run_s + 0.2 * duration_s
            self._mark_healthy(h)

    def record_slowness(self, backend_id: str, ratio: float, *, smooth: bool = True) -> None:
        """Observed / expected seconds per step. Smoothed across runs so one noisy run cannot swing
        it; `smooth=False` while a run is being watched: the step rate seen now is the best evidence."""
        if not 0.05 <= ratio <= 50:
            return
        with self._lock:
            h = self._health.setdefault(backend_id, BackendHealth())
            h.slowness = 0.5 * h.slowness + 0.5 * ratio if smooth else ratio

    def record_oom(self, backend_id: str, vram_needed_mb: int) -> None:
        """The backend could not hold `vram_needed_mb`: believe it has less free until re-read."""
        with self._lock:
            h = self._health.setdefault(backend_id, BackendHealth())
            h.vram_free_mb = (
                max(0, vram_needed_mb - 1)
                if h.vram_free_mb is None
                else min(h.vram_free_mb, vram_needed_mb - 1)
            )
            h.loaded_model = None
            h.vram_reclaimable_mb = 0  # nothing more to evict, as far as we know, until re-read

    def _mark_healthy(self, h: BackendHealth) -> None:
        h.healthy = True
        h.last_error = None
        h.consecutive_failures = 0
        h.cooldown_until_s = None

    # --- GET /backends ------------------------------------------------------------------------

    def describe(self, catalog: Catalog) -> list[dict[str, Any]]:
        views = {v.backend.id: v for v in self.snapshot(catalog)}
        now = self._clock.monotonic()
        out = []
        with self._lock:
            for b in catalog.backends:
                h = self._health.get(b.id, BackendHealth())
                v = views.get(b.id)
                cooldown_left = None if h.cooldown_until_s is None else max(0.0, h.cooldown_until_s - now)
                out.append(
                    {
                        "id": b.id,
                        "url": str(b.url) if b.url else None,
                        "gpu_name": b.gpu_name,
                        "device": h.device_name,
                        "simulated": h.simulated,
                        "enabled": b.enabled,
                        "healthy": bool(v and v.healthy),
                        "last_error": h.last_error,
                        "cooldown_remaining_s": cooldown_left,
                        "vram_total_mb": h.vram_total_mb if h.vram_total_mb is not None else b.vram_mb,
                        "vram_free_mb": h.vram_free_mb,
                        "vram_reclaimable_mb": h.vram_reclaimable_mb,
                        "queue_running": h.queue_running,
                        "queue_pending": h.queue_pending,
                        "loaded_model": h.loaded_model,
                        "observed_slowness": round(h.slowness, 3),
                        "unsupported": {f"{m}:{w}": list(x) for (m, w), x in h.missing.items()},
                    }
                )
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _reclaimable_mb(device: DeviceStats | None) -> int | None:
    """Memory torch has allocated on the card: the models ComfyUI keeps cached (and, while a prompt
    runs, its working memory, which is free again before a queued prompt starts). ComfyUI unloads
    cached models to make room for another one, so the selector counts it as available."""
    if device is None or device.type == "cpu":
        return None  # a CPU device reports RAM
    return max(0, int((device.torch_vram_total_bytes - device.torch_vram_free_bytes) / MB))
