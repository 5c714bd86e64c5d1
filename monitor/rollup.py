"""Rolling 1-minute rollups: every complete minute of `vram_usage_log` becomes one row per series
(host, source, backend, GPU) in `vram_usage_minute`, so dashboards over long ranges read ~12x fewer
rows than the raw samples.

The watermark is the newest minute already in `vram_usage_minute`: a run aggregates the raw rows
from the minute after it (or from the oldest raw row when the table is empty) up to the start of
the current minute, in one INSERT ... SELECT ... GROUP BY. The current minute is never rolled up
(it is still being written; the dashboards read it raw), and a minute already there never again:
running twice adds nothing, and a restart just continues from the watermark. A unique index
(migration 0003) backs that up; on PostgreSQL an advisory lock serialises concurrent runs (the
rollup job and retention's catch-up in two scheduler threads, or two monitors).

Raw rows that arrive after their minute was rolled up (a writer's buffer flushed late, after a
database outage) are found by id: the job remembers the newest raw id it has seen, and rows above
it whose minute is already rolled up make those minutes be rolled up again (deleted and recomputed
from the raw rows, in the same transaction). Not re-rolled: the oldest raw minute (retention may
have deleted part of it, so a recomputation would lose samples) and late rows seen by no job
(`seen_id=None`: the first run after a start, and retention's catch-up). Ids are trusted to grow
in commit order, which holds for one writer per database (PostgreSQL assigns sequence values at
INSERT, so two writers committing out of order could hide a late row from one run).

SQLAlchemy Core, so the same statements run on PostgreSQL and SQLite; only the minute bucket
differs (date_trunc vs strftime).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Table, case, func, insert, literal_column, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.clock import Clock
from monitor.rows import error_text, usage_log_table
from router.db.models import VramUsageMinute

ROLLUP_JOB_ID = "rollup"
# pg_advisory_xact_lock key: "vrm1" as an integer. Held until the rolling-up transaction ends.
ADVISORY_LOCK_KEY = 0x76726D31
_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class RollupResult:
    since: datetime | None  # the first minute looked at (None: there were no raw rows to start from)
    until: datetime  # exclusive: the start of the current minute
    minutes_written: int
    seen_id: int | None = None  # the newest raw row id when this run looked (pass it to the next run)
    rerolled_from: datetime | None = None  # the first minute rolled up again for late rows, if any


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


# Target columns, in the order of the SELECT below.
TARGETS = (
    "ts", "host", "source", "backend", "gpu_uuid", "gpu_name", "gpu_index", "samples",
    "vram_total_mb", "vram_used_mb", "vram_used_max_mb", "vram_free_mb", "gpu_util_pct",
    "temperature_c", "power_w", "ram_used_mb", "ram_total_mb", "cpu_pct", "queue_pending",
    "queue_pending_max", "queue_running_max", "up_share",
)  # fmt: skip


def _utc(ts: datetime) -> datetime:
    # SQLite gives naive datetimes (stored in UTC); PostgreSQL gives aware ones.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _watermark(conn: Connection) -> datetime | None:
    """The first minute not rolled up yet: after the newest one there, else the oldest raw row's."""
    minute, log = minute_table(), usage_log_table()
    newest = conn.execute(select(func.max(minute.c.ts))).scalar_one_or_none()
    if newest is not None:
        return floor_to_minute(_utc(newest)) + _MINUTE
    oldest = conn.execute(select(func.min(log.c.ts))).scalar_one_or_none()
    return None if oldest is None else floor_to_minute(_utc(oldest))


def _late_rows_from(conn: Connection, seen_id: int, newest_id: int, watermark: datetime) -> datetime | None:
    """The first already rolled-up minute that raw rows with ids in (seen_id, newest_id] belong to,
    leaving out the oldest raw minute (retention may have deleted part of it)."""
    log = usage_log_table()
    oldest = conn.execute(select(func.min(log.c.ts))).scalar_one_or_none()
    if oldest is None:
        return None
    late = conn.execute(
        select(func.min(log.c.ts)).where(
            log.c.id > seen_id,
            log.c.id <= newest_id,
            log.c.ts >= floor_to_minute(_utc(oldest)) + _MINUTE,
            log.c.ts < watermark,
        )
    ).scalar_one_or_none()
    return None if late is None else floor_to_minute(_utc(late))


