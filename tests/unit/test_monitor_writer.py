"""BufferedWriter on SQLite: batched writes, NULL JSON, outages buffered oldest first, bounded."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, select, text

from monitor.metrics import MonitorMetrics
from monitor.rows import blank_row, usage_log_table
from monitor.sampler import Sample
from monitor.writer import BufferedWriter
from router.db.database import Database

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


class DatabaseFault:
    """Makes INSERTs fail with a chosen sqlite3 error while `error` is set."""

    def __init__(self, db: Database) -> None:
        self.error: Exception | None = None
        event.listen(db.engine, "before_cursor_execute", self._before)

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self.error is not None and statement.lstrip().upper().startswith("INSERT"):
            raise self.error


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'monitor.db'}")
    database.migrate()
    yield database
    database.dispose()


def sample(i: int, rows: int = 2) -> Sample:
    ts = T0 + timedelta(seconds=5 * i)
    made = []
    for n in range(rows):
        row = blank_row(ts, "h", "nvml")
        row.update(gpu_index=n, cpu_pct=float(i))
        made.append(row)
    return Sample(ts=ts, rows=made, duration_s=0.01)


def writer(db: Database, registry: CollectorRegistry, max_buffered: int = 10) -> BufferedWriter:
    return BufferedWriter(
        db.engine,
        max_buffered_samples=max_buffered,
        metrics=MonitorMetrics(registry),
        logger=logging.getLogger("t.w"),
    )


def written_samples(db: Database) -> list[float]:
    """cpu_pct of the rows in insertion order: which samples got in, in which order."""
    log = usage_log_table()
    with db.engine.connect() as conn:
        return [
            r[0] for r in conn.execute(select(log.c.cpu_pct).where(log.c.gpu_index == 0).order_by(log.c.id))
        ]


def test_rows_are_written_and_missing_json_is_sql_null(db: Database) -> None:
    registry = CollectorRegistry()
    w = writer(db, registry)
    first = sample(0)
    first.rows[1]["processes"] = [{"pid": 1, "used_mb": None}]
    assert w.submit(first)
    with db.engine.connect() as conn:
        nulls = conn.execute(text("SELECT processes IS NULL FROM vram_usage_log ORDER BY id")).scalars().all()
    assert nulls == [1, 0]  # SQL NULL, not the JSON document `null`
    assert registry.get_sample_value("comfy_router_monitor_rows_written_total") == 2.0


def test_outage_buffers_then_writes_oldest_first(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    fault = DatabaseFault(db)
    w = writer(db, registry)
    assert w.submit(sample(0))
    fault.error = sqlite3.OperationalError("unable to open database file")
    with caplog.at_level(logging.INFO, logger="t.w"):
        assert [w.submit(sample(i)) for i in (1, 2, 3)] == [False, False, False]
        assert w.buffered == 3
        assert registry.get_sample_value("comfy_router_monitor_buffered_samples") == 3.0
        fault.error = None
        assert w.submit(sample(4))
    assert written_samples(db) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert w.buffered == 0
    assert registry.get_sample_value("comfy_router_monitor_write_failures_total") == 3.0
    assert registry.get_sample_value("comfy_router_monitor_dropped_samples_total") == 0.0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # one line when it starts, one when it ends
    assert messages[0].startswith("database: unreachable, buffering samples")
    assert messages[1].startswith("database: writing again")


def test_a_full_buffer_drops_the_oldest_and_counts_it(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    fault = DatabaseFault(db)
    w = writer(db, registry, max_buffered=3)
    fault.error = sqlite3.OperationalError("disk I/O error")
    with caplog.at_level(logging.WARNING, logger="t.w"):
        for i in range(6):
            w.submit(sample(i))
    assert w.buffered == 3
    assert w.dropped == 3
    assert registry.get_sample_value("comfy_router_monitor_dropped_samples_total") == 3.0
    assert sum("full: dropping the oldest" in r.getMessage() for r in caplog.records) == 1
    fault.error = None
    assert w.flush()
    assert written_samples(db) == [3.0, 4.0, 5.0]


def test_a_sample_the_database_rejects_is_dropped_not_retried_forever(db: Database) -> None:
    registry = CollectorRegistry()
    fault = DatabaseFault(db)
    w = writer(db, registry)
    fault.error = sqlite3.IntegrityError("NOT NULL constraint failed: vram_usage_log.host")
    assert w.submit(sample(0))  # nothing left waiting: the bad sample is gone, counted
    fault.error = None
    assert w.submit(sample(1))
    assert written_samples(db) == [1.0]
    assert registry.get_sample_value("comfy_router_monitor_dropped_samples_total") == 1.0


def test_schema_is_prepared_once_and_retried_through_an_outage(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    calls: list[int] = []

    def migrate() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked") from None

    def ensure_schema() -> None:
        try:
            migrate()
        except sqlite3.OperationalError as exc:
            from sqlalchemy.exc import OperationalError

            raise OperationalError("migrate", {}, exc) from exc
        database.migrate()

    w = BufferedWriter(
        database.engine,
        max_buffered_samples=5,
        metrics=MonitorMetrics(CollectorRegistry()),
        logger=logging.getLogger("t.w"),
        ensure_schema=ensure_schema,
    )
    assert not w.submit(sample(0))
    assert w.submit(sample(1))
    assert w.submit(sample(2))
    assert len(calls) == 2
    assert written_samples(database) == [0.0, 1.0, 2.0]
    database.dispose()
