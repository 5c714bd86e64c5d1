"""The rolling 1-minute rollup on PostgreSQL (the data and the SQLite run: test_monitor_retention.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from monitor.retention import minute_table
from router.db.database import Database
from tests.unit.test_monitor_retention import ancient_minute, check_late_rows, check_rollup

pytestmark = pytest.mark.postgres


def test_rollup_aggregates_complete_minutes_once_and_never_the_current_one(pg_db: Database) -> None:
    check_rollup(pg_db)


def test_a_late_sample_makes_its_minute_be_rolled_up_again(pg_db: Database) -> None:
    check_late_rows(pg_db)


def test_a_minute_cannot_be_written_twice(pg_db: Database) -> None:
    with pg_db.engine.begin() as conn:
        conn.execute(insert(minute_table()), [ancient_minute()])
    with pytest.raises(IntegrityError), pg_db.engine.begin() as conn:
        conn.execute(insert(minute_table()), [ancient_minute()])
