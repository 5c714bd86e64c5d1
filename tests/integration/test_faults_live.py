"""The spool survives the router: a live router (gunicorn, as `make run` starts it) keeps running
jobs while PostgreSQL is down, is killed with SIGKILL (one job still running on ComfyUI) before it
could replay anything, and the next router started on the same data directory adopts its spool,
writes every row, and re-attaches to the prompt left running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from tests.integration.test_faults import BODY, TERMINAL, FaultFleet
from tests.support.live_router import LiveRouter, write_catalog
from tests.support.postgres import PostgresServer


def submit(router: LiveRouter) -> str:
    r = requests.post(router.url + "/select-and-run", json={**BODY, "wait": False}, timeout=30)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def wait_terminal(router: LiveRouter, job_id: str, timeout_s: float = 30.0) -> requests.Response:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        r = requests.get(f"{router.url}/jobs/{job_id}", timeout=10)
        if r.status_code == 200 and r.json()["status"] in TERMINAL:
            return r
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not terminal within {timeout_s} s:\n{router.log_tail()}")


def stored(db: Database, job_ids: list[str]) -> tuple[dict[str, Job], list[ModelUsageLog]]:
    with db.session() as s:
        jobs = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(job_ids)))}
        rows = list(s.scalars(select(ModelUsageLog).where(ModelUsageLog.job_id.in_(job_ids))))
    return jobs, rows


def test_a_router_killed_while_postgres_is_down_loses_no_row(
    own_pg: tuple[PostgresServer, Database], tmp_path: Path
) -> None:
    server, db = own_pg
    fleet = FaultFleet(["a", "b"], fast=True)
    routers: list[LiveRouter] = []
    try:
        catalog: dict[str, Any] = fleet.catalog.model_dump(mode="json", by_alias=True, exclude_none=True)
        path = write_catalog(tmp_path / "catalog.json", catalog)
        data_dir = tmp_path / "data"
        env = {"COMFY_ROUTER_MIGRATE": "false", "COMFY_ROUTER_DATA_DIR": str(data_dir)}
        first = LiveRouter(path, db.url, workdir=tmp_path / "r1", env=env).start()
        routers.append(first)
        job_ids = [submit(first) for _ in range(4)]
        for j in job_ids:
            wait_terminal(first, j)

        server.stop("fast")
        during = [submit(first) for _ in range(10)]
        job_ids += during
        for j in during:  # finished while the database is away: answered from the router's memory
            r = wait_terminal(first, j)
            assert r.headers.get("X-Comfy-Router-Persisted") == "false", r.json()
        ready = requests.get(first.url + "/readyz", timeout=10).json()
        assert ready["spool_depth"] >= 10 * 4, ready  # insert, running, attempt start+finish, end
        for sim in fleet.sims.values():
            sim.set_faults(slowdown=20.0)  # the next job takes seconds: killed while it runs
        inflight = submit(first)
        job_ids.append(inflight)
        fleet.running_on()
        assert first.proc is not None
        os.killpg(first.proc.pid, signal.SIGKILL)  # no shutdown hook, no chance to replay
        first.proc.wait(timeout=10)
        assert list((data_dir / "spool").glob("spool-*.sqlite3"))

        server.start()
        jobs, _ = stored(db, during)
        assert jobs == {}  # nothing of the outage reached the database yet
        second = LiveRouter(path, db.url, workdir=tmp_path / "r2", env=env).start()
        routers.append(second)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            jobs, rows = stored(db, job_ids)
            if len(jobs) == len(job_ids) and all(j.status in TERMINAL for j in jobs.values()):
                break
            time.sleep(0.2)
        jobs, rows = stored(db, job_ids)
        assert set(jobs) == set(job_ids), second.log_tail()
        unfinished = {
            j.id: (j.status, j.error, j.finished_at) for j in jobs.values() if j.status != "succeeded"
        }
        assert not unfinished and all(j.finished_at is not None for j in jobs.values()), (
            inflight,
            unfinished,
        )
        assert "re-attached" in (next(r for r in rows if r.job_id == inflight).error or "")
        # Attempts counted independently: the prompts the simulators received.
        received = set()
        for sim in fleet.sims.values():
            received |= set(requests.get(sim.url + "/history", timeout=10).json())
        assert {r.prompt_id for r in rows} == received
        assert len(rows) == len(received) and all(r.outcome in ("ok", "degraded") for r in rows)
        end = time.monotonic() + 10
        while list((data_dir / "spool").glob("spool-*.sqlite3")) and time.monotonic() < end:
            time.sleep(0.1)
        assert not list((data_dir / "spool").glob("spool-*.sqlite3"))  # drained, then deleted
    finally:
        for r in routers:
            r.stop()
        fleet.stop()
