"""Wiring: the scheduler jobs, one tick end to end on SQLite, database URL hardening."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pynvml
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from monitor.app import (
    RETENTION_JOB_ID,
    SAMPLE_JOB_ID,
    SCHEDULER_JOB_DEFAULTS,
    Runtime,
    build_runtime,
    schedule_jobs,
    with_connect_timeout,
)
from monitor.cli import MonitorConfig
from monitor.rows import usage_log_table
from tests.support.nvml_fixtures import FakeGpu, NvmlScenario, install
from tests.unit.test_monitor_host import FakePsutil

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        self.t += 0.004
        return self.t


def runtime(tmp_path: Path, registry: CollectorRegistry) -> Runtime:
    config = MonitorConfig(
        database_url=f"sqlite:///{tmp_path / 'm.db'}", targets=(), host="box", interval_s=5
    )
    return build_runtime(
        config,
        nvml=pynvml,
        psutil=FakePsutil(),
        session_factory=lambda: pytest.fail("no backends, no HTTP"),
        clock=StepClock(),
        registry=registry,
        logger=logging.getLogger("t.app"),
    )


def test_one_tick_writes_gpu_and_host_rows_and_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, NvmlScenario(gpus=[FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b")]))
    registry = CollectorRegistry()
    rt = runtime(tmp_path, registry)
    try:
        assert rt.monitor.tick()
        log = usage_log_table()
        with rt.database.engine.connect() as conn:
            rows = conn.execute(select(log.c.source, log.c.gpu_uuid).order_by(log.c.id)).all()
    finally:
        rt.close()
    assert [tuple(r) for r in rows] == [("nvml", "GPU-a"), ("nvml", "GPU-b"), ("host", None)]
    assert registry.get_sample_value("comfy_router_monitor_rows_written_total") == 3.0
    assert registry.get_sample_value("comfy_router_monitor_sample_duration_seconds_sum") == pytest.approx(
        0.004
    )


def test_jobs_and_their_defaults(tmp_path: Path) -> None:
    rt = runtime(tmp_path, CollectorRegistry())
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults=SCHEDULER_JOB_DEFAULTS)
    try:
        schedule_jobs(scheduler, rt, now=NOW)
        sample, retention = scheduler.get_job(SAMPLE_JOB_ID), scheduler.get_job(RETENTION_JOB_ID)
        assert isinstance(sample.trigger, IntervalTrigger)
        assert sample.trigger.interval == timedelta(seconds=5)
        assert sample.next_run_time == NOW
        assert retention.trigger.interval == timedelta(days=1)
        assert retention.next_run_time == NOW + timedelta(minutes=1)
        assert SCHEDULER_JOB_DEFAULTS == {"coalesce": True, "max_instances": 1, "misfire_grace_time": 5}
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("postgresql://u@h/db", "postgresql+psycopg://u@h/db?connect_timeout=5", id="added"),
        pytest.param(
            "postgresql+psycopg://u@h/db?connect_timeout=1",
            "postgresql+psycopg://u@h/db?connect_timeout=1",
            id="kept",
        ),
        pytest.param("sqlite:///x.db", None, id="sqlite-untouched"),
        pytest.param(
            "postgresql://u:p%40ss@h/db",
            "postgresql+psycopg://u:p%40ss@h/db?connect_timeout=5",
            id="password-kept",
        ),
    ],
)
def test_with_connect_timeout(url: str, expected: str | None) -> None:
    assert with_connect_timeout(url) == (expected or url)  # None: left as it was
