"""Live backend state: each ComfyUI's /system_stats and /queue behind a short TTL, health with
cooldown, the model last run there, and what we learned of its real speed.

ComfyUI keeps the last model loaded and no route says which it is, so the router tracks it from
its own runs. A backend that fails is put in cooldown (no requests to it, no wait for it) and
probed again when the cooldown ends.

The expected wait is priced from what is queued: ComfyUI's /queue says which prompts are there,
and for the prompts this router submitted it knows what it expected each to cost (`Submitted`,
recorded before submission, so a burst of requests within one TTL sees each other's work). A
prompt it did not submit is priced at the mean run seen there. A prompt sent to the queue's front
(ComfyUI's `front`: a negative number, so the newest front prompt runs next) waits only for the
prompt running.
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
    running_ids: frozenset[str] = frozenset()  # prompt ids /queue listed as running at the last read
    recent_models: list[str] = field(default_factory=list)  # models run or queued there, newest last
    pending_ids: frozenset[str] = frozenset()


@dataclass
class Submitted:
    """A prompt this router put on a backend's queue and what it expects it to cost."""

    model_id: str
    busy_s: float  # expected load + run seconds once it starts
    front: bool
    submitted_at_s: float
    started_at_s: float | None = None  # when it was first seen running (monotonic)


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
        # backend id -> prompt id -> what this router submitted there and has not seen finish
        self._submitted: dict[str, dict[str, Submitted]] = {}

    # --- what the selector sees -------------------------------------------------------------

    def snapshot(self, catalog: Catalog, *, without: str | None = None) -> list[BackendView]:
        """The backends as the selector sees them now; `without`: as if that prompt (one about to
        be interrupted for a faster rung) were not there."""
        backends = [b for b in catalog.backends if b.enabled]
        refreshes = [self._refresh_shared(catalog, b) for b in backends if self._needs_refresh(b.id)]
        for done in refreshes:
            done.result()
        with self._lock:
            return [
                self._view(catalog, b, self._health.setdefault(b.id, BackendHealth()), without)
                for b in backends
            ]

    def _view(
        self, catalog: Catalog, b: Backend, h: BackendHealth, without: str | None = None
    ) -> BackendView:
        now = self._clock.monotonic()
        in_cooldown = h.cooldown_until_s is not None and now < h.cooldown_until_s
        healthy = h.healthy and not in_cooldown
        queue = _queue_figures(h, self._submitted.get(b.id, {}), now, without)
        speed = b.speed_factor / h.slowness if h.slowness > 0 else b.speed_factor
        backend = b if speed == b.speed_factor else b.model_copy(update={"speed_factor": speed})
        return BackendView(
            backend=backend,
            healthy=healthy,
            unhealthy_reason=None if healthy else (h.last_error or "in cooldown after a failure"),
            vram_free_mb=h.vram_free_mb,
            vram_reclaimable_mb=h.vram_reclaimable_mb,
            loaded_model=queue.tail_model or h.loaded_model,
            queue_s=queue.back_s,
            front_queue_s=queue.front_s,
            front_loaded_model=queue.running_model or h.loaded_model,
            resident_models=_resident(catalog, h, b),
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
        read_at = self._clock.monotonic()
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
            if h.vram_reclaimable_mb == 0 and not queue.running:
                h.recent_models.clear()  # nothing cached there (a restart, or models unloaded)
            h.device_name = device.name if device else None
            h.simulated = bool(h.device_name and "simulat" in h.device_name.lower())
            h.queue_running = len(queue.running)
            h.queue_pending = len(queue.pending)
            h.running_ids, h.pending_ids = frozenset(queue.running), frozenset(queue.pending)
            self._settle_submitted(b.id, h, read_at, now)
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

    def _settle_submitted(self, backend_id: str, h: BackendHealth, read_at: float, now: float) -> None:
        """After a /queue read (under the lock): note which prompts started, and forget the ones
        submitted before the read that it no longer lists (finished, or lost with a restart)."""
        mine = self._submitted.get(backend_id)
        if not mine:
            return
        for prompt_id, s in list(mine.items()):
            if prompt_id in h.running_ids:
                if s.started_at_s is None:
                    s.started_at_s = now
            elif prompt_id not in h.pending_ids and s.submitted_at_s < read_at:
                del mine[prompt_id]

    # --- events from runs ---------------------------------------------------------------------

    def record_submitted(
        self, backend_id: str, prompt_id: str, model_id: str, busy_s: float, *, front: bool = False
    ) -> None:
        """The runner is about to submit this prompt: count it in the backend's queue from now on."""
        with self._lock:
            self._submitted.setdefault(backend_id, {})[prompt_id] = Submitted(
                model_id, max(0.0, busy_s), front, self._clock.monotonic()
            )
            _used(self._health.setdefault(backend_id, BackendHealth()), model_id)

    def record_finished(self, backend_id: str, prompt_id: str) -> None:
        """The prompt left the backend (done, failed, interrupted or never accepted)."""
        with self._lock:
            self._submitted.get(backend_id, {}).pop(prompt_id, None)

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
                _used(h, model_id)
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
            h.recent_models.clear()

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


@dataclass(frozen=True)
class QueueFigures:
    back_s: float  # expected wait of a prompt sent to the back of the queue
    front_s: float  # ... and of one sent to the front (it waits for the running prompt only)
    tail_model: str | None  # the model of the last prompt queued by this router, if any
    running_model: str | None  # the model of the prompt running, when this router submitted it


def _queue_figures(
    h: BackendHealth, mine: Mapping[str, Submitted], now: float, without: str | None = None
) -> QueueFigures:
    """Expected waits from the last /queue read and this router's own submissions since."""
    if without is not None:
        mine = {prompt_id: s for prompt_id, s in mine.items() if prompt_id != without}
    running_s, running_model = 0.0, None
    for prompt_id in h.running_ids - {without}:
        s = mine.get(prompt_id)
        if s is None:
            running_s += 0.5 * h.mean_run_s  # someone else's prompt, somewhere in its run
        else:
            started = s.started_at_s if s.started_at_s is not None else now
            # It may overrun its estimate: never count it as done while it still runs.
            running_s += max(0.1 * s.busy_s, s.busy_s - (now - started))
            running_model = s.model_id
    queued = [s for prompt_id, s in mine.items() if prompt_id not in h.running_ids]
    foreign = sum(1 for prompt_id in h.pending_ids if prompt_id not in mine and prompt_id != without)
    back_s = running_s + sum(s.busy_s for s in queued) + foreign * h.mean_run_s
    return QueueFigures(back_s, running_s, _last_to_run(queued) or running_model, running_model)


def _last_to_run(queued: list[Submitted]) -> str | None:
    """The model of the queued prompt that runs last: ComfyUI runs front prompts newest first,
    then the others oldest first (its queue is a heap on a number, negative for `front`)."""
    back = [s for s in queued if not s.front]  # `queued` is in submission order
    if back:
        return back[-1].model_id
    return queued[0].model_id if queued else None


def _used(h: BackendHealth, model_id: str) -> None:
    """Move `model_id` to the most recent end of the backend's model history (bounded)."""
    if model_id in h.recent_models:
        h.recent_models.remove(model_id)
    h.recent_models.append(model_id)
    del h.recent_models[:-16]


def _resident(catalog: Catalog, h: BackendHealth, b: Backend) -> frozenset[str]:
    """The models still cached when the queue has run: ComfyUI keeps the most recently used ones
    until it needs their memory, so walk the history newest first while they fit the card."""
    room_mb = (h.vram_total_mb if h.vram_total_mb is not None else b.vram_mb) - catalog.vram_headroom_mb
    resident: set[str] = set()
    for model_id in reversed(h.recent_models):
        model = catalog.model(model_id)
        if model is None or model.vram_mb > room_mb:
            break
        room_mb -= model.vram_mb
        resident.add(model_id)
    return frozenset(resident)
