"""The monitor end to end: `--once` on SQLite and PostgreSQL against a fake ComfyUI and a dead port,
retention on PostgreSQL, and a PostgreSQL outage in the middle of a running monitor."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pynvml
import pytest
import requests
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, insert, select

from monitor.app import SCHEDULER_JOB_DEFAULTS, build_runtime, schedule_jobs
from monitor.cli import MonitorConfig
from monitor.clock import SystemClock
from monitor.retention import RetentionJob, minute_table
from monitor.rows import usage_log_table
from router.db.database import Database
from tests.support.postgres import PostgresServer, free_port
from tests.unit.test_monitor_comfyui import QUEUE, SYSTEM_STATS
from tests.unit.test_monitor_retention import NOW, ancient_minute, expected_minutes, raw_rows, read_minutes

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


class _ComfyHandler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, Any]] = {"/system_stats": SYSTEM_STATS, "/queue": QUEUE}

    def do_GET(self) -> None:
        body = self.routes.get(self.path)
        payload = json.dumps(body if body is not None else {"error": "not found"}).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture(scope="module")
def comfyui_url() -> Iterator[str]:
    """A tiny ComfyUI stand-in on 127.0.0.1 answering /system_stats and /queue with captured bodies."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ComfyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound then closed: nothing listens there


def run_once(database_url: str, *backends: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "COMFYUI_URL")}
    env["COMFY_ROUTER_CONFIG"] = str(tmp_path / "no-catalog.json")
    cmd = [sys.executable, "-m", "monitor", "--once", "--host-name", "test-host"]
    cmd += ["--database-url", database_url, *(f"--backend={b}" for b in backends)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def read_rows(db: Database) -> list[dict[str, Any]]:
    log = usage_log_table()
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(log).order_by(log.c.id)).mappings()]


def assert_once_rows(rows: list[dict[str, Any]], comfyui_url: str, dead_url: str) -> None:
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert len({r["ts"] for r in rows}) == 1, "one sample, one timestamp"
    assert all(r["host"] == "test-host" for r in rows)

    [host] = by_source["host"]
    assert host["ram_total_mb"] > 0 and host["ram_used_mb"] > 0 and host["cpu_pct"] is not None
    assert host["vram_total_mb"] is None and host["gpu_index"] is None

    good, dead = sorted(by_source["comfyui"], key=lambda r: r["backend"] != "good")
    assert good["backend"] == "good" and good["up"] is True and good["error"] is None
    assert (good["queue_running"], good["queue_pending"]) == (1, 2)
    assert good["vram_total_mb"] == pytest.approx(25276502016 / MB)
    assert good["vram_free_mb"] == pytest.approx(23713144832 / MB)
    assert good["gpu_name"] == "cpu"
    assert dead["backend"] == "dead" and dead["up"] is False
    assert "ConnectionError" in dead["error"] and "refused" in dead["error"]
    assert dead["vram_total_mb"] is None and dead["queue_pending"] is None


def test_once_on_sqlite(tmp_path: Path, comfyui_url: str, dead_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"  # not migrated: the monitor does it
    done = run_once(url, f"good={comfyui_url}", f"dead={dead_url}", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    db = Database(url)
    try:
        assert_once_rows(read_rows(db), comfyui_url, dead_url)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_once_on_postgres(tmp_path: Path, pg_db: Database, comfyui_url: str, dead_url: str) -> None:
    done = run_once(pg_db.url, f"good={comfyui_url}", f"dead={dead_url}", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = read_rows(pg_db)
    assert_once_rows(rows, comfyui_url, dead_url)
    assert rows[0]["ts"].utcoffset() == timedelta(0)


def test_once_exits_1_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    done = run_once(url, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "could not be written" in done.stderr


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.mark.postgres
def test_retention_aggregates_and_deletes_on_postgres(pg_db: Database) -> None:
    with pg_db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), raw_rows())
        conn.execute(insert(minute_table()), [ancient_minute()])
    job = RetentionJob(
        pg_db.engine,
        FixedClock(NOW),
        retention_days=7,
        aggregate_days=90,
        logger=logging.getLogger("t.retention"),
    )
    result = job.run()
    assert result is not None
    assert (result.aggregates_written, result.raw_rows_deleted, result.aggregates_deleted) == (4, 6, 1)
    assert read_minutes(pg_db) == expected_minutes()
    log = usage_log_table()
    with pg_db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(log)).scalar_one() == 1


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}")


