"""The n8n workflows in n8n/, run by a real n8n 2.8.4 against a live router on a real PostgreSQL.

One router (a subprocess, `python -m router serve`, with a tiny catalog whose url-less backend makes
it start its ComfyUI simulator) and one `n8n start` serve the whole module. The workflows are imported
and published with n8n's CLI; batch-generate and select-then-dispatch are also run with `n8n execute`.

n8n is installed by scripts/install-n8n.sh (`make test` runs it). Without it these tests are skipped,
except in CI (CI set), where a missing n8n is a failure.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from sqlalchemy import func, select

from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from tests.conftest import ROOT
from tests.support.live_router import LiveRouter, write_catalog
from tests.support.n8n import N8n, find_n8n
from tests.support.postgres import PostgresServer

N8N_DIR = ROOT / "n8n"
WORKFLOWS = {
    "generate-image.json": "crGenerateImage1",
    "batch-generate.json": "crBatchGenerate1",
    "select-then-dispatch.json": "crSelectDispatch",
}
GENERATE = "crGenerateImage1"
BATCH = "crBatchGenerate1"
DISPATCH = "crSelectDispatch"

# Tiny times (tenths of a second) so that a job takes well under a second; 80 GB so that every
# model fits at once; one model per family so that the select-then-dispatch Switch has a branch each.
TINY_CATALOG: dict[str, Any] = {
    "urgencies": {
        "realtime": {"deadline_s": 5},
        "high": {"deadline_s": 10},
        "normal": {"deadline_s": 20},
        "batch": {"deadline_s": 60},
    },
    "vram_headroom_mb": 512,
    "backends": [{"id": "sim-gpu", "gpu_name": "Test GPU", "vram_mb": 81920, "usd_per_hour": 1.0}],
    "models": [
        {
            "id": "flux1-tiny",
            "family": "flux1",
            "workflow": "flux_txt2img",
            "files": {
                "unet_name": "flux1-dev.safetensors",
                "clip_name1": "t5xxl_fp8_e4m3fn.safetensors",
                "clip_name2": "clip_l.safetensors",
                "vae_name": "ae.safetensors",
            },
            "purposes": ["text-to-image", "portrait", "product"],
            "vram_mb": 12000,
            "load_s": 0.2,
            "time": {"base_s": 0.1, "per_step_s": 0.02},
            "tiers": {
                "standard": {"steps": 10, "cfg": 1.0, "quality": 80},
                "high": {"steps": 20, "cfg": 1.0, "quality": 90},
            },
        },
        {
            "id": "sdxl-tiny",
            "family": "sdxl",
            "workflow": "checkpoint_txt2img",
            "files": {"ckpt_name": "sdxl.safetensors"},
            "purposes": ["text-to-image", "portrait", "product"],
            "vram_mb": 6000,
            "load_s": 0.1,
            "time": {"base_s": 0.1, "per_step_s": 0.01},
            "tiers": {
                "draft": {"steps": 4, "cfg": 1.0, "quality": 50},
                "standard": {"steps": 10, "cfg": 6.0, "quality": 70},
            },
        },
        {
            "id": "qwen-image-tiny",
            "family": "qwen-image",
            "workflow": "qwen_image_txt2img",
            "files": {
                "unet_name": "qwen_image_fp8_e4m3fn.safetensors",
                "clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                "vae_name": "qwen_image_vae.safetensors",
            },
            "purposes": ["text-rendering"],
            "vram_mb": 12000,
            "load_s": 0.2,
            "time": {"base_s": 0.1, "per_step_s": 0.02},
            "tiers": {"high": {"steps": 10, "cfg": 2.5, "quality": 89}},
        },
        {
            "id": "sd15-tiny",
            "family": "sd15",
            "workflow": "checkpoint_txt2img",
            "files": {"ckpt_name": "sd15.safetensors"},
            "purposes": ["illustration"],
            "vram_mb": 3000,
            "load_s": 0.1,
            "time": {"base_s": 0.1, "per_step_s": 0.01},
            "tiers": {"standard": {"steps": 10, "cfg": 7.0, "quality": 60}},
        },
    ],
}


def load_workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((N8N_DIR / name).read_text())
    return data


def nodes_by_name(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in wf["nodes"]}


# ---------------------------------------------------------------- the files themselves (no n8n needed)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_file_is_a_consistent_n8n_2_workflow(name: str) -> None:
    wf = load_workflow(name)
    assert wf["id"] == WORKFLOWS[name] and isinstance(wf["id"], str)
    assert wf["settings"]["executionOrder"] == "v1"
    names = [n["name"] for n in wf["nodes"]]
    assert len(names) == len(set(names)), "node names must be unique: connections are keyed by name"
    assert all(isinstance(n["id"], str) for n in wf["nodes"])
    for source, outputs in wf["connections"].items():
        assert source in names, f"connection from unknown node {source!r}"
        for targets in outputs["main"]:
            for t in targets:
                assert t["node"] in names, f"{source} -> unknown node {t['node']!r}"
    creds = json.loads((N8N_DIR / "credentials.example.json").read_text())
    cred_ids = {c["id"] for c in creds}
    for n in wf["nodes"]:
        if n["type"] == "n8n-nodes-base.httpRequest":
            assert "$env.COMFY_ROUTER_URL" in n["parameters"]["url"], n["name"]
            assert n["credentials"]["httpHeaderAuth"]["id"] in cred_ids, n["name"]


def eval_expression(expression: str, json_value: dict[str, Any]) -> Any:
    """Evaluate an n8n `={{ ... }}` expression that only reads `$json`, with Node."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    assert expression.startswith("={{") and expression.endswith("}}")
    code = (
        f"const $json = {json.dumps(json_value)};\n"
        f"process.stdout.write(JSON.stringify(({expression[3:-2]})));"
    )
    out = subprocess.run([node, "-e", code], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    ("body", "timeout_ms"),
    [
        ({"urgency": "batch"}, 660_000),
        ({"urgency": "realtime"}, 70_000),
        ({}, 120_000),  # normal is the router's default urgency
        ({"urgency": "high", "deadline_s": 300}, 360_000),
    ],
)
def test_generate_image_timeout_outlasts_the_urgency_deadline(body: dict[str, Any], timeout_ms: int) -> None:
    http = nodes_by_name(load_workflow("generate-image.json"))["Select and run"]
    assert eval_expression(http["parameters"]["options"]["timeout"], {"body": body}) == timeout_ms


