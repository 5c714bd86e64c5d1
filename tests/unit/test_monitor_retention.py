"""Retention on SQLite. The data and readers here are reused by the PostgreSQL run in
tests/integration/test_monitor.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from monitor.retention import RetentionJob, aggregate_and_prune, minute_table
from monitor.rows import blank_row, usage_log_table
from router.db.database import Database

NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
OLD_MINUTE = datetime(2026, 11, 10, 8, 15, tzinfo=UTC)  # 13 days ago: past the 7-day window
ANCIENT = datetime(2026, 8, 1, 0, 0, tzinfo=UTC)  # past the 90-day aggregate window


def _row(ts: datetime, source: str, **fields: Any) -> dict[str, Any]:
    row = blank_row(ts, "box", source)
    row.update(fields)
    return row


def _gpu(
    seconds: int, used_mb: float, util_pct: float, temperature_c: float, power_w: float | None
) -> dict[str, Any]:
    return _row(
        OLD_MINUTE + timedelta(seconds=seconds),
        "nvml",
        gpu_uuid="GPU-a",
        gpu_name="A100",
        vram_total_mb=80.0,
        vram_used_mb=used_mb,
        gpu_util_pct=util_pct,
        temperature_c=temperature_c,
        power_w=power_w,
        up=True,
    )


def raw_rows() -> list[dict[str, Any]]:
    return [
        # one GPU, three samples in one old minute (and one NULL power reading: avg ignores it)
        _gpu(5, used_mb=10.0, util_pct=20.0, temperature_c=50.0, power_w=100.0),
        _gpu(10, used_mb=30.0, util_pct=40.0, temperature_c=52.0, power_w=None),
        _gpu(55, used_mb=20.0, util_pct=60.0, temperature_c=54.0, power_w=200.0),
        # a backend answering one sample out of two
        _row(OLD_MINUTE + timedelta(seconds=5), "comfyui", backend="a100", queue_pending=4, up=True),
        _row(OLD_MINUTE + timedelta(seconds=10), "comfyui", backend="a100", up=False, error="refused"),
        # the host, in the next minute
        _row(OLD_MINUTE + timedelta(minutes=1, seconds=1), "host", ram_used_mb=1000.0, cpu_pct=25.0),
        # recent: stays raw
        _row(NOW - timedelta(days=1), "host", ram_used_mb=2000.0, cpu_pct=50.0),
    ]


def ancient_minute() -> dict[str, Any]:
    return {"ts": ANCIENT, "host": "box", "source": "host", "samples": 12, "cpu_pct": 1.0}


def expected_minutes() -> list[dict[str, Any]]:
    """The minute rows (without id) the raw rows become, ordered by ts and source."""
    columns = [c.name for c in minute_table().columns if c.name != "id"]
    base: dict[str, Any] = {**dict.fromkeys(columns), "host": "box"}
    return [
        {
            **base,
            "ts": OLD_MINUTE,
            "source": "comfyui",
            "backend": "a100",
            "samples": 2,
            "queue_pending": 4.0,
            "up_share": 0.5,
        },
        {
            **base,
            "ts": OLD_MINUTE,
            "source": "nvml",
            "gpu_uuid": "GPU-a",
            "gpu_name": "A100",
            "samples": 3,
            "vram_total_mb": 80.0,
            "vram_used_mb": 20.0,
            "vram_used_max_mb": 30.0,
            "gpu_util_pct": 40.0,
            "temperature_c": 52.0,
            "power_w": 150.0,
            "up_share": 1.0,
        },
        {
            **base,
            "ts": OLD_MINUTE + timedelta(minutes=1),
            "source": "host",
            "samples": 1,
            "ram_used_mb": 1000.0,
            "cpu_pct": 25.0,
        },
    ]


def _utc(ts: datetime) -> datetime:
    # SQLite gives naive datetimes (stored in UTC); PostgreSQL gives aware ones.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def read_minutes(db: Database) -> list[dict[str, Any]]:
    table = minute_table()
    with db.engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.ts, table.c.source)).mappings().all()
    return [{**{k: v for k, v in r.items() if k != "id"}, "ts": _utc(r["ts"])} for r in rows]


def read_raw_ts(db: Database) -> list[datetime]:
    log = usage_log_table()
    with db.engine.connect() as conn:
        return [_utc(ts) for ts in conn.execute(select(log.c.ts).order_by(log.c.ts)).scalars()]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'r.db'}")
    database.migrate()
    yield database
    database.dispose()


def test_aggregates_old_rows_deletes_them_and_keeps_recent_ones(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), raw_rows())
        conn.execute(insert(minute_table()), [ancient_minute()])
    result = aggregate_and_prune(db.engine, now=NOW, retention_days=7, aggregate_days=90)
    assert result.raw_rows_deleted == 6
    assert result.aggregates_deleted == 1
    assert read_minutes(db) == expected_minutes()
    assert read_raw_ts(db) == [NOW - timedelta(days=1)]
    # A second run finds nothing new: nothing is counted twice.
    again = aggregate_and_prune(db.engine, now=NOW, retention_days=7, aggregate_days=90)
    assert (again.aggregates_written, again.raw_rows_deleted, again.aggregates_deleted) == (0, 0, 0)
    assert read_minutes(db) == expected_minutes()


def test_job_survives_a_missing_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated

    class Clock:
        def now(self) -> datetime:
            return NOW

        def monotonic(self) -> float:
            return 0.0

    job = RetentionJob(
        database.engine, Clock(), retention_days=7, aggregate_days=90, logger=logging.getLogger("t.r")
    )
    with caplog.at_level(logging.WARNING, logger="t.r"):
        assert job.run() is None
    assert "retention: skipped this run" in caplog.text
    database.dispose()


def test_minute_table_and_blank_rows_line_up() -> None:
    assert "up_share" in minute_table().c
    assert blank_row(NOW, "h", "host")["ts"] == NOW
    assert NOW.tzinfo is UTC
