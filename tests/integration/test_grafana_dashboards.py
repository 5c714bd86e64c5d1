"""The Grafana dashboards: JSON structure, provisioning files, and every panel's SQL run on PostgreSQL.

The SQL goes through tests/support/grafana_sql.py (Grafana's variable formatting and PostgreSQL
macros), then runs as the read-only role of grafana/README.md on a database seeded with one day of
data (tests/support/seed_day.py). Key numbers are compared with a computation in Python.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from sqlalchemy import select

from monitor.rollup import roll_up
from router.db.database import Database
from router.db.models import Job, ModelUsageLog, VramUsageLog
from tests.support.grafana_sql import (
    ALL,
    DATASOURCE_TYPE,
    Dashboard,
    Selection,
    Target,
    TimeRange,
    Variable,
    panel_interval,
    render,
    resolve_variables,
    variable_sql,
)
from tests.support.postgres import PostgresServer
from tests.support.seed_day import seed_day

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD_FILES = {
    "gpu-vram.json": "GPU and VRAM",
    "routing.json": "Routing",
    "pilot-gates.json": "Pilot gates (GO/NO-GO)",
}
DATASOURCE_UID = "comfy-router-pg"
VARIABLES = ("backend", "model", "purpose")
START = datetime(2026, 11, 2, tzinfo=UTC)
DAY = TimeRange(START, START + timedelta(days=1))
QUERY_BUDGET_S = 2.0
# Rolled up to 20:00: the outage (14:00-14:30) is read from the minute rollups, the evening raw.
ROLLED_UP_UNTIL = START + timedelta(hours=20)

pytestmark = pytest.mark.postgres


def load_dashboards() -> list[Dashboard]:
    return [Dashboard.load(GRAFANA / "dashboards" / name) for name in DASHBOARD_FILES]


DASHBOARDS = load_dashboards()
TARGETS = [t for d in DASHBOARDS for t in d.targets()]
PANELS = [(d, p) for d in DASHBOARDS for p in d.panels()]


def by_title(dashboard_uid: str, title: str) -> Target:
    found = [t for t in TARGETS if t.dashboard == dashboard_uid and t.panel_title == title]
    assert len(found) == 1, f"{dashboard_uid}: {len(found)} panels titled {title!r}"
    return found[0]


# ------------------------------------------------------------------------------- JSON structure


def test_the_three_dashboards_exist_with_their_titles() -> None:
    assert sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json")) == sorted(DASHBOARD_FILES)
    for dashboard, title in zip(DASHBOARDS, DASHBOARD_FILES.values(), strict=True):
        model = dashboard.model
        assert model["title"] == title
        assert model["uid"].startswith("comfy-router-")
        assert model.get("id") is None  # provisioned dashboards must not carry a database id
        assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
        assert model["time"] == {"from": "now-24h", "to": "now"}
    assert len({d.uid for d in DASHBOARDS}) == len(DASHBOARDS)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_panel_ids_are_unique_and_every_panel_has_a_grid_position_without_overlap(
    dashboard: Dashboard,
) -> None:
    panels = list(dashboard.panels())
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {dashboard.uid}: {ids}"
    boxes = []
    for panel in panels:
        grid = panel.get("gridPos")
        assert grid is not None, f"panel {panel['id']} has no gridPos"
        assert set(grid) >= {"x", "y", "w", "h"}
        x, y, w, h = (grid[k] for k in ("x", "y", "w", "h"))
        assert all(isinstance(v, int) for v in (x, y, w, h))
        assert x >= 0 and x + w <= 24 and y >= 0 and w > 0 and h > 0, f"panel {panel['id']}: {grid}"
        boxes.append((panel["id"], x, y, w, h))
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1 :]:
            overlap = ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
            assert not overlap, f"panels {a} and {b} overlap in {dashboard.uid}"


@pytest.mark.parametrize(("dashboard", "panel"), PANELS, ids=[f"{d.uid}#{p['id']}" for d, p in PANELS])
def test_every_panel_points_at_the_datasource_and_has_code_mode_sql_and_a_unit(
    dashboard: Dashboard, panel: dict[str, Any]
) -> None:
    assert panel["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
    assert panel.get("title")
    assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
    targets = panel.get("targets", [])
    assert targets, f"{panel['title']}: no query"
    assert len({t["refId"] for t in targets}) == len(targets)
    for target in targets:
        assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE_UID
        assert target["rawQuery"] is True and target["editorMode"] == "code"
        assert target["format"] in ("time_series", "table")
        sql = target["rawSql"]
        assert "$__timeFilter(" in sql, f"{panel['title']}: no time filter"
        if panel["type"] in ("timeseries", "state-timeline"):
            assert target["format"] == "time_series", panel["title"]
            assert re.search(r"\$__timeGroupAlias\(|\$__time\(", sql), panel["title"]
            assert re.search(r"ORDER BY (1|\"time\")", sql), f"{panel['title']}: not ordered by time"
        else:
            assert target["format"] == "table", panel["title"]


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_every_dashboard_has_the_backend_model_and_purpose_variables(dashboard: Dashboard) -> None:
    assert tuple(dashboard.variables) == VARIABLES
    for variable in dashboard.variables.values():
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
        assert variable["includeAll"] is True and variable["multi"] is True
        assert variable["allValue"] == "'__all'"
        assert variable["current"]["value"] == [ALL]
        assert variable["refresh"] == 2  # refreshed when the time range changes
        assert "$__timeFilter(" in variable_sql(variable)


FILTER = re.compile(r"\('__all' IN \(\$(backend|model|purpose)\) OR [a-z_.]+ IN \(\$\1\)\)")


def test_variables_are_only_used_in_the_all_sentinel_filter_pattern() -> None:
    used: set[str] = set()
    for target in TARGETS:
        used.update(m.group(1) for m in FILTER.finditer(target.sql))
        rest = FILTER.sub("", target.sql)
        stray = re.findall(r"\$\{?(?:backend|model|purpose)\b", rest)
        assert not stray, f"{target.key}: {stray} outside the ('__all' IN (...) OR col IN (...)) pattern"
    assert used == set(VARIABLES)


# --------------------------------------------------------------------------------- provisioning


def grafana_env_expand(text: str, env: dict[str, str]) -> str:
    """Grafana's provisioning lookup: $VAR and ${VAR} become the variable's value ('' if unset)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def test_dashboard_provider_is_a_file_provider_at_the_path_the_readme_mounts() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "comfy-router.yaml").read_text())
    assert doc["apiVersion"] == 1
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["name"] and provider["folder"]
    path = provider["options"]["path"]
    assert path.startswith("/")
    assert f"grafana/dashboards:{path}" in (GRAFANA / "README.md").read_text()


