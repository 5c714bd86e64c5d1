"""Reading ComfyUI's `/object_info` (node classes, their inputs, the files a loader can choose),
and a per-backend cache of it.

`/object_info` is large (about 1 MB for 545 nodes) and slow to build on a backend with many
custom nodes, but only changes when nodes or model files are installed: fetch it once per
backend and keep it for a TTL; invalidate it when a run fails on a missing file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ObjectInfo = Mapping[str, Any]


def input_spec(node_info: Mapping[str, Any], input_name: str) -> Sequence[Any] | None:
    """The `[type_or_choices, options]` spec of a required or optional input, None if absent."""
    inputs = node_info.get("input")
    if not isinstance(inputs, Mapping):
        return None
    for section in ("required", "optional"):
        declared = inputs.get(section)
        if isinstance(declared, Mapping) and input_name in declared:
            spec = declared[input_name]
            return spec if isinstance(spec, list | tuple) else None
    return None


def combo_options(node_info: Mapping[str, Any], input_name: str) -> list[str] | None:
    """The choices of a combo input, in both formats ComfyUI uses:

    - older nodes: `"ckpt_name": [["a.safetensors", "b.safetensors"], {...}]`
    - newer (V3 schema) nodes: `"channel": ["COMBO", {"options": ["red", "green"], ...}]`

    None when the input does not exist or is not a combo.
    """
    spec = input_spec(node_info, input_name)
    if not spec:
        return None
    head = spec[0]
    if isinstance(head, list | tuple):
        return [str(choice) for choice in head]
    if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], Mapping):
        options = spec[1].get("options")
        if isinstance(options, list | tuple):
            return [str(choice) for choice in options]
    return None


@dataclass
class _Entry:
    value: ObjectInfo
    fetched_at_s: float


class ObjectInfoCache:
    """`/object_info` per backend URL, fetched at most once per `ttl_s`.

    `fetch(base_url)` does the request (e.g. `lambda url: ComfyUIClient(url).object_info()`);
    a failing fetch raises to the caller and caches nothing. `clock` is injected for tests.
    Concurrent callers for the same URL share one fetch.
    """

    def __init__(
        self,
        fetch: Callable[[str], ObjectInfo],
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, base_url: str) -> ObjectInfo:
        key = _key(base_url)
        entry = self._fresh(key)
        if entry is not None:
            return entry.value
        with self._lock_for(key):
            entry = self._fresh(key)  # another thread may have fetched while we waited
            if entry is not None:
                return entry.value
            value = self._fetch(key)
            with self._guard:
                self._entries[key] = _Entry(value, self._clock())
            return value

    def invalidate(self, base_url: str | None = None) -> None:
        """Forget one backend's object_info, or every backend's when base_url is None."""
        with self._guard:
            if base_url is None:
                self._entries.clear()
            else:
                self._entries.pop(_key(base_url), None)

    def age_s(self, base_url: str) -> float | None:
        with self._guard:
            entry = self._entries.get(_key(base_url))
        return None if entry is None else self._clock() - entry.fetched_at_s

    def _fresh(self, key: str) -> _Entry | None:
        with self._guard:
            entry = self._entries.get(key)
        if entry is None or self._clock() - entry.fetched_at_s >= self._ttl_s:
            return None
        return entry

    def _lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def _key(base_url: str) -> str:
    return base_url.rstrip("/")
