"""Faults against the simulator (real HTTP and WebSocket) and a real PostgreSQL.

A backend killed mid-job, a backend that hangs (socket open, nothing moving, HTTP stalled), a
backend answering 500, and PostgreSQL restarted while 50 jobs run. What must hold in every case:
each job ends in a terminal status with a reason, the failing backend goes into cooldown, the job
fails over when another backend can run it, and `model_usage_log` has exactly one row per attempt
the runner made (counted independently, by the runner's Prometheus counter): nothing lost.
"""

from __future__ import annotations

import faulthandler
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from router.api.app import create_app
from router.api.services import Services
from router.catalog import Catalog
from router.catalog.schema import Backend
from router.comfyui import ComfyUIClient
from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from router.settings import Settings
from router.simulator import SimulatorHandle, start_simulator
from router.simulator.testing import checkpoint_graph, fast_catalog
from router.simulator.testing import submit as sim_submit
from tests.integration.test_select_and_run import backend, tiny_catalog
from tests.support.postgres import PostgresServer

TERMINAL = {"succeeded", "failed", "cancelled"}
BODY = {"purpose": "portrait", "urgency": "batch", "prompt": "a cat", "width": 512, "height": 512}


class FaultFleet:
    """Simulated backends of the tiny catalog; `fast` shrinks every time for the 50-job run."""

    def __init__(self, ids: list[str], *, fast: bool = False, slowdown: float = 1.0) -> None:
        def catalog(backends: list[dict[str, Any]]) -> Catalog:
            c = tiny_catalog(backends)
            return fast_catalog(c, load_s=0.05, base_s=0.02, per_step_s=0.005) if fast else c

        declared = catalog([backend(b) for b in ids])
        self.sims: dict[str, SimulatorHandle] = {
            b: start_simulator(declared, gpu=b, port=0, slowdown=slowdown) for b in ids
        }
        self.catalog = catalog([{**backend(b), "url": h.url} for b, h in self.sims.items()])

    def running_on(self, timeout_s: float = 20.0) -> str:
        """The backend whose queue is running a prompt (waits for one)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for bid, sim in self.sims.items():
                if sim.state()["queue"]["running"]:
                    return bid
            time.sleep(0.02)
        raise AssertionError("no backend started the job")

    def stop(self) -> None:
        for sim in self.sims.values():
            sim.stop()


def short_timeout_clients(timeout_s: float = 2.0) -> Callable[[Backend], ComfyUIClient]:
    """One client per backend with a short HTTP timeout, so a stalled backend costs seconds."""
    clients: dict[str, ComfyUIClient] = {}

    def client_for(b: Backend) -> ComfyUIClient:
        url = str(b.url).rstrip("/")
        return clients.setdefault(url, ComfyUIClient(url, timeout_s=timeout_s))

    return client_for


def router_app(db: Database, fleet: FaultFleet, data_dir: Path) -> Flask:
    settings = Settings(migrate_on_start=False, data_dir=data_dir, stall_min_s=1.0)
    return create_app(settings, catalog=fleet.catalog, database=db, client_for=short_timeout_clients())


def start_router(
    fleets: list[FaultFleet], db: Database, data_dir: Path, ids: list[str], **fleet_options: Any
) -> tuple[FaultFleet, Flask, FlaskClient]:
    """Simulated backends `ids` (stopped by the `fleets` fixture) and a router app over them."""
    fleet = FaultFleet(ids, **fleet_options)
    fleets.append(fleet)
    app = router_app(db, fleet, data_dir)
    return fleet, app, app.test_client()


def assert_one_row_per_attempt(db: Database, app: Flask, job: dict[str, Any]) -> None:
    """Rows in model_usage_log == attempts in the answer == attempts the runner counted."""
    assert len(usage_rows(db, [job["id"]])) == len(job["attempts"]) == attempts_counted(app)


def svc_of(app: Flask) -> Services:
    svc: Services = app.extensions["comfy_router"]
    return svc


def attempts_counted(app: Flask) -> int:
    """Attempts the runner made, from its own Prometheus counter (not from the database)."""
    total = 0.0
    for metric in svc_of(app).metrics.registry.collect():
        if metric.name == "comfy_router_attempts":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return int(total)


def usage_rows(db: Database, job_ids: list[str]) -> list[ModelUsageLog]:
    with db.session() as s:
        return list(
            s.scalars(
                select(ModelUsageLog)
                .where(ModelUsageLog.job_id.in_(job_ids))
                .order_by(ModelUsageLog.job_id, ModelUsageLog.attempt)
            )
        )


def wait_terminal(client: FlaskClient, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        r = client.get(f"/jobs/{job_id}")
        if r.status_code == 200 and r.json["status"] in TERMINAL:
            job: dict[str, Any] = r.json
            return job
        assert r.status_code in (200, 503), r.json  # 503: database down and not in memory
        time.sleep(0.05)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)  # where the runner is stuck
    raise AssertionError(f"job {job_id} not terminal within {timeout_s} s: {r.json}")


def submit(client: FlaskClient, **extra: Any) -> str:
    r = client.post("/select-and-run", json={**BODY, "wait": False, **extra})
    assert r.status_code == 202, r.json
    job_id: str = r.json["id"]
    return job_id


def backend_row(client: FlaskClient, bid: str) -> dict[str, Any]:
    rows = client.get("/backends").json["backends"]
    row: dict[str, Any] = next(b for b in rows if b["id"] == bid)
    return row


@pytest.fixture
def fleets() -> Iterator[list[FaultFleet]]:
    made: list[FaultFleet] = []
    yield made
    for f in made:
        f.stop()


def test_a_backend_killed_mid_job_fails_over_with_a_reason_and_cooldown(
    pg_db: Database, tmp_path: Path, fleets: list[FaultFleet]
) -> None:
    fleet, app, client = start_router(fleets, pg_db, tmp_path, ["a", "b"], slowdown=2.0)
    job_id = submit(client)
    victim = fleet.running_on()
    time.sleep(0.3)  # a few steps in
    fleet.sims[victim].stop()
    job = wait_terminal(client, job_id)
    assert job["status"] == "succeeded", job
    first, last = job["attempts"][0], job["attempts"][-1]
    assert first["backend"] == victim and first["outcome"] == "backend_error"
    assert "socket dropped" in first["error"] or "connection refused" in first["error"], first
    assert last["backend"] != victim and last["outcome"] in ("ok", "degraded")
    dead = backend_row(client, victim)
    assert dead["healthy"] is False and (dead["cooldown_remaining_s"] or 0) > 0, dead
    assert_one_row_per_attempt(pg_db, app, job)


def test_a_hung_backend_is_given_up_on_and_the_job_fails_over(
    pg_db: Database, tmp_path: Path, fleets: list[FaultFleet]
) -> None:
    fleet, app, client = start_router(fleets, pg_db, tmp_path, ["a", "b"])
    t0 = time.monotonic()
    job_id = submit(client)
    victim = fleet.running_on()
    # A deadlocked ComfyUI: the socket stays open, no node makes progress, HTTP requests stall.
    fleet.sims[victim].set_faults(hang=True, slowdown=1e5)
    job = wait_terminal(client, job_id)
    elapsed = time.monotonic() - t0
    assert job["status"] == "succeeded", job
    first, last = job["attempts"][0], job["attempts"][-1]
    assert first["backend"] == victim and first["outcome"] == "timeout"
    assert "backend hung: no progress for" in first["error"], first
    assert last["backend"] != victim and last["outcome"] in ("ok", "degraded")
    # Given up on after the stall window (2 x the ~1.8 s estimate), not at the 60 s deadline.
    assert elapsed < 20.0, elapsed
    hung = backend_row(client, victim)
    assert hung["healthy"] is False and "hung" in (hung["last_error"] or ""), hung
    assert_one_row_per_attempt(pg_db, app, job)


def test_a_backend_answering_500_on_submit_fails_over(
    pg_db: Database, tmp_path: Path, fleets: list[FaultFleet]
) -> None:
    fleet, app, client = start_router(fleets, pg_db, tmp_path, ["a", "b"])
    chosen = client.post("/select", json=BODY).json["backend"]  # the live state is fresh now
    fleet.sims[chosen].set_faults(http_500=True)
    job = client.post("/select-and-run", json=BODY).json
    assert job["status"] == "succeeded", job
    first, last = job["attempts"][0], job["attempts"][-1]
    assert first["backend"] == chosen and first["outcome"] == "backend_error"
    assert "HTTP 500" in first["error"], first
    assert last["backend"] != chosen
    assert backend_row(client, chosen)["healthy"] is False
    assert_one_row_per_attempt(pg_db, app, job)


def test_a_backend_that_starts_answering_500_mid_job_is_not_a_success(
    pg_db: Database, tmp_path: Path, fleets: list[FaultFleet]
) -> None:
    fleet, app, client = start_router(fleets, pg_db, tmp_path, ["a", "b"])
    job_id = submit(client)
    victim = fleet.running_on()
    fleet.sims[victim].set_faults(http_500=True)  # the run finishes; its history and images are 500s
    job = wait_terminal(client, job_id)
    assert job["status"] == "succeeded", job
    first, last = job["attempts"][0], job["attempts"][-1]
    assert first["backend"] == victim and first["outcome"] == "backend_error", first
    assert "could not be fetched" in first["error"] and "500" in first["error"], first
    assert last["backend"] != victim and job["outputs"], job
    assert_one_row_per_attempt(pg_db, app, job)


def test_with_every_backend_failing_the_job_fails_with_the_reasons(
    pg_db: Database, tmp_path: Path, fleets: list[FaultFleet]
) -> None:
    fleet, app, client = start_router(fleets, pg_db, tmp_path, ["a", "b"], slowdown=2.0)
    job_id = submit(client)
    first_victim = fleet.running_on()
    fleet.sims[first_victim].stop()
    other = next(b for b in fleet.sims if b != first_victim)
    fleet.sims[other].set_faults(http_500=True)
    job = wait_terminal(client, job_id)
    assert job["status"] == "failed", job
    assert job["error"] and job["deadline_met"] is False
    assert all(a["outcome"] == "backend_error" and a["error"] for a in job["attempts"]), job["attempts"]
    with pg_db.session() as s:
        row = s.get(Job, job_id)
        assert row is not None and row.status == "failed" and row.error == job["error"]
    assert_one_row_per_attempt(pg_db, app, job)


# --- PostgreSQL restarted while 50 jobs run --------------------------------------------------


def test_postgres_restarted_while_50_jobs_run_loses_nothing(
    own_pg: tuple[PostgresServer, Database], tmp_path: Path, fleets: list[FaultFleet]
) -> None:
    server, db = own_pg
    fleet, app, client = start_router(fleets, db, tmp_path, ["a", "b", "c"], fast=True)
    svc = svc_of(app)
    assert svc.writes is not None
    t0 = time.monotonic()
    job_ids = [submit(client) for _ in range(15)]

    server.stop("fast")
    down_at, down_utc = time.monotonic(), datetime.now(UTC)
    job_ids += [submit(client) for _ in range(20)]  # accepted while the database is down
    # And a backend dies while the database is away: its attempts' rows must not be lost either.
    victim = fleet.running_on()
    fleet.sims[victim].stop()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and any("database unreachable" in p for p in ready.json["problems"])
    assert ready.json["spool_depth"] > 0, ready.json
    metrics_text = client.get("/metrics").get_data(as_text=True)
    assert "comfy_router_spool_depth" in metrics_text
    assert svc.writes.depth() > 0
    spooled_job = job_ids[-1]
    r = client.get(f"/jobs/{spooled_job}")
    assert r.status_code == 200 and r.headers.get("X-Comfy-Router-Persisted") == "false", r.json
    keyed = client.post(
        "/select-and-run", json={**BODY, "wait": False}, headers={"Idempotency-Key": "k-down"}
    )
    assert keyed.status_code == 503 and keyed.json["error"]["code"] == "database_unavailable"
    time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))  # down for a few seconds

    up_utc = datetime.now(UTC)
    server.start()
    job_ids += [submit(client) for _ in range(15)]
    assert len(job_ids) == 50
    jobs = {j: wait_terminal(client, j) for j in job_ids}

    end = time.monotonic() + 30
    while svc.writes.depth() and time.monotonic() < end:
        time.sleep(0.1)
    assert svc.writes.depth() == 0 and svc.writes.dead_count() == 0
    elapsed = time.monotonic() - t0

    with db.session() as s:
        stored = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(job_ids)))}
    assert set(stored) == set(job_ids)  # every job row made it, spooled or not
    for job_id, job in jobs.items():
        row = stored[job_id]
        assert row.status in TERMINAL and row.status == job["status"], (row.status, job)
        assert row.finished_at is not None
        reason = row.error if row.status != "succeeded" else row.selection_reason
        assert reason, (job_id, row.status)
    rows = usage_rows(db, job_ids)
    made = attempts_counted(app)
    assert len(rows) == made, (len(rows), made)  # 0 lost, 0 duplicated
    assert all(r.outcome != "running" and r.finished_at is not None for r in rows)
    assert len({(r.job_id, r.attempt) for r in rows}) == len(rows)
    per_job = {j: sum(1 for r in rows if r.job_id == j) for j in job_ids}
    assert all(per_job[j] == len(jobs[j]["attempts"]) for j in job_ids)
    # The jobs on the killed backend failed over: more attempts than jobs, each with its row.
    assert any(r.backend == victim and r.outcome == "backend_error" and r.error for r in rows)
    assert made > len(job_ids)
    # The outage really cut through the runs: jobs created and attempts started while it lasted.
    assert sum(down_utc <= stored[j].created_at <= up_utc for j in job_ids) >= 20
    assert any(down_utc <= r.started_at <= up_utc for r in rows)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ModelUsageLog)) == made
    print(
        f"\n50 jobs across a PostgreSQL restart (backend {victim} killed during it): "
        f"{sum(j['status'] == 'succeeded' for j in jobs.values())} succeeded, {made} attempts, "
        f"{len(rows)} model_usage_log rows, {elapsed:.1f} s"
    )
    threading.Thread(target=svc.writes.stop, daemon=True).start()


def test_a_backend_hung_before_the_submission_fails_over(
    pg_db: Database, tmp_path: Path, fleets: list[FaultFleet]
) -> None:
    fleet, app, client = start_router(fleets, pg_db, tmp_path, ["a", "b"])
    chosen = client.post("/select", json=BODY).json["backend"]  # the live state is fresh now
    fleet.sims[chosen].set_faults(hang=True)  # the WebSocket handshake and /prompt stall
    t0 = time.monotonic()
    job = client.post("/select-and-run", json=BODY).json
    assert job["status"] == "succeeded", job
    first, last = job["attempts"][0], job["attempts"][-1]
    assert first["backend"] == chosen and first["outcome"] == "backend_error", first
    assert "2.0 s" in first["error"], first  # the client's timeout, named
    assert last["backend"] != chosen
    assert time.monotonic() - t0 < 15.0
    assert backend_row(client, chosen)["healthy"] is False
    assert_one_row_per_attempt(pg_db, app, job)


def test_a_backend_that_hangs_with_the_prompt_still_queued_fails_over(
    pg_db: Database, tmp_path: Path, fleets: list[FaultFleet]
) -> None:
    fleet, app, client = start_router(fleets, pg_db, tmp_path, ["a", "b"])
    chosen = client.post("/select", json=BODY).json["backend"]  # the live state is fresh now
    sim = fleet.sims[chosen]
    sim.set_faults(slowdown=1e5)  # what starts there now never ends
    sim_submit(sim.url, checkpoint_graph("hq.safetensors"))  # another client's prompt holds the GPU
    job_id = submit(client)  # the router does not know yet: it queues behind that prompt
    end = time.monotonic() + 10
    while not sim.state()["queue"]["pending"] and time.monotonic() < end:
        time.sleep(0.02)
    assert sim.state()["queue"]["pending"]
    sim.set_faults(hang=True)  # then the whole server stops answering
    job = wait_terminal(client, job_id)
    assert job["status"] == "succeeded", job
    first, last = job["attempts"][0], job["attempts"][-1]
    assert first["backend"] == chosen and first["outcome"] == "backend_error", first
    assert "/queue does not answer" in first["error"], first
    assert last["backend"] != chosen
    assert_one_row_per_attempt(pg_db, app, job)
