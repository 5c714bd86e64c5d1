"""A router that dies mid-job leaves its prompt on ComfyUI; the next router re-attaches to it."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask

from router.api.app import create_app
from router.comfyui import ComfyUIClient
from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from router.runs.reattach import HOST
from router.settings import Settings
from router.workflows.templates import TemplateRegistry
from tests.integration.test_select_and_run import Fleet


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def orphan(db: Database, fleet: Fleet, owner: str, submit: bool = True) -> tuple[str, str]:
    """A job and its running attempt as a router leaves them when it is killed mid-run."""
    job_id, prompt_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    with db.session() as s:
        s.add(
            Job(
                id=job_id,
                created_at=now,
                purpose="portrait",
                urgency="batch",
                deadline_s=60.0,
                quality_target="high",
                request={},
                status="running",
                degraded=False,
            )
        )
        s.flush()
        s.add(
            ModelUsageLog(
                job_id=job_id,
                attempt=1,
                prompt_id=prompt_id,
                runner=owner,
                started_at=now,
                backend="gpu",
                model_name="hq",
                tier="standard",
                steps=8,
                width=512,
                height=512,
                outcome="running",
                degraded=False,
            )
        )
    if submit:
        graph = (
            TemplateRegistry()
            .get("checkpoint_txt2img")
            .render(
                {
                    "prompt": "p",
                    "seed": 1,
                    "steps": 8,
                    "cfg": 6.0,
                    "ckpt_name": "hq.safetensors",
                    "width": 512,
                    "height": 512,
                }
            )
        )
        client = ComfyUIClient(fleet.sims["gpu"].url)
        execution = client.start(graph, prompt_id=prompt_id)
        execution.close()  # the router "dies": nobody listens any more, the prompt runs on
    return job_id, prompt_id


def wait_job(db: Database, job_id: str, timeout_s: float = 20.0) -> Job:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            if job.status not in ("queued", "running"):
                return job
        time.sleep(0.05)
    raise AssertionError("job never finished")


def app_for(fleet: Fleet, db: Database, tmp_path: Path) -> Flask:
    return create_app(Settings(migrate_on_start=False, data_dir=tmp_path), catalog=fleet.catalog, database=db)


def test_a_new_router_finishes_the_job_a_dead_one_left_running(pg_db: Database, tmp_path: Path) -> None:
    fleet = Fleet(["gpu"])
    try:
        job_id, _ = orphan(pg_db, fleet, f"{HOST}:{dead_pid()}:gone")
        app = app_for(fleet, pg_db, tmp_path)  # re-attaches in the background on start
        job = wait_job(pg_db, job_id)
        assert job.status == "succeeded" and job.outputs
        png = app.test_client().get(job.outputs[0]["url"])
        assert png.status_code == 200 and png.data[:4] == b"\x89PNG"
        with pg_db.session() as s:
            row = s.query(ModelUsageLog).filter_by(job_id=job_id).one()
            assert row.outcome == "ok" and row.finished_at is not None
    finally:
        fleet.stop()


def test_a_prompt_the_backend_forgot_fails_the_job_with_a_reason(pg_db: Database, tmp_path: Path) -> None:
    fleet = Fleet(["gpu"])
    try:
        job_id, _ = orphan(pg_db, fleet, f"{HOST}:{dead_pid()}:gone", submit=False)
        app_for(fleet, pg_db, tmp_path)
        job = wait_job(pg_db, job_id)
        assert job.status == "failed" and "no longer knows the prompt" in (job.error or "")
    finally:
        fleet.stop()


def test_a_live_replicas_attempts_are_left_alone(pg_db: Database, tmp_path: Path) -> None:
    fleet = Fleet(["gpu"])
    try:
        live_owner = f"{HOST}:{os.getpid()}:other-replica"
        job_id, _ = orphan(pg_db, fleet, live_owner, submit=False)
        app: Any = app_for(fleet, pg_db, tmp_path)
        runner = app.extensions["comfy_router"].runner
        assert runner.reattach_orphans() == 0
        with pg_db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.status == "running"
            assert s.query(ModelUsageLog).filter_by(job_id=job_id).one().runner == live_owner
    finally:
        fleet.stop()
