"""The virtual clock: discrete events in a heap, run in time order (ties in scheduling order)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta


class EventLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.events = 0

    def at(self, t: float, action: Callable[[], None]) -> None:
        """Run `action` at virtual time t (never before now)."""
        heapq.heappush(self._heap, (max(t, self.now), next(self._seq), action))

    def run(self) -> None:
        """Until no event is left; every event either ends a bounded piece of work or schedules a
        later one, and each job has a bounded number of attempts, so this ends."""
        while self._heap:
            t, _, action = heapq.heappop(self._heap)
            self.now = t
            self.events += 1
            action()


class VirtualClock:
    """router.clock.Clock on the event loop's time (for LiveBackendState's TTLs and cooldowns)."""

    def __init__(self, loop: EventLoop, start: datetime) -> None:
        self._loop = loop
        self.start = start

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self._loop.now)

    def monotonic(self) -> float:
        return self._loop.now
