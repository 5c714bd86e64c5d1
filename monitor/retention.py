"""Keeps `vram_usage_log` bounded: raw rows older than the retention window become 1-minute
aggregates in `vram_usage_minute`, and aggregates older than their own window are deleted.

SQLAlchemy Core, so the same statements run on PostgreSQL and SQLite; only the minute bucket
differs (date_trunc vs strftime). Aggregate, delete and prune happen in one transaction: a crash
never leaves raw rows both aggregated and kept (counted twice) or deleted without an aggregate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Table, case, delete, func, insert, literal_column, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.clock import Clock
from monitor.rows import error_text, usage_log_table
from router.db.models import VramUsageMinute


@dataclass(frozen=True)
class RetentionResult:
    raw_cutoff: datetime
    aggregate_cutoff: datetime
    aggregates_written: int
    raw_rows_deleted: int
    aggregates_deleted: int


def minute_table() -> Table:
    table = VramUsageMinute.__table__
    assert isinstance(table, Table)
    return table


def minute_bucket(ts: ColumnElement[datetime], dialect: str) -> ColumnElement[datetime]:
    """`ts` truncated to its minute, as an expression of the database at hand.

    The format and unit are SQL literals, not bound parameters: the same expression appears in
    SELECT and GROUP BY, and PostgreSQL only matches the two when they are textually identical.
    """
    if dialect == "sqlite":
        # The same text layout SQLAlchemy stores SQLite datetimes in, so comparisons stay lexical.
        return func.strftime(literal_column("'%Y-%m-%d %H:%M:00'"), ts)
    if dialect == "postgresql":
        # date_trunc of a timestamptz works in the session's time zone; zones in use today are
        # whole minutes off UTC, so the minute is the same one.
        return func.date_trunc(literal_column("'minute'"), ts)
    raise NotImplementedError(f"no minute bucket for the {dialect} dialect")


def floor_to_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def aggregate_and_prune(
    engine: Engine, *, now: datetime, retention_days: float, aggregate_days: float
) -> RetentionResult:
    # Cutoffs on a minute boundary so no minute is split between two runs' aggregates.
    raw_cutoff = floor_to_minute(now - timedelta(days=retention_days))
    aggregate_cutoff = floor_to_minute(now - timedelta(days=aggregate_days))
    log, minute = usage_log_table(), minute_table()
    bucket = minute_bucket(log.c.ts, engine.dialect.name)
    up_share = case((log.c.up.is_(True), 1.0), (log.c.up.is_(False), 0.0))
    grouped = (
        select(
            bucket,
            log.c.host,
            log.c.source,
            log.c.backend,
            log.c.gpu_uuid,
            func.max(log.c.gpu_name),
            func.count(),
            func.avg(log.c.vram_total_mb),
            func.avg(log.c.vram_used_mb),
            func.max(log.c.vram_used_mb),
            func.avg(log.c.gpu_util_pct),
            func.avg(log.c.temperature_c),
            func.avg(log.c.power_w),
            func.avg(log.c.ram_used_mb),
            func.avg(log.c.cpu_pct),
            func.avg(log.c.queue_pending),
            func.avg(up_share),
        )
        .where(log.c.ts < raw_cutoff)
        .group_by(bucket, log.c.host, log.c.source, log.c.backend, log.c.gpu_uuid)
    )
    targets = [
        "ts", "host", "source", "backend", "gpu_uuid", "gpu_name", "samples",
        "vram_total_mb", "vram_used_mb", "vram_used_max_mb", "gpu_util_pct", "temperature_c",
        "power_w", "ram_used_mb", "cpu_pct", "queue_pending", "up_share",
    ]  # fmt: skip
    with engine.begin() as conn:
        # RETURNING to count: psycopg reports no rowcount (-1) for Core's INSERT ... SELECT.
        added = insert(minute).from_select([minute.c[n] for n in targets], grouped).returning(minute.c.id)
        written = len(conn.execute(added).all())
        raw_deleted = conn.execute(delete(log).where(log.c.ts < raw_cutoff)).rowcount
        aggregates_deleted = conn.execute(delete(minute).where(minute.c.ts < aggregate_cutoff)).rowcount
    return RetentionResult(raw_cutoff, aggregate_cutoff, written, raw_deleted, aggregates_deleted)


class RetentionJob:
    """The daily scheduler job: never raises (a database outage just waits for tomorrow's run)."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        retention_days: float,
        aggregate_days: float,
        logger: logging.Logger,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._retention_days = retention_days
        self._aggregate_days = aggregate_days
        self._logger = logger

    def run(self) -> RetentionResult | None:
        started_s = self._clock.monotonic()
        try:
            result = aggregate_and_prune(
                self._engine,
                now=self._clock.now(),
                retention_days=self._retention_days,
                aggregate_days=self._aggregate_days,
            )
        except SQLAlchemyError as exc:
            self._logger.warning("retention: skipped this run: %s", error_text(exc))
            return None
        self._logger.info(
            "retention: %d raw rows before %s -> %d minute rows; %d minute rows before %s deleted (%.2f s)",
            result.raw_rows_deleted,
            result.raw_cutoff.isoformat(),
            result.aggregates_written,
            result.aggregates_deleted,
            result.aggregate_cutoff.isoformat(),
            self._clock.monotonic() - started_s,
        )
        return result
