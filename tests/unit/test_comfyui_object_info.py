"""ObjectInfoCache: one /object_info fetch per backend per TTL, on an injected clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from router.comfyui import ComfyUIConnectionError, ObjectInfoCache


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class CountingFetch:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    def __call__(self, base_url: str) -> dict[str, Any]:
        self.calls.append(base_url)
        if self.fail:
            raise ComfyUIConnectionError("down", url=base_url)
        return {"KSampler": {"n": len(self.calls)}}


def test_fetched_once_per_backend_within_the_ttl() -> None:
    clock, fetch = FakeClock(), CountingFetch()
    cache = ObjectInfoCache(fetch, ttl_s=60, clock=clock)
    first = cache.get("http://a:8188/")
    assert cache.get("http://a:8188") is first  # trailing slash: same backend
    cache.get("http://b:8188")
    assert fetch.calls == ["http://a:8188", "http://b:8188"]
    clock.now_s += 59.9
    cache.get("http://a:8188")
    assert len(fetch.calls) == 2
    assert cache.age_s("http://a:8188") == pytest.approx(59.9)
    clock.now_s += 0.1
    assert cache.get("http://a:8188")["KSampler"]["n"] == 3
    assert cache.age_s("http://a:8188") == 0


def test_invalidate_one_or_all() -> None:
    clock, fetch = FakeClock(), CountingFetch()
    cache = ObjectInfoCache(fetch, ttl_s=60, clock=clock)
    cache.get("http://a")
    cache.get("http://b")
    cache.invalidate("http://a/")
    assert cache.age_s("http://a") is None
    cache.get("http://a")
    cache.get("http://b")
    assert fetch.calls == ["http://a", "http://b", "http://a"]
    cache.invalidate()
    cache.get("http://b")
    assert fetch.calls[-1] == "http://b" and len(fetch.calls) == 4


def test_a_failed_fetch_is_not_cached() -> None:
    clock, fetch = FakeClock(), CountingFetch()
    cache = ObjectInfoCache(fetch, ttl_s=60, clock=clock)
    fetch.fail = True
    with pytest.raises(ComfyUIConnectionError):
        cache.get("http://a")
    fetch.fail = False
    assert cache.get("http://a")["KSampler"]["n"] == 2


def test_concurrent_callers_share_one_fetch() -> None:

    def slow_fetch(base_url: str) -> dict[str, Any]:
        time.sleep(0.05)
        calls.append(base_url)
        return {}

    calls: list[str] = []
    cache = ObjectInfoCache(slow_fetch, ttl_s=60)
    threads = [threading.Thread(target=cache.get, args=("http://a",)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert calls == ["http://a"]


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        ObjectInfoCache(CountingFetch(), ttl_s=0)