# ------------------------------------------------------------------------------- the seeded day


@dataclass
class Seeded:
    server: PostgresServer
    dbname: str
    role: str
    counts: dict[str, int]
    attempts: list[ModelUsageLog]
    jobs: list[Job]
    comfyui_rows: list[VramUsageLog]
    conn: psycopg.Connection[Any]
    timings: dict[str, float] = field(default_factory=dict)
    seed_s: float = 0.0

    def run(self, sql: str, key: str = "") -> tuple[list[str], list[tuple[Any, ...]]]:
        began = time.perf_counter()
        with self.conn.cursor() as cur:
            cur.execute(sql.encode())  # bytes: psycopg does not look for placeholders, like Grafana
            rows = cur.fetchall()
            names = [d.name for d in cur.description or []]
        if key:
            self.timings[key] = max(self.timings.get(key, 0.0), time.perf_counter() - began)
        return names, rows


def readme_reader_sql() -> str:
    text = (GRAFANA / "README.md").read_text()
    match = re.search(r"```sql\n(.*?CREATE ROLE grafana_reader.*?)```", text, re.S)
    assert match, "README.md lost its read-only role SQL"
    return re.sub(r"^ {3}", "", match.group(1), flags=re.M)


@pytest.fixture(scope="module")
def seeded(pg_server: PostgresServer | None) -> Iterator[Seeded]:
    """One migrated database with a seeded day, shared by this module's tests (read-only)."""
    if pg_server is None:
        pytest.skip("needs the managed PostgreSQL server (TEST_DATABASE_URL is set)")
    dbname = f"grafana_{uuid.uuid4().hex[:10]}"
    role = f"grafana_reader_{uuid.uuid4().hex[:8]}"
    db = Database(pg_server.create_database(dbname))
    db.migrate()
    began = time.perf_counter()
    counts = seed_day(db.engine, start=START, seed=7)
    # The monitor's rollup as of ROLLED_UP_UNTIL: the panels read those minutes from
    # vram_usage_minute and the rest of the day raw, as they would late that evening.
    roll_up(db.engine, now=ROLLED_UP_UNTIL)
    seed_s = time.perf_counter() - began
    with db.session() as session:
        attempts = list(session.scalars(select(ModelUsageLog)))
        jobs = list(session.scalars(select(Job)))
        comfyui = list(session.scalars(select(VramUsageLog).where(VramUsageLog.source == "comfyui")))
    db.dispose()
    admin = f"host=127.0.0.1 port={pg_server.port} user=postgres dbname={dbname}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(
            readme_reader_sql().replace("grafana_reader", role).replace("comfy_router", dbname).encode()
        )
    reader = psycopg.connect(
        f"host=127.0.0.1 port={pg_server.port} user={role} dbname={dbname}",
        autocommit=True,
        options="-c TimeZone=America/Sao_Paulo -c statement_timeout=5000",
    )
    try:
        yield Seeded(pg_server, dbname, role, counts, attempts, jobs, comfyui, reader, seed_s=seed_s)
    finally:
        reader.close()


