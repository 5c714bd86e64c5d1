"""`comfy-router serve` as `make run` starts it: gunicorn on loopback, SQLite, the built-in simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import ROOT
from tests.support.postgres import free_port


def test_serve_answers_select_over_http_with_sqlite(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "COMFY_ROUTER_CONFIG": str(ROOT / "models_config.json")}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise AssertionError("router did not start")
        r = requests.post(f"{base}/select", json={"purpose": "product", "urgency": "high"}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["model"]
        assert (
            tmp_path / "comfy_router.db"
        ).exists()  # the embedded default: SQLite in the working directory
        backends = requests.get(f"{base}/backends", timeout=10).json()
        assert backends["simulated"] == ["a100", "rtx4090"]
        assert all(b["simulated"] and b["healthy"] for b in backends["backends"])
        run = requests.post(
            f"{base}/select-and-run",
            json={
                "purpose": "portrait",
                "urgency": "realtime",
                "prompt": "a chef",
                "width": 512,
                "height": 512,
            },
            timeout=60,
        )
        assert run.status_code == 200, run.text
        job = run.json()
        assert job["status"] == "succeeded" and job["deadline_met"] is True
        image = requests.get(base + job["outputs"][0]["url"], timeout=10)
        assert image.content[:4] == b"\x89PNG"
        bad = requests.post(
            f"{base}/select", data="nope", headers={"Content-Type": "application/json"}, timeout=10
        )
        assert bad.status_code == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert b"gunicorn" in out.lower() or b"Listening at" in out
