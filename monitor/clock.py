"""Time, injected so tests can pin the timestamps rows get."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall time: the rows' `ts`."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin: durations, immune to wall-clock steps."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
