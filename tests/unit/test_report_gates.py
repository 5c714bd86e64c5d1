"""The report's pure parts: the interpolated percentile, the time arguments, the gates and the verdict."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from router.report.cli import parse_time
from router.report.gates import Thresholds, judge
from router.report.metrics import WindowStats, WorkflowLatency, percentile, workflow_of

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        pytest.param([], 0.95, None, id="empty"),
        pytest.param([7.0], 0.95, 7.0, id="one-value"),
        # rank 0.95 x 3 = 2.85: 20 + 0.85 x (40 - 20) = 37
        pytest.param([40.0, 5.0, 20.0, 10.0], 0.95, 37.0, id="four-unsorted"),
        # rank 0.5 x 3 = 1.5: halfway between 10 and 20
        pytest.param([5.0, 10.0, 20.0, 40.0], 0.5, 15.0, id="median-even"),
        # rank 0.95 x 19 = 18.05 on 1..20: 19 + 0.05 x 1
        pytest.param([float(i) for i in range(1, 21)], 0.95, 19.05, id="one-to-twenty"),
        pytest.param([3.0, 3.0, 3.0], 0.95, 3.0, id="all-equal"),
    ],
)
def test_percentile_is_linearly_interpolated(values: list[float], p: float, expected: float | None) -> None:
    assert percentile(values, p) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("model", "purpose", "workflow"),
    [
        pytest.param("flux1-dev-fp8", "portrait", "FLUX", id="flux-model"),
        pytest.param("faceswap-reactor", None, "Face swap", id="faceswap-model"),
        pytest.param("sdxl-base", "face-swap", "Face swap", id="face-swap-purpose-wins"),
        pytest.param("sdxl-base", "portrait", "Other", id="other"),
    ],
)
def test_workflow_buckets_match_the_dashboard(model: str, purpose: str | None, workflow: str) -> None:
    assert workflow_of(model, purpose) == workflow


@pytest.mark.parametrize(
    ("value", "future", "expected"),
    [
        pytest.param("24h", False, NOW - timedelta(hours=24), id="hours-back"),
        pytest.param("7d", False, NOW - timedelta(days=7), id="days-back"),
        pytest.param("90m", True, NOW + timedelta(minutes=90), id="minutes-forward"),
        pytest.param("2026-11-01T00:00", False, datetime(2026, 11, 1, tzinfo=UTC), id="naive-iso-is-utc"),
        pytest.param(
            "2026-11-01T00:00-03:00", False, datetime(2026, 11, 1, 3, tzinfo=UTC), id="iso-with-offset"
        ),
    ],
)
def test_parse_time(value: str, future: bool, expected: datetime) -> None:
    assert parse_time(value, NOW, future=future) == expected


def test_parse_time_refuses_nonsense() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time("yesterday", NOW)


PASSING = WindowStats(
    since=NOW - timedelta(days=1),
    until=NOW,
    requests=100,
    failed_requests=2,
    error_rate=0.02,
    workflows=[WorkflowLatency("FLUX", 80, 40.0), WorkflowLatency("Face swap", 20, 200.0)],
    models=[],
    gpu_cost_usd=10.0,
    hosted_usd=30.0,
    savings_usd=20.0,
    projected_monthly_savings_usd=600.0,
    uptime_by_backend={"a100": 1.0, "rtx4090": 0.995},
)


def _flux_p95(s: float) -> list[WorkflowLatency]:
    return [WorkflowLatency("FLUX", 80, s), WorkflowLatency("Face swap", 20, 200.0)]


@pytest.mark.parametrize(
    ("changes", "verdict", "reason_has"),
    [
        pytest.param({}, "GO", "all 5 gates", id="all-pass"),
        pytest.param({"error_rate": 0.05}, "GO", "all 5", id="error-rate-at-limit-passes"),
        pytest.param({"workflows": _flux_p95(60.0)}, "GO", "all 5", id="flux-p95-at-target-passes"),
        pytest.param({"error_rate": 0.06}, "STOP", "error rate", id="error-rate-over-limit"),
        pytest.param({"error_rate": 0.10}, "STOP", "error rate", id="error-rate-exactly-twice-is-stop"),
        pytest.param({"error_rate": 0.11}, "ABORT", "over twice", id="error-rate-over-twice"),
        pytest.param({"workflows": _flux_p95(61.0)}, "STOP", "FLUX p95", id="flux-p95-over"),
        pytest.param(
            {"workflows": [WorkflowLatency("FLUX", 80, 40.0), WorkflowLatency("Face swap", 20, 301.0)]},
            "STOP",
            "face swap p95",
            id="faceswap-p95-over",
        ),
        pytest.param(
            {"uptime_by_backend": {"a100": 1.0, "rtx4090": 0.98}}, "STOP", "uptime", id="uptime-low"
        ),
        pytest.param({"projected_monthly_savings_usd": 299.0}, "STOP", "savings", id="savings-below-minimum"),
        pytest.param({"projected_monthly_savings_usd": -1.0}, "ABORT", "negative", id="savings-negative"),
        pytest.param({"uptime_by_backend": {}}, "GO", "all 4 gates", id="no-uptime-data-not-judged"),
        pytest.param({"workflows": []}, "GO", "all 3 gates", id="no-latency-data-not-judged"),
    ],
)
def test_verdict(changes: dict[str, object], verdict: str, reason_has: str) -> None:
    result = judge(replace(PASSING, **changes), Thresholds())  # type: ignore[arg-type]
    assert result.verdict == verdict
    assert reason_has in result.reason


def test_an_empty_window_is_stop() -> None:
    empty = replace(
        PASSING, requests=0, failed_requests=0, error_rate=None, workflows=[], uptime_by_backend={}
    )
    assert judge(empty, Thresholds()).verdict == "STOP"


def test_thresholds_are_configurable() -> None:
    stats = replace(PASSING, error_rate=0.08)
    assert judge(stats, Thresholds()).verdict == "STOP"
    assert judge(stats, Thresholds(max_error_rate=0.10)).verdict == "GO"
    assert judge(stats, Thresholds(max_error_rate=0.03)).verdict == "ABORT"
