"""A replayed day in PostgreSQL: `comfy-router report`'s numbers equal a hand computation from the
replay's own per-request records, and the verdict flips when a threshold is crossed."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from router.catalog import Catalog
from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from router.replay.cli import main as replay_cli
from router.replay.generate import TraceSpec, generate_trace
from router.replay.records import RequestRecord
from router.replay.run import ReplayOptions, replay_policy
from router.replay.trace import write_trace
from router.report import metrics
from router.report.gates import Thresholds, judge

START = datetime(2026, 3, 2, tzinfo=UTC)
SEED = 5


def _p95(values: list[float]) -> float:
    """By hand: rank 0.95 x (n - 1) on the sorted values, interpolated between the neighbours."""
    ordered = sorted(values)
    rank = 0.95 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _workflow(r: RequestRecord) -> str:
    model = r.attempts[0].model
    if r.request.purpose == "face-swap" or model.startswith("faceswap"):
        return "Face swap"
    return "FLUX" if model.startswith("flux") else "Other"


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Path:
    path = tmp_path_factory.mktemp("replay") / "day.jsonl"
    write_trace(path, generate_trace(catalog, TraceSpec(load=1.0, seed=SEED, requests=300)))
    return path


def test_report_on_a_replayed_day(
    pg_db: Database, catalog: Catalog, trace_path: Path, catalog_path: Path
) -> None:
    argv = ["replay", "--trace", str(trace_path), "--policy", "router", "--seed", str(SEED), "--quiet"]
    argv += ["--config", str(catalog_path), "--record", pg_db.url, "--start", START.isoformat()]
    assert replay_cli(argv) == 0
    assert replay_cli(argv) == 2  # the same replay twice is refused, not counted twice

    # The replay is deterministic: running it again in-process gives the records that were written.
    from router.replay.trace import read_trace

    run = replay_policy(
        catalog, read_trace(trace_path, catalog), "router", ReplayOptions(seed=SEED, start=START)
    )
    records = run.records
    with pg_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == len(records)
        assert s.scalar(select(func.count()).select_from(ModelUsageLog)) == sum(
            len(r.attempts) for r in records
        )
        stats = metrics.compute(s, START, START + timedelta(days=1))

    # By hand, from the replay's records (the report counts requests that reached a backend).
    counted = [r for r in records if r.attempts]
    failed = [r for r in counted if not any(a.produced for a in r.attempts)]
    assert failed, "the trace should include failed requests, or the error rate checks nothing"
    latencies: dict[str, list[float]] = {}
    for r in counted:
        span = max(a.ended_at for a in r.attempts) - min(a.submitted_at for a in r.attempts)
        latencies.setdefault(_workflow(r), []).append(span)
    hosted = sum(a.hosted_usd or 0.0 for r in counted for a in r.attempts if a.produced)
    gpu_cost = sum(a.cost_usd for r in counted for a in r.attempts)

    assert stats.requests == len(counted)
    assert stats.failed_requests == len(failed)
    assert stats.error_rate == pytest.approx(len(failed) / len(counted))
    for workflow, values in latencies.items():
        assert stats.p95(workflow) == pytest.approx(_p95(values), abs=1e-5), workflow
    assert {"FLUX", "Face swap"} <= set(latencies)
    assert stats.gpu_cost_usd == pytest.approx(gpu_cost)
    assert stats.hosted_usd == pytest.approx(hosted)
    assert stats.savings_usd == pytest.approx(hosted - gpu_cost)
    assert stats.projected_monthly_savings_usd == pytest.approx((hosted - gpu_cost) * 30)
    # A request the selector refused outright has a failed job and no attempt: not in the report.
    refused = [r for r in records if not r.attempts]
    with pg_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.status == "failed")) == len(
            failed
        ) + len(refused)

    # The verdict: GO with thresholds just on the passing side of what was observed ...
    error_rate = len(failed) / len(counted)
    p95_flux = _p95(latencies["FLUX"])
    go = Thresholds(
        max_error_rate=error_rate,
        p95_flux_s=p95_flux + 0.01,
        p95_faceswap_s=_p95(latencies["Face swap"]) + 0.01,
        min_savings_usd_month=(hosted - gpu_cost) * 30 - 0.01,
    )
    assert judge(stats, go).verdict == "GO"
    # ... STOP when the FLUX p95 target is crossed ...
    stop = judge(stats, replace(go, p95_flux_s=p95_flux - 0.01))
    assert stop.verdict == "STOP" and "FLUX p95" in stop.reason
    # ... and ABORT when the error rate is over twice the limit.
    abort = judge(stats, replace(go, max_error_rate=error_rate / 2.01))
    assert abort.verdict == "ABORT" and "error rate" in abort.reason


def test_replay_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0, "purpose": "portrait"}\n')
    assert replay_cli(["replay", "--trace", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such trace file" in capsys.readouterr().err
    assert replay_cli(["replay", "--trace", str(bad)]) == 2
    assert f"{bad}:1: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        replay_cli(["replay", "--trace", str(bad), "--policy", "random"])
    assert exc.value.code == 2
    assert "invalid choice: 'random'" in capsys.readouterr().err