def roll_up_in(conn: Connection, *, now: datetime, seen_id: int | None = None) -> RollupResult:
    """Roll up every complete minute after the watermark, inside the caller's transaction; with
    `seen_id` (the previous run's), also roll up again the minutes that late raw rows fell into."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    log, minute = usage_log_table(), minute_table()
    until = floor_to_minute(now)
    newest_id = conn.execute(select(func.max(log.c.id))).scalar_one_or_none()
    since = _watermark(conn)
    rerolled_from = None
    if seen_id is not None and newest_id is not None and since is not None and newest_id > seen_id:
        rerolled_from = _late_rows_from(conn, seen_id, newest_id, min(since, until))
        if rerolled_from is not None and rerolled_from < since:
            # Minute rows sit on whole minutes; bounds a second early match them whichever text
            # layout SQLite holds them in ('...:00' from the bucket, '...:00.000000' from Python).
            conn.execute(
                minute.delete().where(minute.c.ts > rerolled_from - _SECOND, minute.c.ts < since - _SECOND)
            )
            since = rerolled_from
        else:
            rerolled_from = None
    if since is None or since >= until:
        return RollupResult(since, until, 0, newest_id)
    bucket = minute_bucket(log.c.ts, dialect)
    # NULL when up is NULL, so AVG skips it (and a minute without any up reading gets NULL).
    up_share = case((log.c.up.is_(True), 1.0), (log.c.up.is_(False), 0.0))
    grouped = (
        select(
            bucket,
            log.c.host,
            log.c.source,
            log.c.backend,
            log.c.gpu_uuid,
            func.max(log.c.gpu_name),
            func.max(log.c.gpu_index),
            func.count(),
            func.avg(log.c.vram_total_mb),
            func.avg(log.c.vram_used_mb),
            func.max(log.c.vram_used_mb),
            func.avg(log.c.vram_free_mb),
            func.avg(log.c.gpu_util_pct),
            func.avg(log.c.temperature_c),
            func.avg(log.c.power_w),
            func.avg(log.c.ram_used_mb),
            func.max(log.c.ram_total_mb),
            func.avg(log.c.cpu_pct),
            func.avg(log.c.queue_pending),
            func.max(log.c.queue_pending),
            func.max(log.c.queue_running),
            func.avg(up_share),
        )
        .where(log.c.ts >= since, log.c.ts < until)
        .group_by(bucket, log.c.host, log.c.source, log.c.backend, log.c.gpu_uuid)
    )
    # RETURNING to count: psycopg reports no rowcount (-1) for Core's INSERT ... SELECT.
    added = insert(minute).from_select([minute.c[n] for n in TARGETS], grouped).returning(minute.c.id)
    written = len(conn.execute(added).all())
    return RollupResult(since, until, written, newest_id, rerolled_from)


def roll_up(engine: Engine, *, now: datetime, seen_id: int | None = None) -> RollupResult:
    """Roll up every complete minute not rolled up yet (and, with `seen_id`, the minutes late raw
    rows fell into), in its own transaction."""
    with engine.begin() as conn:
        return roll_up_in(conn, now=now, seen_id=seen_id)


class RollupJob:
    """The every-minute scheduler job: never raises (a database outage waits for the next run,
    which then catches up on every minute missed)."""

    def __init__(self, engine: Engine, clock: Clock, *, logger: logging.Logger) -> None:
        self._engine = engine
        self._clock = clock
        self._logger = logger
        self._seen_id: int | None = None  # the newest raw id the last successful run saw

    def run(self) -> RollupResult | None:
        try:
            result = roll_up(self._engine, now=self._clock.now(), seen_id=self._seen_id)
        except SQLAlchemyError as exc:
            self._logger.warning("rollup: skipped this run: %s", error_text(exc))
            return None
        if result.seen_id is not None:
            self._seen_id = result.seen_id
        if result.rerolled_from is not None:
            self._logger.info("rollup: late samples: minutes from %s rolled up again", result.rerolled_from)
        if result.minutes_written:
            self._logger.debug(
                "rollup: %d minute rows from %s to %s",
                result.minutes_written,
                result.since.isoformat() if result.since else "-",
                result.until.isoformat(),
            )
        return result
