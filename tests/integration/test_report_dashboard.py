"""The report and the pilot-gates dashboard agree on seed_day's realistic day.

The dashboard's "Gate summary" panel is rendered as Grafana would (tests/support/grafana_sql.py,
every variable on All) and run on the same PostgreSQL database as `router.report.metrics.compute`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from router.db.database import Database
from router.report import metrics
from tests.support.grafana_sql import Dashboard, TimeRange, render, resolve_variables
from tests.support.seed_day import seed_day

pytestmark = pytest.mark.postgres

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "dashboards" / "pilot-gates.json"
START = datetime(2026, 11, 2, tzinfo=UTC)
END = START + timedelta(days=1)


def gate_summary(db: Database) -> dict[str, float | None]:
    dashboard = Dashboard.load(DASHBOARD)
    target = next(t for t in dashboard.targets() if t.panel_title == "Gate summary")
    time_range = TimeRange(START, END)
    with db.engine.connect() as conn:

        def run(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(text(sql))]

        variables = resolve_variables(dashboard, time_range, run)
        rows = run(
            render(target.sql, time_range=time_range, interval=timedelta(minutes=1), variables=variables)
        )
    return {str(r[0]): None if r[1] is None else float(r[1]) for r in rows}


def test_report_matches_the_dashboard_gates(pg_db: Database) -> None:
    seed_day(pg_db.engine, start=START, seed=0)
    with pg_db.session() as s:
        stats = metrics.compute(s, START, END)
    gates = gate_summary(pg_db)
    assert stats.requests > 400
    assert stats.error_rate is not None
    assert 100 * stats.error_rate == pytest.approx(gates["Error rate (%)"])
    assert stats.p95("FLUX") == pytest.approx(gates["FLUX p95 latency (s)"])
    assert stats.p95("Face swap") == pytest.approx(gates["Face swap p95 latency (s)"])
    assert stats.savings_usd == pytest.approx(gates["Savings vs hosted API (USD)"])
    uptimes = {k: v for k, v in gates.items() if k.startswith("Uptime ")}
    assert uptimes  # seed_day's second backend is down for 30 minutes
    assert {f"Uptime {b} (%)": 100 * u for b, u in stats.uptime_by_backend.items()} == pytest.approx(uptimes)
    assert stats.worst_uptime is not None
    assert stats.worst_uptime < 0.99