def distinct_sample_times(db: Database, host: str) -> int:
    log = usage_log_table()
    with db.engine.connect() as conn:
        query = select(func.count(func.distinct(log.c.ts))).where(log.c.host == host)
        return int(conn.execute(query).scalar_one())


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_outage_is_buffered_and_written_afterwards(
    pg_server: PostgresServer | None, pg_db: Database
) -> None:
    if pg_server is None:
        pytest.skip("stopping the database needs the managed server")
    registry = CollectorRegistry()
    config = MonitorConfig(
        database_url=pg_db.url,
        targets=(),
        interval_s=0.2,
        buffer_samples=1000,
        host="outage-test",
        migrate=False,
    )
    runtime = build_runtime(
        config,
        nvml=pynvml,
        psutil=psutil,
        session_factory=requests.Session,
        clock=SystemClock(),
        registry=registry,
        logger=logging.getLogger("t.outage"),
    )
    writer = runtime.monitor.writer
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults=SCHEDULER_JOB_DEFAULTS)
    schedule_jobs(scheduler, runtime, now=datetime.now(UTC))
    server_down = False
    scheduler.start()
    try:
        wait_for(
            lambda: distinct_sample_times(pg_db, "outage-test") >= 3, 20, "samples written before the outage"
        )
        pg_server.stop()
        server_down = True
        wait_for(lambda: writer.buffered >= 5, 20, "samples buffered during the outage")
        buffered_during_outage = writer.buffered
        pg_server.start()
        server_down = False
        wait_for(lambda: writer.buffered == 0, 30, "the buffer written once PostgreSQL is back")
    finally:
        scheduler.shutdown(wait=True)
        if server_down:
            pg_server.start()  # other tests share this server
        runtime.close()

    taken = registry.get_sample_value("comfy_router_monitor_samples_total")
    assert taken is not None and taken >= 3 + buffered_during_outage
    assert distinct_sample_times(pg_db, "outage-test") == taken  # every sample is in the table
    assert registry.get_sample_value("comfy_router_monitor_dropped_samples_total") == 0.0
    assert (registry.get_sample_value("comfy_router_monitor_write_failures_total") or 0) >= 1
    assert registry.get_sample_value("comfy_router_monitor_buffered_samples") == 0.0


def scrape(port: int) -> dict[str, float]:
    """`name{labels}` -> value from the monitor's /metrics; {} while it is not serving yet."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            values[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return values


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_running_monitor_serves_metrics_and_stops_cleanly(
    tmp_path: Path, comfyui_url: str, stop_signal: signal.Signals
) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "COMFYUI_URL")}
    env["COMFY_ROUTER_CONFIG"] = str(tmp_path / "no-catalog.json")
    cmd = [sys.executable, "-m", "monitor", "--interval-s", "0.2", "--metrics-port", str(port)]
    cmd += ["--database-url", url, f"--backend=good={comfyui_url}", "--host-name", "test-host"]
    log_path = tmp_path / "monitor.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: scrape(port).get("comfy_router_monitor_samples_total", 0) >= 3, 30, "3 samples")
            metrics = scrape(port)
            proc.send_signal(stop_signal)
            status = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    output = log_path.read_text()
    assert status == 0, output
    assert f"{stop_signal.name}: stopping after the current sample" in output
    assert output.rstrip().endswith("monitor: stopped"), output
    assert metrics['comfy_router_backend_up{backend="good"}'] == 1.0
    assert metrics['comfy_router_backend_queue_pending{backend="good"}'] == 2.0
    assert metrics["comfy_router_monitor_dropped_samples_total"] == 0.0
    db = Database(url)
    try:
        hosts = [r for r in read_rows(db) if r["source"] == "host"]
    finally:
        db.dispose()
    assert len(hosts) >= metrics["comfy_router_monitor_samples_total"]  # written, not only sampled


def test_prune_runs_retention_once_and_exits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    db = Database(url)
    db.migrate()
    old = datetime.now(UTC) - timedelta(days=30)
    with db.engine.begin() as conn:
        conn.execute(insert(usage_log_table()), [{"ts": old, "host": "h", "source": "host", "cpu_pct": 10.0}])
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "COMFYUI_URL")}
    env["COMFY_ROUTER_CONFIG"] = str(tmp_path / "no-catalog.json")
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "--prune", "--database-url", url, "--retention-days", "7"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        assert done.returncode == 0, done.stderr
        assert read_rows(db) == []
        [minute] = read_minutes(db)
        assert (minute["source"], minute["samples"], minute["cpu_pct"]) == ("host", 1, 10.0)
    finally:
        db.dispose()