def test_the_readme_role_is_read_only(seeded: Seeded) -> None:
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        seeded.run("DELETE FROM jobs")


def test_the_datasource_file_expands_to_a_working_connection(seeded: Seeded) -> None:
    raw = (GRAFANA / "provisioning" / "datasources" / "comfy-router.yaml").read_text()
    env = {
        "COMFY_ROUTER_PG_HOST": "127.0.0.1",
        "COMFY_ROUTER_PG_PORT": str(seeded.server.port),
        "COMFY_ROUTER_PG_DATABASE": seeded.dbname,
        "COMFY_ROUTER_PG_USER": seeded.role,
        "COMFY_ROUTER_PG_PASSWORD": "unused-with-trust-auth",
        "COMFY_ROUTER_PG_SSLMODE": "disable",
    }
    template = yaml.safe_load(raw)
    [source] = template["datasources"]
    assert source["secureJsonData"]["password"] in (
        "$COMFY_ROUTER_PG_PASSWORD",
        "${COMFY_ROUTER_PG_PASSWORD}",
    )
    doc = yaml.safe_load(grafana_env_expand(raw, env))
    assert doc["apiVersion"] == 1
    [ds] = doc["datasources"]
    assert ds["type"] == DATASOURCE_TYPE and ds["uid"] == DATASOURCE_UID
    assert ds["jsonData"]["postgresVersion"] == 1500 and ds["jsonData"]["timescaledb"] is False
    assert "password" not in ds and "password" not in ds["jsonData"]
    host, port = ds["url"].rsplit(":", 1)
    with psycopg.connect(
        host=host,
        port=int(port),
        user=ds["user"],
        password=ds["secureJsonData"]["password"],
        dbname=ds["jsonData"]["database"],
        sslmode=ds["jsonData"]["sslmode"],
    ) as conn:
        assert conn.execute("SELECT count(*) FROM model_usage_log").fetchone() == (len(seeded.attempts),)


