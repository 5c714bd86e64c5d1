"""Window and limit arithmetic (router/limits/windows.py), API key entries, per-client limits."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.api.auth import parse_keys
from router.limits.config import ClientLimits, LimitsSettings
from router.limits.windows import (
    NO_WINDOW,
    SpendLevel,
    fits,
    levels_reached,
    resets_at,
    retry_after_s,
    spend_level,
    window_start,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "now", "start", "end", "retry_s"),
    [
        ("minute", utc(2026, 11, 23, 12, 0, 15), utc(2026, 11, 23, 12, 0), utc(2026, 11, 23, 12, 1), 45),
        (
            "minute",
            utc(2026, 11, 23, 12, 0, 59, 900_000),
            utc(2026, 11, 23, 12, 0),
            utc(2026, 11, 23, 12, 1),
            1,
        ),
        ("minute", utc(2026, 11, 23, 12, 1), utc(2026, 11, 23, 12, 1), utc(2026, 11, 23, 12, 2), 60),
        ("day", utc(2026, 11, 23, 23, 59, 30), utc(2026, 11, 23), utc(2026, 11, 24), 30),
        ("day", utc(2026, 11, 24, 0, 0, 0), utc(2026, 11, 24), utc(2026, 11, 25), 86_400),
        ("day", utc(2026, 12, 31, 18), utc(2026, 12, 31), utc(2027, 1, 1), 6 * 3600),
        ("day", utc(2028, 2, 28, 12), utc(2028, 2, 28), utc(2028, 2, 29), 12 * 3600),
        # 01:30 at UTC+2 is 23:30 UTC the day before: windows are UTC days, not local ones
        (
            "day",
            datetime(2026, 11, 24, 1, 30, tzinfo=timezone(timedelta(hours=2))),
            utc(2026, 11, 23),
            utc(2026, 11, 24),
            1800,
        ),
        ("day", datetime(2026, 11, 23, 6), utc(2026, 11, 23), utc(2026, 11, 24), 18 * 3600),  # naive = UTC
    ],
    ids=[
        "minute-mid",
        "minute-last-tenth",
        "minute-boundary-starts-new",
        "day-last-30s",
        "day-midnight-starts-new",
        "day-new-year",
        "day-leap",
        "day-offset-aware",
        "day-naive-utc",
    ],
)
def test_windows(kind: str, now: datetime, start: datetime, end: datetime, retry_s: int) -> None:
    assert window_start(kind, now) == start  # type: ignore[arg-type]
    assert resets_at(kind, now) == end  # type: ignore[arg-type]
    assert retry_after_s(kind, now) == retry_s  # type: ignore[arg-type]


def test_unwindowed_counters_never_reset() -> None:
    now = utc(2026, 11, 23, 12)
    assert window_start("none", now) == NO_WINDOW
    assert resets_at("none", now) is None and retry_after_s("none", now) is None


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_a_moment_lies_in_its_window(now: datetime) -> None:
    for kind in ("minute", "day"):
        start, end = window_start(kind, now), resets_at(kind, now)  # type: ignore[arg-type]
        assert end is not None and start <= now < end
        assert 1 <= (retry_after_s(kind, now) or 0) <= (end - start).total_seconds()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spent", "cap", "level", "reached"),
    [
        (0.0, 10.0, SpendLevel.OK, []),
        (7.99, 10.0, SpendLevel.OK, []),
        (8.0, 10.0, SpendLevel.WARNING, [SpendLevel.WARNING]),
        (9.99, 10.0, SpendLevel.WARNING, [SpendLevel.WARNING]),
        (10.0, 10.0, SpendLevel.PAUSED, [SpendLevel.WARNING, SpendLevel.PAUSED]),
        (12.0, 10.0, SpendLevel.PAUSED, [SpendLevel.WARNING, SpendLevel.PAUSED]),
        (0.1 + 0.7, 1.0, SpendLevel.WARNING, [SpendLevel.WARNING]),  # 0.7999999999999999: float sums
        (0.0, 0.0, SpendLevel.PAUSED, [SpendLevel.WARNING, SpendLevel.PAUSED]),  # a zero cap pauses
        (1e9, None, SpendLevel.OK, []),
    ],
    ids=["none", "under-80", "at-80", "under-100", "at-100", "over", "float-sum-80", "zero-cap", "no-cap"],
)
def test_spend_levels(spent: float, cap: float | None, level: SpendLevel, reached: list[SpendLevel]) -> None:
    assert spend_level(spent, cap) == level
    assert levels_reached(spent, cap) == reached


def test_the_warning_share_is_configurable() -> None:
    assert spend_level(5.0, 10.0, warn_ratio=0.5) == SpendLevel.WARNING
    assert spend_level(4.9, 10.0, warn_ratio=0.5) == SpendLevel.OK


@pytest.mark.parametrize(
    ("used", "amount", "cap", "ok"),
    [
        (0, 1, 1, True),
        (1, 1, 1, False),
        (2, 2, 4, True),
        (3, 2, 4, False),
        (99, 1, None, True),
        (0, 1, 0, False),
    ],
    ids=["first", "full", "fits-exactly", "would-overflow", "no-cap", "zero-cap"],
)
def test_fits(used: float, amount: float, cap: float | None, ok: bool) -> None:
    assert fits(used, amount, cap) is ok


HEX = hashlib.sha256(b"k").hexdigest()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("plain-key", [(b"plain-key", None, {"client"})]),
        (f"sha256:{HEX}", [(b"k", None, {"client"})]),
        ("acme:k", [(b"k", "acme", {"client"})]),
        (f"acme:sha256:{HEX}", [(b"k", "acme", {"client"})]),
        ("admin@ops:k", [(b"k", "ops", {"admin"})]),
        ("client+admin@ops.team_1:k", [(b"k", "ops.team_1", {"client", "admin"})]),
        ("acme:a:b@c", [(b"a:b@c", "acme", {"client"})]),  # a key holding ':' or '@', with its client
        ("user@example", [(b"user@example", None, {"client"})]),  # '@' without ':' is a plain key
        (" a , acme:b ,", [(b"a", None, {"client"}), (b"b", "acme", {"client"})]),
        ("", []),
    ],
    ids=[
        "plain",
        "hashed",
        "bound",
        "bound-hashed",
        "admin",
        "two-scopes",
        "colon-in-key",
        "at-in-plain-key",
        "list",
        "empty",
    ],
)
def test_key_entries(spec: str, expected: list[tuple[bytes, str | None, set[str]]]) -> None:
    entries = parse_keys(spec)
    assert [(e.digest, e.client_id, set(e.scopes)) for e in entries] == [
        (hashlib.sha256(k).digest(), c, s) for k, c, s in expected
    ]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("sha256:abc", "64 hex digits"),
        ("acme:sha256:xyz", "64 hex digits"),
        ("root@ops:topsecret", "unknown scope"),
        ("bad client:topsecret", "CLIENT:KEY"),
    ],
    ids=["short-digest", "bound-short-digest", "unknown-scope", "bad-client-name"],
)
def test_bad_key_entries_are_named_by_position_never_by_their_text(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        parse_keys(f"fine-key,{spec}")
    assert "entry 2" in str(info.value) and "topsecret" not in str(info.value)


def test_client_overrides_replace_only_the_fields_they_set() -> None:
    limits = LimitsSettings(
        requests_per_min=60,
        images_per_day=100,
        max_running_per_client=2,
        clients={"big": ClientLimits(images_per_day=1000), "capped": ClientLimits(gpu_usd_per_day=5.0)},
    )
    assert limits.for_client("someone") == ClientLimits(
        requests_per_min=60, images_per_day=100, max_running=2
    )
    assert limits.for_client("big") == ClientLimits(requests_per_min=60, images_per_day=1000, max_running=2)
    assert limits.for_client("capped").gpu_usd_per_day == 5.0
    assert limits.for_client("capped").images_per_day == 100


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_ROUTER_REQUESTS_PER_MIN", "30")
    monkeypatch.setenv("COMFY_ROUTER_GLOBAL_GPU_USD_PER_DAY", "12.5")
    monkeypatch.setenv("COMFY_ROUTER_CLIENT_LIMITS", '{"acme": {"images_per_day": 3}}')
    monkeypatch.setenv("COMFY_ROUTER_BACKEND_MAX_RUNNING", '{"a100": 2}')
    monkeypatch.setenv("COMFY_ROUTER_MAX_RUNNING_PER_BACKEND", "4")
    limits = LimitsSettings()
    assert limits.for_client("acme") == ClientLimits(requests_per_min=30, images_per_day=3)
    assert limits.global_gpu_usd_per_day == 12.5
    assert (limits.for_backend("a100"), limits.for_backend("rtx4090")) == (2, 4)
    assert limits.caps_backends
