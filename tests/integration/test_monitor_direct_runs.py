"""The monitor logs prompts that bypassed the router (source = 'direct') from each backend's /history."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from monitor.direct_runs import DirectRunLogger, row_for
from monitor.targets import BackendTarget
from router.comfyui import ComfyUIClient, Succeeded
from router.db.database import Database
from router.db.models import ModelUsageLog
from router.workflows.templates import TemplateRegistry
from tests.conftest import SHARED
from tests.integration.test_select_and_run import Fleet

SAMPLES = SHARED / "comfyui" / "samples"


def graph(steps: int) -> dict[str, object]:
    return (
        TemplateRegistry()
        .get("checkpoint_txt2img")
        .render(
            {
                "prompt": "p",
                "seed": 3,
                "steps": steps,
                "cfg": 6.0,
                "ckpt_name": "hq.safetensors",
                "width": 512,
                "height": 512,
            }
        )
    )


def test_direct_runs_are_logged_once_and_router_runs_never(pg_db: Database) -> None:
    fleet = Fleet(["gpu"])
    try:
        client = ComfyUIClient(fleet.sims["gpu"].url)
        direct = client.run(graph(6), timeout_s=30)
        assert isinstance(direct, Succeeded)
        router_pid = str(uuid.uuid4())
        with pg_db.session() as s:  # the router writes its attempt before it submits
            s.add(
                ModelUsageLog(
                    prompt_id=router_pid,
                    started_at=datetime.now(UTC),
                    backend="gpu",
                    model_name="hq",
                    outcome="running",
                    source="router",
                    degraded=False,
                )
            )
        assert isinstance(client.run(graph(4), timeout_s=30, prompt_id=router_pid), Succeeded)
        logger = DirectRunLogger(
            [BackendTarget("gpu", fleet.sims["gpu"].url)],
            fleet.catalog,
            pg_db.engine,
            requests.Session,
            logging.getLogger("test"),
        )
        assert logger.run() == 1
        assert logger.run() == 0  # the same history again: nothing new
        with pg_db.session() as s:
            rows = list(s.scalars(select(ModelUsageLog).where(ModelUsageLog.source == "direct")))
        assert len(rows) == 1
        row = rows[0]
        assert (row.prompt_id, row.model_name, row.steps, row.width, row.outcome) == (
            direct.prompt_id,
            "hq",
            6,
            512,
            "ok",
        )
        assert row.actual_s is not None and row.actual_s > 0 and row.cost_usd is not None and row.cost_usd > 0
        assert row.job_id is None
    finally:
        fleet.stop()


def test_an_unanswering_backend_is_skipped_not_fatal(pg_db: Database) -> None:
    logger = DirectRunLogger(
        [BackendTarget("gone", "http://127.0.0.1:9")],
        None,
        pg_db.engine,
        requests.Session,
        logging.getLogger("t"),
    )
    assert logger.run() == 0


@pytest.mark.skipif(not SAMPLES.exists(), reason="shared/comfyui/samples is not beside the repo")
@pytest.mark.parametrize(
    ("sample", "outcome", "steps"),
    [("sd15_rep1_s2", "ok", 2), ("err_runtime_broken_ckpt", "backend_error", 1)],
    ids=["success", "execution-error"],
)
def test_rows_from_real_comfyui_history(sample: str, outcome: str, steps: int | None) -> None:
    history = json.loads(Path(SAMPLES / f"{sample}.history.json").read_text())
    pid, entry = next(iter(history.items()))
    row = row_for(pid, entry, "gpu", None)
    assert row is not None
    assert row["outcome"] == outcome and row["steps"] == steps and row["source"] == "direct"
    assert row["model_name"].startswith("unknown:")
    assert row["actual_s"] >= 0 and row["cost_usd"] is None  # no catalog: no price, NULL not 0