def test_the_seeded_day_is_varied_enough_for_every_panel(seeded: Seeded) -> None:
    attempts = seeded.attempts
    assert len({a.model_name for a in attempts}) >= 6
    assert {a.tier for a in attempts} >= {"draft", "standard", "high", "max", None}
    assert {a.backend for a in attempts} == {"a100", "rtx4090"}
    assert len({a.purpose for a in attempts}) >= 7
    assert {a.outcome for a in attempts} >= {"ok", "degraded", "timeout", "oom", "backend_error", "invalid"}
    assert any(a.source == "direct" for a in attempts)
    assert {j.status for j in seeded.jobs} >= {"succeeded", "failed", "selected", "running"}
    assert any(a.outcome == "running" and a.finished_at is None for a in seeded.attempts)
    assert seeded.counts["outage_samples"] == 60


# --------------------------------------------------------------------------- running the panels

SELECTIONS: dict[str, tuple[TimeRange, Selection]] = {
    "all": (DAY, {}),
    "selection": (
        DAY,
        {
            "backend": ["a100"],
            "model": ["flux1-dev-fp16", "flux1-dev-fp8"],
            "purpose": ["text-to-image", "portrait"],
        },
    ),
    "quote-in-value": (DAY, {"backend": ["o'neil", "a100"], "model": [ALL], "purpose": "it's"}),
    "milliseconds": (TimeRange(START + timedelta(milliseconds=250), DAY.end - timedelta(milliseconds=1)), {}),
}


def variables_for(seeded: Seeded, dashboard: Dashboard, time_range: TimeRange) -> dict[str, Variable]:
    return resolve_variables(
        dashboard, time_range, lambda sql: seeded.run(sql, f"{dashboard.uid}:variables")[1]
    )


def rendered(seeded: Seeded, target: Target, mode: str) -> str:
    time_range, selection = SELECTIONS[mode]
    dashboard = next(d for d in DASHBOARDS if d.uid == target.dashboard)
    variables = variables_for(seeded, dashboard, time_range)
    interval = panel_interval(time_range, target.panel.get("interval"))
    sql = render(
        target.sql, time_range=time_range, interval=interval, variables=variables, selection=selection
    )
    assert "$__" not in sql and "$" not in sql.replace("$$", "")
    return sql


def run_panel(seeded: Seeded, title: str, dashboard: str, mode: str = "all") -> tuple[list[str], list[tuple]]:
    target = by_title(dashboard, title)
    return seeded.run(rendered(seeded, target, mode), target.key)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def numeric_columns(
    names: Sequence[str], rows: Sequence[tuple[Any, ...]], skip: int | None = None
) -> list[str]:
    out = []
    for i, name in enumerate(names):
        values = [r[i] for r in rows if r[i] is not None]
        if i != skip and values and all(is_number(v) for v in values):
            out.append(name)
    return out


