"""LiveBackendState: requests that find a backend stale at the same time share one read of it.

Found by the load bench (router/bench/load.py): hundreds of request threads each read every stale
backend's /system_stats and /queue themselves.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from router.backends.live import LiveBackendState
from router.catalog import Catalog
from router.catalog.schema import Backend
from router.clock import SystemClock
from router.comfyui.protocol import DeviceStats, QueueState, SystemStats

GIB = 1024**3


class SlowBackend:
    """A StatsClient whose reads take `delay_s` and are counted."""

    def __init__(self, delay_s: float, queued: int = 3) -> None:
        self.delay_s = delay_s
        self.queued = queued
        self.reads = 0
        self._lock = threading.Lock()

    def system_stats(self) -> SystemStats:
        with self._lock:
            self.reads += 1
        time.sleep(self.delay_s)
        device = DeviceStats("sim", "cuda", 0, 80 * GIB, 60 * GIB, 80 * GIB, 60 * GIB)
        return SystemStats("sim", None, 64 * GIB, 32 * GIB, (device,))

    def queue(self) -> QueueState:
        return QueueState(running=("r",), pending=tuple(f"p{i}" for i in range(self.queued - 1)))

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("callers", [1, 8, 64], ids=["one-caller", "8-at-once", "64-at-once"])
def test_concurrent_snapshots_read_each_backend_once(catalog: Catalog, callers: int) -> None:
    fakes: dict[str, SlowBackend] = {b.id: SlowBackend(delay_s=0.2) for b in catalog.backends}

    def client_for(b: Backend) -> SlowBackend:
        return fakes[b.id]

    state = LiveBackendState(client_for, SystemClock(), ttl_s=60.0)
    start = threading.Barrier(callers)

    def snapshot() -> list[Any]:
        start.wait(timeout=10)
        return state.snapshot(catalog)

    with ThreadPoolExecutor(max_workers=callers) as pool:
        views = list(pool.map(lambda _: snapshot(), range(callers)))
    assert {b: f.reads for b, f in fakes.items()} == {b.id: 1 for b in catalog.backends}
    for per_caller in views:  # every caller waited for the shared read: nobody saw an empty view
        assert [v.vram_free_mb for v in per_caller] == [60 * 1024] * len(catalog.backends)
        assert all(v.healthy for v in per_caller)


def test_a_stale_backend_is_read_again_after_the_ttl(catalog: Catalog) -> None:
    fake = SlowBackend(delay_s=0.0)
    state = LiveBackendState(lambda b: fake, SystemClock(), ttl_s=0.05)
    one = catalog.model_copy(update={"backends": catalog.backends[:1]})
    state.snapshot(one)
    state.snapshot(one)  # within the TTL: no read
    assert fake.reads == 1
    time.sleep(0.06)
    state.snapshot(one)
    assert fake.reads == 2