def test_generate_image_sends_only_the_fields_given() -> None:
    http = nodes_by_name(load_workflow("generate-image.json"))["Select and run"]
    body = {"purpose": "portrait", "prompt": "a cat", "width": 512, "height": 512, "unrelated": 1}
    sent = json.loads(eval_expression(http["parameters"]["jsonBody"], {"body": body}))
    assert sent == {
        "purpose": "portrait",
        "prompt": "a cat",
        "width": 512,
        "height": 512,
        "wait": True,
        "output": "url",
    }


# ---------------------------------------------------------------- a live router and a live n8n


@dataclass
class Stack:
    router: LiveRouter
    n8n: N8n
    db: Database
    setup_s: float

    def webhook(self, path: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.post(f"{self.n8n.url}/webhook/{path}", json=body, headers=headers, timeout=120)

    def jobs_with_key(self, key: str) -> list[Job]:
        with self.db.session() as s:
            return list(s.scalars(select(Job).where(Job.idempotency_key == key)))

    def job(self, job_id: str) -> Job:
        with self.db.session() as s:
            job = s.get(Job, job_id)
        assert job is not None, f"no jobs row {job_id}"
        return job

    def usage(self, job_id: str) -> list[ModelUsageLog]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(ModelUsageLog)
                    .where(ModelUsageLog.job_id == job_id)
                    .order_by(ModelUsageLog.attempt)
                )
            )

    def count_jobs(self, key_prefix: str) -> int:
        with self.db.session() as s:
            return int(
                s.scalar(
                    select(func.count()).select_from(Job).where(Job.idempotency_key.like(key_prefix + "%"))
                )
                or 0
            )


