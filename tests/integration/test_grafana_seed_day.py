"""tests/support/seed_day.py: the day of data behind the dashboard tests, reusable by other tests."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from sqlalchemy import func, select

from router.db.database import Database
from router.db.models import Feedback, Job, ModelUsageLog, VramUsageLog
from tests.support.seed_day import seed_day

START = datetime(2026, 11, 2, tzinfo=UTC)

pytestmark = pytest.mark.postgres


def pattern(attempts: list[ModelUsageLog], start: datetime) -> list[tuple[object, ...]]:
    return sorted(
        (a.started_at - start, a.model_name, a.tier, a.backend, a.outcome, a.actual_s, a.source)
        for a in attempts
    )


def test_seed_day_counts_what_it_wrote_and_two_days_fit_in_one_database(pg_db: Database) -> None:
    with pg_db.session() as session:
        first = seed_day(session, start=START, seed=3)
    with pg_db.session() as session:
        second = seed_day(session, start=START + timedelta(days=1), seed=3)
    assert first == second  # same seed, same day shape

    with pg_db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2 * first["jobs"]
        assert session.scalar(select(func.count()).select_from(ModelUsageLog)) == 2 * first["attempts"]
        assert session.scalar(select(func.count()).select_from(VramUsageLog)) == 2 * first["vram_rows"]
        assert session.scalar(select(func.count()).select_from(Feedback)) == 2 * first["feedback"]
        attempts = list(session.scalars(select(ModelUsageLog)))
    day1 = [a for a in attempts if a.started_at < START + timedelta(days=1) and a.source == "router"]
    day2 = [a for a in attempts if a.started_at >= START + timedelta(days=1) and a.source == "router"]
    assert pattern(day1, START) == pattern(day2, START + timedelta(days=1))
    outcomes = Counter(a.outcome for a in attempts)
    assert {k.removeprefix("outcome_"): v for k, v in first.items() if k.startswith("outcome_")} == {
        k: v // 2 for k, v in outcomes.items()
    }


def test_jobs_and_attempts_are_consistent(pg_db: Database) -> None:
    counts = seed_day(pg_db.engine, start=START, seed=0)
    assert 400 < counts["jobs"] < 900 and counts["direct_runs"] == 6 and counts["jobs_running"] == 1
    with pg_db.session() as session:
        jobs = {j.id: j for j in session.scalars(select(Job))}
        attempts = list(session.scalars(select(ModelUsageLog)))
    per_job: dict[str, list[ModelUsageLog]] = {}
    for a in attempts:
        if a.source == "direct":
            assert a.job_id is None and a.selection_reason is None and a.estimated_s is None
            continue
        per_job.setdefault(str(a.job_id), []).append(a)
    for job in jobs.values():
        mine = sorted(per_job.get(job.id, []), key=lambda a: a.attempt)
        if job.status == "selected":
            assert not mine and job.deadline_met is None
            continue
        if job.status == "running":
            assert [a.outcome for a in mine] == ["backend_error", "running"]
            assert mine[-1].finished_at is None and mine[-1].cost_usd is None and job.finished_at is None
            continue
        assert [a.attempt for a in mine] == list(range(1, len(mine) + 1))
        last = mine[-1]
        produced = last.outcome in ("ok", "degraded")
        assert job.status == (
            "succeeded" if produced else "cancelled" if last.outcome == "cancelled" else "failed"
        )
        assert (job.model_name, job.tier, job.backend) == (last.model_name, last.tier, last.backend)
        assert job.cost_usd == pytest.approx(sum(a.cost_usd or 0 for a in mine), abs=1e-5)
        assert job.finished_at == last.finished_at
        assert all(a.started_at >= job.created_at for a in mine)
        for a in mine:
            assert a.finished_at is not None and a.finished_at >= a.started_at
            assert (a.hosted_usd is not None) == (a.outcome in ("ok", "degraded"))
            assert (a.outcome == "degraded") == (a.degraded and a.outcome in ("ok", "degraded"))


def test_monitor_samples_every_30_s_with_one_outage_and_nulls_for_unknown(pg_db: Database) -> None:
    seed_day(pg_db.engine, start=START, seed=0)
    with pg_db.session() as session:
        rows = list(session.scalars(select(VramUsageLog)))
    per_source = Counter((r.source, r.backend) for r in rows)
    assert per_source == {
        ("nvml", "a100"): 2880,
        ("nvml", "rtx4090"): 2880,
        ("comfyui", "a100"): 2880,
        ("comfyui", "rtx4090"): 2880,
        ("host", None): 2880,
    }
    stamps = sorted({r.ts for r in rows})
    assert stamps[0] == START and len(stamps) == 2880
    assert {b - a for a, b in pairwise(stamps)} == {timedelta(seconds=30)}
    down = [r for r in rows if r.source == "comfyui" and r.up is False]
    assert {r.backend for r in down} == {"rtx4090"} and len(down) == 60
    assert min(r.ts for r in down) == START + timedelta(hours=14)
    assert all(r.vram_used_mb is None and r.queue_pending is None and r.error for r in down)
    nvml = [r for r in rows if r.source == "nvml"]
    assert all(0 < r.vram_used_mb < r.vram_total_mb for r in nvml)
    assert any(r.power_w is None for r in nvml) and all(r.power_w is None or r.power_w > 0 for r in nvml)
    assert max(r.gpu_util_pct for r in nvml) > 80


def test_start_must_be_timezone_aware(pg_db: Database) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        seed_day(pg_db.engine, start=datetime(2026, 11, 2))
