"""Keeps `vram_usage_log` bounded: raw rows older than the retention window are deleted, and
1-minute aggregates in `vram_usage_minute` older than their own window too.

The aggregates themselves are written every minute by the rollup (monitor/rollup.py). Retention
first runs the same rollup as a catch-up (nothing to do when the rollup job kept up; for
`--prune` from cron, or after the rollup job could not reach the database), then deletes, all in
one transaction: a raw row is never deleted before its minute has been rolled up, and a crash
leaves both or neither.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.clock import Clock
from monitor.rollup import floor_to_minute, minute_bucket, minute_table, roll_up_in
from monitor.rows import error_text, usage_log_table

__all__ = [
    "RetentionJob",
    "RetentionResult",
    "aggregate_and_prune",
    "floor_to_minute",
    "minute_bucket",
    "minute_table",
]


@dataclass(frozen=True)
class RetentionResult:
    raw_cutoff: datetime
    aggregate_cutoff: datetime
    aggregates_written: int  # by the catch-up rollup: 0 when the rollup job kept up
    raw_rows_deleted: int
    aggregates_deleted: int


def aggregate_and_prune(
    engine: Engine, *, now: datetime, retention_days: float, aggregate_days: float
) -> RetentionResult:
    # Cutoffs on a minute boundary so no minute is split between its aggregate and kept raw rows.
    raw_cutoff = floor_to_minute(now - timedelta(days=retention_days))
    aggregate_cutoff = floor_to_minute(now - timedelta(days=aggregate_days))
    log, minute = usage_log_table(), minute_table()
    with engine.begin() as conn:
        # Every complete minute up to now is rolled up, so every raw row before raw_cutoff (a
        # minute boundary at least a minute before now) has its aggregate.
        caught_up = roll_up_in(conn, now=now)
        raw_deleted = conn.execute(delete(log).where(log.c.ts < raw_cutoff)).rowcount
        aggregates_deleted = conn.execute(delete(minute).where(minute.c.ts < aggregate_cutoff)).rowcount
    return RetentionResult(
        raw_cutoff, aggregate_cutoff, caught_up.minutes_written, raw_deleted, aggregates_deleted
    )


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
            "retention: %d raw rows before %s deleted (catch-up rollup: %d minute rows);"
            " %d minute rows before %s deleted (%.2f s)",
            result.raw_rows_deleted,
            result.raw_cutoff.isoformat(),
            result.aggregates_written,
            result.aggregates_deleted,
            result.aggregate_cutoff.isoformat(),
            self._clock.monotonic() - started_s,
        )
        return result
