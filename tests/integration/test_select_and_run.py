"""POST /select-and-run against the ComfyUI simulator over real sockets, on a real PostgreSQL.

A tiny catalog (tenths of seconds per step) keeps each scenario to a few seconds while keeping
the arithmetic of the real one: a high rung, a distilled fast rung, and a GPU that can be made
slower than the catalog believes, run out of memory, or die.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select

from router.api.app import create_app
from router.catalog import Catalog
from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from router.settings import Settings
from router.simulator import start_simulator

CKPT = {"family": "sdxl", "workflow": "checkpoint_txt2img", "purposes": ["text-to-image", "portrait"]}


def tiny_catalog(backends: list[dict[str, Any]]) -> Catalog:
    return Catalog.model_validate(
        {
            "urgencies": {"normal": {"deadline_s": 3.0}, "batch": {"deadline_s": 60.0}},
            "vram_headroom_mb": 512,
            "backends": backends,
            "models": [
                {
                    **CKPT,
                    "id": "hq",
                    "files": {"ckpt_name": "hq.safetensors"},
                    "vram_mb": 12_000,
                    "load_s": 0.2,
                    "time": {"base_s": 0.1, "per_step_s": 0.05},
                    "tiers": {
                        "standard": {"steps": 20, "cfg": 6.0, "quality": 80},
                        "high": {"steps": 30, "cfg": 6.0, "quality": 90},
                    },
                },
                {
                    **CKPT,
                    "id": "fast",
                    "files": {"ckpt_name": "fast.safetensors"},
                    "vram_mb": 4_000,
                    "load_s": 0.1,
                    "time": {"base_s": 0.1, "per_step_s": 0.05},
                    "tiers": {
                        "draft": {"steps": 4, "cfg": 1.0, "quality": 50},
                        "standard": {"steps": 6, "cfg": 1.0, "quality": 60},
                    },
                },
            ],
        }
    )


def backend(bid: str, vram_mb: int = 24_000) -> dict[str, Any]:
    return {"id": bid, "gpu_name": "Test GPU", "vram_mb": vram_mb, "usd_per_hour": 1.0}


class Fleet:
    def __init__(self, ids: list[str], **sim: Any) -> None:
        self.declared = tiny_catalog([backend(b) for b in ids])
        self.sims = {b: start_simulator(self.declared, gpu=b, port=0, **sim) for b in ids}
        with_urls = [{**backend(b), "url": h.url} for b, h in self.sims.items()]
        self.catalog = tiny_catalog(with_urls)

    def stop(self) -> None:
        for h in self.sims.values():
            h.stop()


@pytest.fixture
def make_app(pg_db: Database, tmp_path: Any) -> Iterator[Any]:
    fleets: list[Fleet] = []

    def make(ids: list[str] | None = None, **sim: Any) -> tuple[Flask, Fleet]:
        fleet = Fleet(ids or ["gpu"], **sim)
        fleets.append(fleet)
        app = create_app(
            Settings(migrate_on_start=False, data_dir=tmp_path), catalog=fleet.catalog, database=pg_db
        )
        return app, fleet

    yield make
    for f in fleets:
        f.stop()


def attempts(db: Database, job_id: str) -> list[ModelUsageLog]:
    with db.session() as s:
        return list(
            s.scalars(
                select(ModelUsageLog).where(ModelUsageLog.job_id == job_id).order_by(ModelUsageLog.attempt)
            )
        )


def test_a_job_runs_and_returns_a_real_png(make_app: Any, pg_db: Database) -> None:
    app, _ = make_app()
    c: FlaskClient = app.test_client()
    r = c.post(
        "/select-and-run",
        json={"purpose": "portrait", "urgency": "batch", "prompt": "a cat", "width": 512, "height": 512},
    )
    assert r.status_code == 200, r.json
    job = r.json
    assert job["status"] == "succeeded" and job["deadline_met"] is True and job["degraded"] is False
    assert (job["model"], job["tier"]) == ("hq", "high")
    png = c.get(job["outputs"][0]["url"])
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert Image.open(io.BytesIO(png.data)).size == (512, 512)
    rows = attempts(pg_db, job["id"])
    assert [(a.outcome, a.model_name, a.tier) for a in rows] == [("ok", "hq", "high")]
    assert rows[0].actual_s is not None and rows[0].cost_usd is not None and rows[0].cost_usd > 0


def test_a_slower_gpu_is_interrupted_early_and_a_lower_rung_meets_the_deadline(
    make_app: Any, pg_db: Database
) -> None:
    # The catalog says hq/high takes 0.2 + 0.1 + 30 x 0.05 = 1.8 s; the GPU is 3x slower: 5.4 s > 3 s.
    app, _ = make_app(slowdown=3.0)
    t0 = time.monotonic()
    r = app.test_client().post(
        "/select-and-run", json={"purpose": "portrait", "prompt": "x", "width": 1024, "height": 1024}
    )
    elapsed = time.monotonic() - t0
    job = r.json
    assert r.status_code == 200, job
    assert job["status"] == "succeeded" and job["degraded"] is True and job["deadline_met"] is True, job
    assert elapsed < 3.0
    rows = attempts(pg_db, job["id"])
    assert len(rows) >= 2
    first, last = rows[0], rows[-1]
    assert (first.model_name, first.tier, first.outcome) == ("hq", "high", "timeout")
    assert "predicted to finish" in (first.error or "")
    assert first.actual_s is not None and first.actual_s < 2.5  # interrupted early, not at the deadline
    assert last.outcome == "degraded" and last.quality_score is not None and last.quality_score < 90


def test_a_forced_oom_degrades_to_a_rung_that_needs_less_vram(make_app: Any, pg_db: Database) -> None:
    app, fleet = make_app()
    fleet.sims["gpu"].set_faults(oom_next=1)
    job = (
        app.test_client()
        .post("/select-and-run", json={"purpose": "portrait", "urgency": "batch", "prompt": "p"})
        .json
    )
    assert job["status"] == "succeeded", job
    rows = attempts(pg_db, job["id"])
    assert [r.outcome for r in rows][:1] == ["oom"]
    assert "out of memory" in (rows[0].error or "").lower()
    assert rows[-1].model_name == "fast"


def test_a_backend_killed_mid_job_fails_over_to_another(make_app: Any, pg_db: Database) -> None:
    app, fleet = make_app(["a", "b"], slowdown=2.0)
    client = app.test_client()
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            client.post(
                "/select-and-run", json={"purpose": "portrait", "urgency": "batch", "prompt": "p"}
            ).json
        )
    )
    thread.start()
    victim = _wait_for_running_backend(fleet)
    fleet.sims[victim].stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert result["status"] == "succeeded", result
    rows = attempts(pg_db, result["id"])
    assert rows[0].backend == victim and rows[0].outcome == "backend_error"
    assert rows[-1].backend != victim and rows[-1].outcome in ("ok", "degraded")


def test_a_dead_single_backend_fails_cleanly_with_a_reason(make_app: Any, pg_db: Database) -> None:
    app, fleet = make_app()
    fleet.sims["gpu"].stop()
    r = app.test_client().post(
        "/select-and-run", json={"purpose": "portrait", "urgency": "batch", "prompt": "p"}
    )
    assert r.status_code == 503, r.json
    assert r.json["error"]["code"] == "no_backend_available"
    with pg_db.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(("queued", "running")))) == 0
        )


def test_cancel_stops_the_comfyui_job(make_app: Any, pg_db: Database) -> None:
    app, fleet = make_app(slowdown=5.0)
    client = app.test_client()
    r = client.post(
        "/select-and-run", json={"purpose": "portrait", "urgency": "batch", "wait": False, "prompt": "p"}
    )
    assert r.status_code == 202
    job_id = r.json["id"]
    _wait_until(lambda: client.get(f"/jobs/{job_id}").json["status"] == "running")
    time.sleep(0.5)
    c = client.post(f"/jobs/{job_id}/cancel")
    assert c.status_code == 200, c.json
    assert c.json["status"] == "cancelled"
    rows = attempts(pg_db, job_id)
    assert rows[-1].outcome == "cancelled"
    state = fleet.sims["gpu"].state()
    assert state["queue"]["running"] is None and not state["queue"]["pending"], state


def test_the_same_idempotency_key_runs_once(make_app: Any, pg_db: Database) -> None:
    app, _ = make_app()
    client = app.test_client()
    body = {"purpose": "portrait", "urgency": "batch", "width": 512, "height": 512, "prompt": "p"}
    first = client.post("/select-and-run", json=body, headers={"Idempotency-Key": "n8n-exec-42"})
    second = client.post("/select-and-run", json=body, headers={"Idempotency-Key": "n8n-exec-42"})
    assert first.status_code == 200 and second.status_code == 200
    assert first.json["id"] == second.json["id"]
    with pg_db.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(Job).where(Job.idempotency_key == "n8n-exec-42")) == 1
        )
    assert len(attempts(pg_db, first.json["id"])) == 1


def test_output_as_base64_and_feedback(make_app: Any) -> None:
    app, _ = make_app()
    client = app.test_client()
    job = client.post(
        "/select-and-run",
        json={
            "purpose": "portrait",
            "urgency": "batch",
            "output": "base64",
            "prompt": "p",
            "width": 512,
            "height": 512,
        },
    ).json
    data = base64.b64decode(job["outputs"][0]["base64"])
    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert client.post(f"/jobs/{job['id']}/feedback", json={"rating": 5}).status_code == 201
    assert client.post(f"/jobs/{job['id']}/feedback", json={"rating": 9}).status_code == 422


def test_backends_route_says_simulated_and_shows_live_state(make_app: Any) -> None:
    app, _ = make_app()
    client = app.test_client()
    client.post(
        "/select-and-run",
        json={"purpose": "portrait", "urgency": "batch", "width": 512, "height": 512, "prompt": "p"},
    )
    rows = client.get("/backends").json["backends"]
    assert rows[0]["healthy"] is True and rows[0]["simulated"] is True
    assert rows[0]["loaded_model"] == "hq"
    assert rows[0]["vram_free_mb"] is not None and rows[0]["vram_free_mb"] < rows[0]["vram_total_mb"]


def test_callback_to_a_host_off_the_allowlist_is_refused(make_app: Any) -> None:
    app, _ = make_app()
    r = app.test_client().post(
        "/select-and-run", json={"purpose": "portrait", "callback_url": "http://10.0.0.5/hook", "wait": False}
    )
    assert r.status_code == 422
    assert r.json["error"]["details"][0]["field"] == "callback_url"


@pytest.mark.parametrize(
    ("allowlist", "host"),
    [("", "127.0.0.1"), ("", "10.0.0.5"), ("hooks.example.com", "127.0.0.1"), ("127.0.0.1", "10.1.2.3")],
    ids=["loopback-no-list", "private-no-list", "loopback-not-listed", "private-not-listed"],
)
def test_callbacks_to_hosts_off_the_allowlist_are_refused(
    pg_db: Database, tmp_path: Any, allowlist: str, host: str
) -> None:
    fleet = Fleet(["gpu"])
    try:
        settings = Settings(migrate_on_start=False, data_dir=tmp_path, callback_hosts_csv=allowlist)
        app = create_app(settings, catalog=fleet.catalog, database=pg_db)
        r = app.test_client().post(
            "/select-and-run",
            json={"purpose": "portrait", "prompt": "p", "callback_url": f"http://{host}/hook", "wait": False},
        )
        assert r.status_code == 422, r.json
        assert r.json["error"]["details"][0]["field"] == "callback_url"
        assert host in r.json["error"]["message"]
    finally:
        fleet.stop()


def test_a_callback_to_an_allowlisted_loopback_host_is_delivered(pg_db: Database, tmp_path: Any) -> None:
    """127.0.0.1 is refused unless listed; listed, the finished job is POSTed there."""
    import json as jsonlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(jsonlib.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fleet = Fleet(["gpu"])
    try:
        settings = Settings(migrate_on_start=False, data_dir=tmp_path, callback_hosts_csv="127.0.0.1")
        app = create_app(settings, catalog=fleet.catalog, database=pg_db)
        url = f"http://127.0.0.1:{server.server_port}/hook"
        r = app.test_client().post(
            "/select-and-run",
            json={
                "purpose": "portrait",
                "urgency": "batch",
                "prompt": "p",
                "callback_url": url,
                "wait": False,
            },
        )
        assert r.status_code == 202, r.json
        _wait_until(lambda: bool(received))
        assert received[0]["id"] == r.json["id"] and received[0]["status"] == "succeeded"
    finally:
        fleet.stop()
        server.shutdown()


def test_metrics_count_attempts_and_selections(make_app: Any) -> None:
    app, _ = make_app()
    client = app.test_client()
    client.post(
        "/select-and-run",
        json={"purpose": "portrait", "urgency": "batch", "width": 512, "height": 512, "prompt": "p"},
    )
    text = client.get("/metrics").get_data(as_text=True)
    assert 'comfy_router_attempts_total{backend="gpu",model="hq",outcome="ok"} 1.0' in text
    assert "comfy_router_selections_total" in text and 'comfy_router_backend_up{backend="gpu"} 1.0' in text
    assert 'comfy_router_http_requests_total{method="POST",route="/select-and-run",status="200"} 1.0' in text


def _wait_until(cond: Any, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def _wait_for_running_backend(fleet: Fleet, timeout_s: float = 20.0) -> str:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for bid, h in fleet.sims.items():
            if h.state()["queue"]["running"]:
                time.sleep(0.3)  # a few steps in
                return bid
        time.sleep(0.02)
    raise AssertionError("no backend started the job")


def test_a_missing_prompt_is_a_422_before_anything_runs(make_app: Any, pg_db: Database) -> None:
    app, _ = make_app()
    r = app.test_client().post("/select-and-run", json={"purpose": "portrait", "urgency": "batch"})
    assert r.status_code == 422
    assert r.json["error"]["details"] == [{"field": "prompt", "message": "required"}]
    with pg_db.session() as s:
        job = s.scalars(select(Job)).one()
        assert job.status == "failed"
        assert s.scalar(select(func.count()).select_from(ModelUsageLog)) == 0


def test_a_backend_without_the_custom_nodes_is_filtered_out_with_a_reason(
    pg_db: Database, tmp_path: Any
) -> None:
    from router.catalog import load_catalog
    from tests.conftest import ROOT

    shipped = load_catalog(ROOT / "models_config.json")
    plain = start_simulator(shipped, gpu="a100", port=0, custom_nodes=False)
    try:
        backends = tuple(b.model_copy(update={"url": plain.url}) for b in shipped.backends[:1])
        cat = shipped.model_copy(update={"backends": backends})
        app = create_app(Settings(migrate_on_start=False, data_dir=tmp_path), catalog=cat, database=pg_db)
        img = _png_b64(64, 64)
        r = app.test_client().post(
            "/select", json={"purpose": "face-swap", "urgency": "batch", "images": [img], "face_image": img}
        )
        assert r.status_code == 422, r.json
        rejections = [j for c in r.json["error"]["details"]["candidates"] for j in c["rejections"]]
        unsupported = [j for j in rejections if j["code"] == "workflow_unsupported"]
        assert unsupported and "ReActorFaceSwap" in unsupported[0]["message"]
    finally:
        plain.stop()


def _png_b64(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_img2img_uploads_the_input_image_and_runs(pg_db: Database, tmp_path: Any) -> None:
    from router.catalog import load_catalog
    from router.simulator.testing import fast_catalog
    from tests.conftest import ROOT

    fast = fast_catalog(load_catalog(ROOT / "models_config.json"))
    sim = start_simulator(fast, gpu="a100", port=0)
    try:
        backends = tuple(b.model_copy(update={"url": sim.url}) for b in fast.backends[:1])
        cat = fast.model_copy(update={"backends": backends})
        app = create_app(Settings(migrate_on_start=False, data_dir=tmp_path), catalog=cat, database=pg_db)
        job = (
            app.test_client()
            .post(
                "/select-and-run",
                json={
                    "purpose": "img2img",
                    "urgency": "batch",
                    "prompt": "as a watercolour",
                    "images": [_png_b64(512, 512)],
                    "width": 512,
                    "height": 512,
                },
            )
            .json
        )
        assert job["status"] == "succeeded", job
        assert job["model"] in {"flux1-dev-fp16", "flux1-dev-fp8", "sdxl-base", "sd15"}
        state = sim.state()
        assert state["queue"]["running"] is None
    finally:
        sim.stop()


def test_the_same_key_after_a_refusal_gets_the_same_refusal(make_app: Any, pg_db: Database) -> None:
    app, _ = make_app()
    client = app.test_client()
    body = {"purpose": "portrait", "prompt": "p", "max_cost_usd": 1e-9}
    first = client.post("/select-and-run", json=body, headers={"Idempotency-Key": "refused-1"})
    second = client.post("/select-and-run", json=body, headers={"Idempotency-Key": "refused-1"})
    assert first.status_code == second.status_code == 422
    assert first.json["error"]["code"] == second.json["error"]["code"] == "no_feasible_candidate"
    with pg_db.session() as s:
        job = s.scalars(select(Job).where(Job.idempotency_key == "refused-1")).one()
        assert job.status == "failed" and job.error


def test_models_shows_observed_times_per_tier(make_app: Any) -> None:
    app, _ = make_app()
    client = app.test_client()
    body = {"purpose": "portrait", "urgency": "batch", "prompt": "p", "width": 512, "height": 512}
    for _ in range(2):
        assert client.post("/select-and-run", json=body).json["status"] == "succeeded"
    models = {m["id"]: m for m in client.get("/models").json["models"]}
    hq = models["hq"]["observed"]["high"]
    assert hq["runs"] == 2 and hq["failures"] == 0
    assert 0 < hq["p50_s"] <= hq["p95_s"]
    assert models["fast"]["observed"] == {}