def check_shape(target: Target, names: list[str], rows: list[tuple[Any, ...]]) -> None:
    """What the panel's visualisation needs from the answer."""
    assert rows, "no rows"
    kind = target.panel_type
    if target.format == "time_series":
        assert "time" in names, f"no time column in {names}"
        t = names.index("time")
        times = [r[t] for r in rows]
        assert None not in times
        assert all(isinstance(v, datetime) or is_number(v) for v in times)
        assert times == sorted(times), "not sorted by time (Grafana cannot widen unsorted long frames)"
        values = numeric_columns(names, rows, skip=t)
        assert values, f"no numeric value column in {names}"
        labels = [i for i, n in enumerate(names) if i != t and n not in values]
        for i in labels:
            assert all(isinstance(r[i], str) for r in rows), (
                f"column {names[i]} is neither numeric nor a label"
            )
        keys = [(r[t], *(r[i] for i in labels)) for r in rows]
        assert len(keys) == len(set(keys)), "two rows for the same time and labels"
        return
    if kind == "stat":
        assert len(rows) == 1 and len(names) == 1, f"a stat needs one value, got {names} x {len(rows)}"
        assert is_number(rows[0][0]), f"{names[0]} = {rows[0][0]!r} is not a number"
        assert math.isfinite(float(rows[0][0]))
    elif kind == "bargauge":
        assert numeric_columns(names, rows), names
    elif kind == "barchart":
        x_field = target.panel["options"]["xField"]
        assert x_field in names
        assert all(isinstance(r[names.index(x_field)], str) for r in rows)
        assert numeric_columns(names, rows, skip=names.index(x_field)), names
    else:
        assert kind == "table", kind


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.key} {t.panel_title}")
def test_panel_sql_runs_on_postgres_and_answers_what_the_panel_needs(seeded: Seeded, target: Target) -> None:
    names, rows = seeded.run(rendered(seeded, target, "all"), target.key)
    check_shape(target, names, rows)
    # Also valid SQL (maybe with no rows) for a selection, a quote in a value, and a range with ms.
    for mode in ("selection", "quote-in-value", "milliseconds"):
        seeded.run(rendered(seeded, target, mode), target.key)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_variable_queries_list_what_was_seeded(seeded: Seeded, dashboard: Dashboard) -> None:
    variables = variables_for(seeded, dashboard, DAY)
    assert set(variables["backend"].options) == {"a100", "rtx4090"}
    assert set(variables["model"].options) == {a.model_name for a in seeded.attempts}
    assert set(variables["purpose"].options) == {a.purpose for a in seeded.attempts if a.purpose} | {
        j.purpose for j in seeded.jobs
    }
    for variable in variables.values():
        assert list(variable.options) == sorted(variable.options)


# ------------------------------------------------------------------- numbers against Python

PRODUCED = ("ok", "degraded")


