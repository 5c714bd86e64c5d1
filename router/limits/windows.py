"""Pure window and limit arithmetic: no I/O, no clock (the caller passes `now`).

Windows are aligned to UTC: a minute window starts at second 0, a day window at 00:00 UTC.
A window is identified by its start, so a counter row keyed by (scope, subject, window start)
resets by itself when the clock enters the next window.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

WindowKind = Literal["minute", "day", "none"]

# Counters that are not windowed (generations running now) use this fixed start.
NO_WINDOW = datetime(1970, 1, 1, tzinfo=UTC)

_LENGTH = {"minute": timedelta(minutes=1), "day": timedelta(days=1)}


def window_start(kind: WindowKind, now: datetime) -> datetime:
    """The start of the window holding `now` (UTC; a naive `now` is taken as UTC)."""
    if kind == "none":
        return NO_WINDOW
    t = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    if kind == "minute":
        return t.replace(second=0, microsecond=0)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def resets_at(kind: WindowKind, now: datetime) -> datetime | None:
    """When the window holding `now` ends and its counters start again from zero."""
    if kind == "none":
        return None
    return window_start(kind, now) + _LENGTH[kind]


def retry_after_s(kind: WindowKind, now: datetime) -> int | None:
    """Whole seconds until the next window (at least 1), for a `Retry-After` header."""
    end = resets_at(kind, now)
    if end is None:
        return None
    t = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return max(1, math.ceil((end - t).total_seconds()))


def fits(used: float, amount: float, cap: float | None) -> bool:
    """Whether adding `amount` to `used` stays within `cap` (None: no cap)."""
    return cap is None or used + amount <= cap + 1e-9


class SpendLevel(StrEnum):
    OK = "ok"
    WARNING = "warning"  # at or above the warning share of the cap: one alert per window
    PAUSED = "paused"  # at or above the cap: new work is refused until the window resets


def spend_level(spent_usd: float, cap_usd: float | None, warn_ratio: float = 0.8) -> SpendLevel:
    if cap_usd is None:
        return SpendLevel.OK
    if spent_usd >= cap_usd - 1e-12:
        return SpendLevel.PAUSED
    if spent_usd >= warn_ratio * cap_usd - 1e-12:
        return SpendLevel.WARNING
    return SpendLevel.OK


def levels_reached(spent_usd: float, cap_usd: float | None, warn_ratio: float = 0.8) -> list[SpendLevel]:
    """The alert levels a window's spend has reached, lowest first (each alerted once per window)."""
    level = spend_level(spent_usd, cap_usd, warn_ratio)
    return {
        SpendLevel.OK: [],
        SpendLevel.WARNING: [SpendLevel.WARNING],
        SpendLevel.PAUSED: [SpendLevel.WARNING, SpendLevel.PAUSED],
    }[level]
