"""The rolling 1-minute rollup and retention on SQLite. The data, checks and readers here are
reused by the PostgreSQL runs in tests/integration/test_monitor.py and test_monitor_rollup.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from monitor.retention import RetentionJob, aggregate_and_prune, minute_table
from monitor.rollup import RollupJob, roll_up
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
            "queue_pending_max": 4.0,
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
        # the recent row's minute: rolled up too (it is complete), while the row itself stays raw
        {
            **base,
            "ts": NOW.replace(second=0) - timedelta(days=1),
            "source": "host",
            "samples": 1,
            "ram_used_mb": 2000.0,
            "cpu_pct": 50.0,
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
    assert result.aggregates_written == 4  # nothing rolled up before: retention catches up first
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


def test_retention_after_the_rollup_only_deletes(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), raw_rows())
        conn.execute(insert(minute_table()), [ancient_minute()])
    assert roll_up(db.engine, now=NOW).minutes_written == 4
    result = aggregate_and_prune(db.engine, now=NOW, retention_days=7, aggregate_days=90)
    assert (result.aggregates_written, result.raw_rows_deleted, result.aggregates_deleted) == (0, 6, 1)
    assert read_minutes(db) == expected_minutes()
    assert read_raw_ts(db) == [NOW - timedelta(days=1)]


# ------------------------------------------------------------------------------------- the rollup

LIVE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a minute whose samples are still coming in


def live_rows() -> list[dict[str, Any]]:
    """Two complete minutes and the current one (NOW is 12:00:30)."""
    return [
        # 11:58: every reading of the GPU NULL but the memory (nvml answered only in part)
        _row(LIVE - timedelta(minutes=2, seconds=-5), "nvml", gpu_uuid="GPU-a", vram_used_mb=10.0),
        _row(LIVE - timedelta(minutes=2, seconds=-35), "nvml", gpu_uuid="GPU-a", vram_used_mb=30.0),
        # 11:59: one power reading of two (AVG ignores the NULL), up unknown on both
        _row(LIVE - timedelta(seconds=55), "nvml", gpu_uuid="GPU-a", vram_used_mb=50.0, power_w=100.0),
        _row(LIVE - timedelta(seconds=5), "nvml", gpu_uuid="GPU-a", vram_used_mb=70.0),
        # 12:00, the current minute: never rolled up
        _row(LIVE + timedelta(seconds=5), "nvml", gpu_uuid="GPU-a", vram_used_mb=90.0, power_w=300.0),
    ]


def rolled(db: Database) -> list[tuple[datetime, int, float | None, float | None, float | None]]:
    return [(m["ts"], m["samples"], m["vram_used_mb"], m["power_w"], m["up_share"]) for m in read_minutes(db)]


EXPECTED_ROLLED = [
    (LIVE - timedelta(minutes=2), 2, 20.0, None, None),
    (LIVE - timedelta(minutes=1), 2, 60.0, 100.0, None),
]


def check_rollup(db: Database) -> None:
    """Shared with the PostgreSQL run: complete minutes once, the current one never, NULLs stay NULL."""
    with db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), live_rows())
    first = roll_up(db.engine, now=NOW)
    assert (first.since, first.until, first.minutes_written) == (LIVE - timedelta(minutes=2), LIVE, 2)
    assert rolled(db) == EXPECTED_ROLLED
    # Running again in the same minute (a restart, two jobs) adds nothing.
    assert roll_up(db.engine, now=NOW + timedelta(seconds=20)).minutes_written == 0
    assert rolled(db) == EXPECTED_ROLLED
    # The next minute: 12:00 is complete now, and only it is added.
    later = roll_up(db.engine, now=NOW + timedelta(minutes=1))
    assert (later.since, later.minutes_written) == (LIVE, 1)
    assert rolled(db) == [*EXPECTED_ROLLED, (LIVE, 1, 90.0, 300.0, None)]
    # Raw rows are never touched by the rollup.
    assert len(read_raw_ts(db)) == len(live_rows())


def test_rollup_aggregates_complete_minutes_once_and_never_the_current_one(db: Database) -> None:
    check_rollup(db)


def check_late_rows(db: Database) -> None:
    """Shared with the PostgreSQL run: a sample flushed after its minute was rolled up is not lost."""
    with db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), live_rows())
    first = roll_up(db.engine, now=NOW)
    assert first.minutes_written == 2 and first.seen_id is not None
    late = _row(LIVE - timedelta(seconds=30), "nvml", gpu_uuid="GPU-a", vram_used_mb=150.0, power_w=400.0)
    with db.engine.begin() as conn:  # 11:59 again, written a minute late (a buffer flushed after an outage)
        conn.execute(insert(usage_log_table()), [late])
    # Without the previous run's id the late row stays raw only (the first run after a start).
    assert roll_up(db.engine, now=NOW, seen_id=None).minutes_written == 0
    again = roll_up(db.engine, now=NOW + timedelta(seconds=20), seen_id=first.seen_id)
    assert again.rerolled_from == LIVE - timedelta(minutes=1)
    assert again.minutes_written == 1
    # 11:59 is recomputed from its three raw rows: (50 + 70 + 150) / 3 and the power readings' mean.
    assert rolled(db) == [EXPECTED_ROLLED[0], (LIVE - timedelta(minutes=1), 3, 90.0, 250.0, None)]
    # Nothing new since: the next run re-rolls nothing.
    quiet = roll_up(db.engine, now=NOW + timedelta(seconds=25), seen_id=again.seen_id)
    assert (quiet.rerolled_from, quiet.minutes_written) == (None, 0)


def test_a_late_sample_makes_its_minute_be_rolled_up_again(db: Database) -> None:
    check_late_rows(db)


def test_the_oldest_raw_minute_is_never_recomputed(db: Database) -> None:
    """Retention may have deleted part of it: its aggregate stays as it was."""
    with db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), live_rows())
    first = roll_up(db.engine, now=NOW)
    late = _row(LIVE - timedelta(minutes=2, seconds=-50), "nvml", gpu_uuid="GPU-a", vram_used_mb=999.0)
    with db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), [late])
    again = roll_up(db.engine, now=NOW + timedelta(seconds=10), seen_id=first.seen_id)
    assert again.minutes_written == 0
    assert rolled(db) == EXPECTED_ROLLED


def test_the_rollup_job_remembers_what_it_saw(db: Database) -> None:
    class Clock:
        def now(self) -> datetime:
            return NOW

        def monotonic(self) -> float:
            return 0.0

    with db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), live_rows())
    job = RollupJob(db.engine, Clock(), logger=logging.getLogger("t.rollup"))
    assert job.run() is not None
    with db.engine.begin() as conn:
        conn.execute(
            insert(usage_log_table()), [_row(LIVE - timedelta(seconds=20), "nvml", gpu_uuid="GPU-a")]
        )
    result = job.run()
    assert result is not None and result.rerolled_from == LIVE - timedelta(minutes=1)
    assert [m[1] for m in rolled(db)] == [2, 3]


def test_rollup_of_an_empty_log_writes_nothing(db: Database) -> None:
    result = roll_up(db.engine, now=NOW)
    assert (result.since, result.minutes_written) == (None, 0)


def test_rollup_continues_from_the_newest_minute_there(db: Database) -> None:
    """The watermark is the newest minute in the table: rows before it are not rolled up again."""
    with db.engine.begin() as conn:
        conn.execute(insert(minute_table()), [{**ancient_minute(), "ts": LIVE - timedelta(minutes=2)}])
        conn.execute(insert(usage_log_table()), live_rows())
    result = roll_up(db.engine, now=NOW)
    assert (result.since, result.minutes_written) == (LIVE - timedelta(minutes=1), 1)
    assert [m["ts"] for m in read_minutes(db)] == [LIVE - timedelta(minutes=2), LIVE - timedelta(minutes=1)]


def test_a_minute_cannot_be_written_twice(db: Database) -> None:
    """The unique index (NULL backend and GPU included) backs the watermark up."""
    from sqlalchemy.exc import IntegrityError

    with db.engine.begin() as conn:
        conn.execute(insert(minute_table()), [ancient_minute()])
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(insert(minute_table()), [ancient_minute()])


def test_rollup_job_survives_a_missing_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated

    class Clock:
        def now(self) -> datetime:
            return NOW

        def monotonic(self) -> float:
            return 0.0

    job = RollupJob(database.engine, Clock(), logger=logging.getLogger("t.rollup"))
    with caplog.at_level(logging.WARNING, logger="t.rollup"):
        assert job.run() is None
    assert "rollup: skipped this run" in caplog.text
    database.dispose()