@pytest.fixture(scope="module")
def n8n_binary() -> Path:
    binary = find_n8n()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(
                "n8n is not installed but CI is set: the n8n tests must run in CI. "
                "Run scripts/install-n8n.sh (make test does) before pytest.",
                pytrace=False,
            )
        pytest.skip("n8n is not installed: run scripts/install-n8n.sh (make test does)")
    return binary


@pytest.fixture(scope="module")
def stack(
    n8n_binary: Path, pg_server: PostgresServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("n8n-stack")
    if pg_server is not None:
        url = pg_server.create_database(f"n8n_{uuid.uuid4().hex[:12]}")
    else:
        url = os.environ["TEST_DATABASE_URL"]
    db = Database(url)
    db.migrate()
    catalog = write_catalog(tmp / "catalog.json", TINY_CATALOG)
    router = LiveRouter(catalog, url, workdir=tmp / "router")
    n8n: N8n | None = None
    try:
        router.start()
        n8n = N8n(n8n_binary, tmp / "n8n-home", env={"COMFY_ROUTER_URL": router.url})
        n8n.import_credentials(N8N_DIR / "credentials.example.json")
        # batch-generate as shipped, but polling every second instead of every ten.
        batch = load_workflow("batch-generate.json")
        prompts = nodes_by_name(batch)["Prompts"]["parameters"]
        assert "const POLL_EVERY_S = 10;" in prompts["jsCode"]
        prompts["jsCode"] = prompts["jsCode"].replace("const POLL_EVERY_S = 10;", "const POLL_EVERY_S = 1;")
        patched = tmp / "batch-generate.json"
        patched.write_text(json.dumps(batch))
        n8n.import_workflows(
            [N8N_DIR / "generate-image.json", patched, N8N_DIR / "select-then-dispatch.json"]
        )
        n8n.publish(GENERATE)
        n8n.publish(DISPATCH)
        n8n.start()
        # The webhook itself answers only once registered (404 before); a body without `purpose` is
        # refused by the router's validation, so the probe creates no job.
        probe = n8n.wait_for_webhook("generate-image", {}, timeout_s=90)
        assert probe.status_code == 422, probe.text
        yield Stack(router=router, n8n=n8n, db=db, setup_s=time.monotonic() - started)
    finally:
        if n8n is not None:
            n8n.stop()
        router.stop()
        db.dispose()


def assert_png(url: str, size: tuple[int, int]) -> None:
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("image/png")
    assert Image.open(io.BytesIO(r.content)).size == size


@pytest.mark.slow
@pytest.mark.postgres
def test_generate_image_webhook_answers_with_a_served_png_and_logs_one_job(stack: Stack) -> None:
    body = {
        "purpose": "portrait",
        "urgency": "normal",
        "quality": "high",
        "prompt": "a chef, studio light",
        "width": 512,
        "height": 384,
    }
    r = stack.webhook("generate-image", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["status"], out["model"], out["tier"], out["backend"]) == (
        "succeeded",
        "flux1-tiny",
        "high",
        "sim-gpu",
    )
    assert out["selection_reason"].startswith("flux1-tiny/high on sim-gpu")
    assert out["degraded"] is False and out["deadline_met"] is True
    assert out["image_url"] == f"{stack.router.url}/jobs/{out['job_id']}/outputs/0"
    assert_png(out["image_url"], (512, 384))

    execution_id = r.headers["X-N8n-Execution-Id"]
    assert str(out["execution_id"]) == execution_id
    job = stack.job(out["job_id"])
    assert job.idempotency_key == f"n8n-{GENERATE}-{execution_id}"
    assert (job.status, job.model_name, job.tier, job.purpose, job.urgency) == (
        "succeeded",
        "flux1-tiny",
        "high",
        "portrait",
        "normal",
    )
    assert job.request["prompt"] == "a chef, studio light" and job.request["width"] == 512
    assert job.cost_usd == pytest.approx(out["cost_usd"])
    rows = stack.usage(job.id)
    assert [(a.attempt, a.outcome, a.model_name, a.tier, a.width, a.height) for a in rows] == [
        (1, "ok", "flux1-tiny", "high", 512, 384)
    ]


@pytest.mark.slow
@pytest.mark.postgres
def test_each_webhook_execution_runs_exactly_one_job(stack: Stack) -> None:
    prefix = f"n8n-{GENERATE}-"
    before = stack.count_jobs(prefix)
    body = {"purpose": "illustration", "prompt": "a fox", "width": 256, "height": 256}
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: stack.webhook("generate-image", body), range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    executions = [a.headers["X-N8n-Execution-Id"] for a in answers]
    job_ids = [a.json()["job_id"] for a in answers]
    assert len(set(executions)) == 3 and len(set(job_ids)) == 3
    for execution_id, job_id in zip(executions, job_ids, strict=True):
        [job] = stack.jobs_with_key(f"{prefix}{execution_id}")
        assert job.id == job_id and job.status == "succeeded" and job.model_name == "sd15-tiny"
        assert [u.outcome for u in stack.usage(job_id)] == ["ok"]
    assert stack.count_jobs(prefix) - before == 3


@pytest.mark.slow
@pytest.mark.postgres
def test_n8n_retry_of_a_refused_request_reuses_the_key_and_the_job(stack: Stack) -> None:
    # No candidate fits a cost cap this low: the router records a failed job under the key and answers
    # 422. The HTTP node retries once (retryOnFail) with the same key and gets the same refusal back
    # (the router answers a repeated key with the job's own refusal), so there is exactly one job.
    body = {"purpose": "portrait", "prompt": "too cheap", "width": 512, "height": 512, "max_cost_usd": 1e-9}
    r = stack.webhook("generate-image", body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "no_feasible_candidate"
    jobs = stack.jobs_with_key(f"n8n-{GENERATE}-{r.headers['X-N8n-Execution-Id']}")
    assert [(j.id, j.status) for j in jobs] == [(err["details"]["job_id"], "failed")]
    assert stack.usage(jobs[0].id) == []


@pytest.mark.slow
@pytest.mark.postgres
def test_a_callers_idempotency_key_is_passed_through(stack: Stack) -> None:
    key = f"caller-{uuid.uuid4()}"
    body = {"purpose": "illustration", "prompt": "a lighthouse", "width": 256, "height": 256}
    first = stack.webhook("generate-image", body, headers={"Idempotency-Key": key})
    again = stack.webhook("generate-image", body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.headers["X-N8n-Execution-Id"] != again.headers["X-N8n-Execution-Id"]
    assert first.json()["job_id"] == again.json()["job_id"]
    [job] = stack.jobs_with_key(key)
    assert len(stack.usage(job.id)) == 1


@pytest.mark.slow
@pytest.mark.postgres
def test_generate_image_error_branch_answers_the_routers_error_and_status(stack: Stack) -> None:
    body = {"purpose": "no-such-purpose", "prompt": "x"}
    direct = requests.post(
        f"{stack.router.url}/select-and-run", json={**body, "wait": True, "output": "url"}, timeout=30
    )
    assert direct.status_code == 422
    r = stack.webhook("generate-image", body)
    assert r.status_code == direct.status_code, r.text
    assert r.json() == direct.json()
    assert r.json()["error"]["code"] == "validation_error"
    assert stack.jobs_with_key(f"n8n-{GENERATE}-{r.headers['X-N8n-Execution-Id']}") == []


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(
    ("request_body", "model", "dispatch_to"),
    [
        ({"purpose": "portrait"}, "flux1-tiny", "flux-workers"),
        ({"purpose": "portrait", "model": "sdxl-tiny", "quality": "standard"}, "sdxl-tiny", "sdxl-workers"),
        ({"purpose": "text-rendering"}, "qwen-image-tiny", "qwen-image-workers"),
        ({"purpose": "illustration"}, "sd15-tiny", "default-workers"),
    ],
)
def test_select_then_dispatch_webhook_routes_by_model(
    stack: Stack, request_body: dict[str, Any], model: str, dispatch_to: str
) -> None:
    r = stack.webhook("select-then-dispatch", {**request_body, "prompt": "x", "width": 512, "height": 512})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["dispatch_to"], out["model"], out["backend"]) == (dispatch_to, model, "sim-gpu")
    assert out["steps"] > 0 and out["selection_reason"].startswith(f"{model}/") and "ladder" in out
    assert "candidates" not in out  # the Set nodes drop the long candidate list
    job = stack.job(out["job_id"])
    assert (job.status, job.model_name) == ("selected", model)
    assert stack.usage(job.id) == []  # /select runs nothing


@pytest.mark.slow
@pytest.mark.postgres
def test_select_then_dispatch_reports_a_refusal(stack: Stack) -> None:
    r = stack.webhook("select-then-dispatch", {"purpose": "portrait", "max_cost_usd": 1e-9})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["dispatch_to"] is None and out["http_status"] == 422
    assert out["error"]["code"] == "no_feasible_candidate"


@pytest.mark.slow
@pytest.mark.postgres
def test_select_then_dispatch_runs_from_the_cli(stack: Stack) -> None:
    run = stack.n8n.execute(DISPATCH)
    assert run.returncode == 0 and run.error is None, run.output[-3000:]
    assert run.last_node == "Qwen-Image workers"  # the shipped example asks for text rendering
    [out] = run.items("Qwen-Image workers")
    assert (out["model"], out["dispatch_to"]) == ("qwen-image-tiny", "qwen-image-workers")
    assert "FLUX workers" not in run.nodes_run and "Selection failed" not in run.nodes_run
    assert stack.job(out["job_id"]).status == "selected"


@pytest.mark.slow
@pytest.mark.postgres
def test_batch_generate_submits_polls_and_summarises(stack: Stack) -> None:
    run = stack.n8n.execute(BATCH, timeout_s=240)
    assert run.returncode == 0 and run.error is None, run.output[-3000:]
    assert run.last_node == "Summary"
    submitted = run.items("Submit job")
    assert len(submitted) == 4
    assert all(s["id"] for s in submitted)
    assert run.runs("Wait") >= 1 and run.runs("Get job") == run.runs("Wait")

    [summary] = run.items("Summary")
    assert summary["jobs"] == 4 and summary["all_finished"] is True
    assert summary["by_status"] == {"succeeded": 4}
    assert summary["models"] == {"flux1-tiny": 2, "sd15-tiny": 1, "qwen-image-tiny": 1}
    assert 1 <= summary["rounds"] <= 66

    results = summary["results"]
    keys = []
    for index, result in enumerate(results):
        job = stack.job(result["id"])
        assert (job.status, job.urgency, job.client_id, job.model_name) == (
            "succeeded",
            "batch",
            "n8n-batch",
            result["model"],
        )
        assert job.request["prompt"] == result["prompt"] and job.request["wait"] is False
        assert job.idempotency_key is not None
        match = re.fullmatch(rf"n8n-{BATCH}-(\d+)-{index}", job.idempotency_key)
        assert match, job.idempotency_key
        keys.append(match.group(1))
        assert [u.outcome for u in stack.usage(job.id)] == ["ok"]
        assert_png(result["image_url"], (1024, 1024))
    assert len(set(keys)) == 1  # one execution
    total = sum(stack.job(r["id"]).cost_usd or 0.0 for r in results)
    assert total > 0 and summary["total_cost_usd"] == pytest.approx(total)