def percentile_cont(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    pos = fraction * (len(ordered) - 1)
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Request:
    attempts: list[ModelUsageLog]

    @property
    def first(self) -> ModelUsageLog:
        return min(self.attempts, key=lambda a: (a.attempt, a.started_at))

    @property
    def produced(self) -> bool:
        return any(a.outcome in PRODUCED for a in self.attempts)

    @property
    def counted(self) -> bool:
        """Ended: delivered, or gave up (not cancelled by the client, not still running)."""
        return self.produced or not any(a.outcome in ("cancelled", "running") for a in self.attempts)

    @property
    def latency_s(self) -> float:
        end = max(a.finished_at for a in self.attempts if a.finished_at)
        return (end - min(a.started_at for a in self.attempts)).total_seconds()

    @property
    def workflow(self) -> str:
        first = self.first
        if first.purpose == "face-swap" or first.model_name.startswith("faceswap"):
            return "Face swap"
        return "FLUX" if first.model_name.startswith("flux") else "Other"


def requests(attempts: Sequence[ModelUsageLog]) -> list[Request]:
    grouped: dict[str, list[ModelUsageLog]] = defaultdict(list)
    for a in attempts:
        grouped[a.job_id or f"direct:{a.id}"].append(a)
    return [Request(v) for v in grouped.values()]


GATES = "comfy-router-pilot-gates"
ROUTING = "comfy-router-routing"
GPU = "comfy-router-gpu-vram"


def single(seeded: Seeded, title: str, dashboard: str = GATES, mode: str = "all") -> float:
    _, rows = run_panel(seeded, title, dashboard, mode)
    return float(rows[0][0])


def test_error_rate_is_failed_over_finished_requests(seeded: Seeded) -> None:
    counted = [r for r in requests(seeded.attempts) if r.counted]
    by_attempts = 100 * sum(not r.produced for r in counted) / len(counted)
    # The same number from another table: job statuses plus direct runs.
    direct = [a for a in seeded.attempts if a.source == "direct"]
    failed = sum(j.status == "failed" for j in seeded.jobs) + sum(a.outcome not in PRODUCED for a in direct)
    finished = sum(j.status in ("succeeded", "failed") for j in seeded.jobs) + len(direct)
    assert by_attempts == pytest.approx(100 * failed / finished)
    assert single(seeded, "Error rate") == pytest.approx(by_attempts)
    assert 0 < by_attempts < 20


def test_p95_latency_per_workflow_matches_a_percentile_computed_in_python(seeded: Seeded) -> None:
    counted = [r for r in requests(seeded.attempts) if r.counted]
    for title, workflow in (("FLUX p95 latency", "FLUX"), ("Face swap p95 latency", "Face swap")):
        latencies = [r.latency_s for r in counted if r.workflow == workflow]
        assert len(latencies) > 20
        assert single(seeded, title) == pytest.approx(percentile_cont(latencies, 0.95), rel=1e-9)


def test_uptime_per_backend_counts_the_outage(seeded: Seeded) -> None:
    samples_per_backend = seeded.counts["comfyui_rows"] // 2
    expected = {"a100": 100.0, "rtx4090": 100.0 * (samples_per_backend - 60) / samples_per_backend}
    python = {
        b: 100.0 * sum(bool(r.up) for r in seeded.comfyui_rows if r.backend == b) / samples_per_backend
        for b in expected
    }
    assert python == pytest.approx(expected)
    _, rows = run_panel(seeded, "Uptime per backend", GATES)
    assert {b: float(v) for b, v in rows} == pytest.approx(expected)
    assert single(seeded, "Worst backend uptime") == pytest.approx(expected["rtx4090"])
    _, rows = run_panel(seeded, "Uptime per backend", GATES, "selection")
    assert [b for b, _ in rows] == ["a100"]


def test_savings_and_the_30_day_projection(seeded: Seeded) -> None:
    gpu = sum(a.cost_usd or 0.0 for a in seeded.attempts)
    hosted = sum(a.hosted_usd or 0.0 for a in seeded.attempts if a.outcome in PRODUCED)
    assert single(seeded, "GPU spend") == pytest.approx(gpu)
    assert single(seeded, "Same images on the hosted API") == pytest.approx(hosted)
    assert single(seeded, "Savings in range") == pytest.approx(hosted - gpu)
    # The range is one day: the projection is 30 times the day's savings.
    assert single(seeded, "Projected savings per 30 days") == pytest.approx(30 * (hosted - gpu))
    images = sum(a.outcome in PRODUCED for a in seeded.attempts)
    assert single(seeded, "Images in range") == images
    _, rows = run_panel(seeded, "Cumulative GPU spend vs hosted API", GATES)
    assert float(rows[-1][1]) == pytest.approx(gpu) and float(rows[-1][2]) == pytest.approx(hosted)


def test_gate_summary_agrees_with_the_single_gates(seeded: Seeded) -> None:
    names, rows = run_panel(seeded, "Gate summary", GATES)
    assert names == ["Gate", "Observed", "Target", "Status"]
    table = {gate: (observed, target, status) for gate, observed, target, status in rows}
    error_rate = single(seeded, "Error rate")
    assert float(table["Error rate (%)"][0]) == pytest.approx(error_rate)
    assert table["Error rate (%)"][2] == ("GO" if error_rate < 5 else "NO-GO")
    flux = single(seeded, "FLUX p95 latency")
    assert table["FLUX p95 latency (s)"][2] == ("GO" if flux < 60 else "NO-GO")
    assert table["Uptime a100 (%)"][2] == "GO"
    assert table["Uptime rtx4090 (%)"][2] == "NO-GO"  # 97.9 % after the 30-minute outage
    assert table["Savings vs hosted API (USD)"][2] == (
        "GO" if single(seeded, "Savings in range") > 0 else "NO-GO"
    )
    gates = [row for row in rows if not row[0].startswith("All gates")]
    overall = table["All gates (passed)"]
    assert overall[0] == sum(r[3] == "GO" for r in gates) and overall[1] == f"= {len(gates)}"
    assert overall[2] == "NO-GO"


def test_routing_numbers(seeded: Seeded) -> None:
    attempts = seeded.attempts
    assert single(seeded, "Runs", ROUTING) == len(attempts)
    assert single(seeded, "Runs that bypassed the router", ROUTING) == seeded.counts["direct_runs"]
    _, rows = run_panel(seeded, "Direct runs (bypassed the router)", ROUTING)
    assert len(rows) == seeded.counts["direct_runs"]
    met = [j.deadline_met for j in seeded.jobs if j.deadline_met is not None]
    assert single(seeded, "Deadline hit rate", ROUTING) == pytest.approx(100 * sum(met) / len(met))
    finished = [j for j in seeded.jobs if j.status in ("succeeded", "failed")]
    assert single(seeded, "Degraded share", ROUTING) == pytest.approx(
        100 * sum(j.degraded for j in finished) / len(finished)
    )
    names, rows = run_panel(seeded, "Runs per model and tier", ROUTING)
    assert sum(sum(r[1:]) for r in rows) == len(attempts)
    tiers = dict(zip(names[1:], map(sum, zip(*(r[1:] for r in rows), strict=True)), strict=True))
    assert tiers["max"] == sum(a.tier == "max" for a in attempts)
    assert tiers["no tier"] == sum(a.tier is None for a in attempts)
    reasons = [r[0] for r in run_panel(seeded, "Top selection reasons", ROUTING)[1]]
    assert set(reasons) <= {j.reason_code for j in seeded.jobs} and len(reasons) <= 10


def test_actual_vs_estimated_and_cost_per_image_for_one_model(seeded: Seeded) -> None:
    model = "flux1-dev-fp16"
    done = [
        a
        for a in seeded.attempts
        if a.model_name == model
        and a.outcome in PRODUCED
        and a.actual_s is not None
        and (a.estimated_s or 0) > 0
    ]
    names, rows = run_panel(seeded, "Actual vs estimated seconds per model", ROUTING)
    row = dict(zip(names, next(r for r in rows if r[0] == model), strict=True))
    assert row["Completed runs"] == len(done)
    assert row["p50 actual"] == pytest.approx(percentile_cont([a.actual_s for a in done], 0.5))
    assert row["p95 estimated"] == pytest.approx(percentile_cont([a.estimated_s for a in done], 0.95))
    error = 100 * sum((a.actual_s - a.estimated_s) / a.estimated_s for a in done) / len(done)
    assert float(row["Mean estimate error"]) == pytest.approx(error)

    mine = [a for a in seeded.attempts if a.model_name == model]
    images = [a for a in mine if a.outcome in PRODUCED]
    names, rows = run_panel(seeded, "Cost per image and per quality point", ROUTING)
    row = dict(zip(names, next(r for r in rows if r[0] == model), strict=True))
    cost = sum(a.cost_usd or 0.0 for a in mine)
    assert row["Images"] == len(images)
    assert row["Cost per image"] == pytest.approx(cost / len(images))
    assert row["Cost per quality point"] == pytest.approx(cost / sum(a.quality_score for a in images))


def test_a_selection_filters_the_rows(seeded: Seeded) -> None:
    backends, models, purposes = SELECTIONS["selection"][1].values()
    chosen = [
        a
        for a in seeded.attempts
        if a.backend in backends and a.model_name in models and a.purpose in purposes
    ]
    assert chosen
    assert single(seeded, "Runs", ROUTING, "selection") == len(chosen)
    assert single(seeded, "Runs", ROUTING, "quote-in-value") == 0


def test_gpu_panels_show_the_outage_and_both_gpus(seeded: Seeded) -> None:
    _, rows = run_panel(seeded, "Backend up / down", GPU)
    down = {(r[1], r[0]) for r in rows if r[2] == 0}
    assert down and {b for b, _ in down} == {"rtx4090"}
    assert len(down) == 30  # 1-minute buckets over the 30-minute outage
    _, rows = run_panel(seeded, "VRAM used per GPU", GPU)
    assert len({r[1] for r in rows}) == 2
    _, rows = run_panel(seeded, "VRAM used per GPU", GPU, "selection")
    assert {r[1] for r in rows} == {"gpu-node-1 GPU0 a100"}


def test_every_panel_query_is_fast(seeded: Seeded) -> None:
    for target in TARGETS:
        if target.key not in seeded.timings:
            seeded.run(rendered(seeded, target, "all"), target.key)
    slow = {k: round(v, 3) for k, v in seeded.timings.items() if v > QUERY_BUDGET_S}
    assert not slow, f"panel queries over {QUERY_BUDGET_S}s on one seeded day: {slow}"
    worst = sorted(seeded.timings.items(), key=lambda kv: -kv[1])[:5]
    print(f"\nseed_day: {seeded.seed_s:.2f}s; slowest queries: {[(k, round(v * 1000)) for k, v in worst]} ms")


# ------------------------------------------------------------------- rollups and the live minute


def _nvml_row(ts: datetime, used_mb: float, gpu_index: int = 0, backend: str = "a100") -> dict[str, Any]:
    return {
        "ts": ts,
        "host": "box",
        "source": "nvml",
        "backend": backend,
        "gpu_index": gpu_index,
        "gpu_uuid": f"GPU-{gpu_index}",
        "vram_total_mb": 80000.0,
        "vram_used_mb": used_mb,
        "vram_free_mb": 80000.0 - used_mb,
    }


def _panel_rows(
    conn: psycopg.Connection[Any], title: str, time_range: TimeRange
) -> tuple[timedelta, list[tuple[Any, ...]]]:
    target = by_title(GPU, title)
    dashboard = next(d for d in DASHBOARDS if d.uid == GPU)
    variables = resolve_variables(dashboard, time_range, lambda sql: conn.execute(sql.encode()).fetchall())
    interval = panel_interval(time_range, target.panel.get("interval"))
    sql = render(target.sql, time_range=time_range, interval=interval, variables=variables)
    return interval, conn.execute(sql.encode()).fetchall()


@pytest.mark.postgres
def test_rolled_up_minutes_and_a_sample_written_seconds_ago_both_show(pg_db: Database) -> None:
    """Minutes come from vram_usage_minute (their raw rows deleted here, as retention would), the
    minutes after the newest rolled-up one from vram_usage_log: a sample 3 s old is on the panel."""
    from sqlalchemy import delete, insert

    from monitor.rollup import minute_table
    from monitor.rows import usage_log_table

    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    log = usage_log_table()
    old = [_nvml_row(minute - timedelta(minutes=10) + timedelta(seconds=5 * i), 1000.0) for i in range(60)]
    with pg_db.engine.begin() as conn:
        conn.execute(insert(log), old)
    rolled = roll_up(pg_db.engine, now=now)
    assert rolled.minutes_written == 5 and rolled.until == minute
    with pg_db.engine.begin() as conn:
        conn.execute(delete(log))  # only the minutes are left of them
        # written a few seconds ago, by a GPU seen nowhere else
        conn.execute(insert(log), [_nvml_row(now - timedelta(seconds=3), 4242.0, gpu_index=7, backend="new")])
    assert roll_up(pg_db.engine, now=now).minutes_written == 0  # the current minute is never rolled up
    with pg_db.engine.connect() as conn:
        assert conn.execute(select(minute_table().c.ts)).scalars().all()  # the rollups are there
    url = pg_db.engine.url
    conninfo = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
    with psycopg.connect(conninfo, autocommit=True, options="-c TimeZone=America/Sao_Paulo") as conn:
        # 1-minute buckets and more (minutes, then raw), and 15 s buckets (raw where kept)
        for span in (timedelta(days=30), timedelta(days=1), timedelta(hours=1)):
            interval, rows = _panel_rows(conn, "VRAM used per GPU", TimeRange(now - span, now))
            series = defaultdict(list)
            for _ts, metric, value in rows:
                series[metric].append(value)
            assert series["box GPU7 new"] == [4242.0], (span, interval)
            assert series["box GPU0 a100"] and set(series["box GPU0 a100"]) == {1000.0}, (span, interval)
