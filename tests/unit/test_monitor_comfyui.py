"""ComfyUI probes: parsing ComfyUI's answers, and a backend that is down being a row, not a crash."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from monitor.comfyui import ComfyProbe, parse_queue, parse_system_stats
from monitor.rows import blank_row
from monitor.targets import BackendTarget

TS = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "comfyui" / "samples"

# GET /system_stats from upstream ComfyUI 0.8.0 on CPU (shared/comfyui/samples/system_stats.json).
SYSTEM_STATS: dict[str, Any] = {
    "system": {
        "os": "linux",
        "ram_total": 25276502016,
        "ram_free": 23713144832,
        "comfyui_version": "0.8.0",
        "python_version": "3.11.7",
        "pytorch_version": "2.14.1+cu130",
        "embedded_python": False,
        "argv": ["main.py", "--cpu", "--listen", "127.0.0.1", "--port", "8188"],
    },
    "devices": [
        {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": 25276502016,
            "vram_free": 23713144832,
            "torch_vram_total": 25276502016,
            "torch_vram_free": 23713144832,
        }
    ],
}
# GET /queue with one prompt running and two waiting (shape of queue_with_pending.json, graphs cut).
QUEUE: dict[str, Any] = {
    "queue_running": [[13, "6ad15f89", {}, {"client_id": "c"}, ["30"]]],
    "queue_pending": [[14, "3b93b22c", {}, {"client_id": "c"}, ["30"]], [15, "31db7d21", {}, {}, ["30"]]],
}
MB = 1024 * 1024


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    def raise_for_status(self) -> None:
        if self.status >= 400:
            raise requests.HTTPError(f"{self.status} Server Error")

    def json(self) -> Any:
        if isinstance(self.body, str):
            return json.loads(self.body)  # raises ValueError, like requests on a non-JSON body
        return self.body


class FakeSession:
    """Answers by URL; an exception instance in `answers` is raised (a transport failure)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.timeouts: list[tuple[float, float]] = []

    def get(self, url: str, *, timeout: tuple[float, float]) -> FakeResponse:
        self.timeouts.append(timeout)
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return FakeResponse(status, body)


def probe(targets: list[BackendTarget], answers: dict[str, Any]) -> tuple[ComfyProbe, FakeSession]:
    session = FakeSession(answers)
    return (
        ComfyProbe(
            targets, host="h", logger=logging.getLogger("test.comfy"), session_factory=lambda: session
        ),
        session,
    )


def comfy_row(**fields: Any) -> dict[str, Any]:
    row = blank_row(TS, "h", "comfyui")
    row.update(fields)
    return row


GOOD = BackendTarget("good", "http://good:8188")
UP_ROW = comfy_row(
    backend="good",
    gpu_name="cpu",
    gpu_index=None,
    vram_total_mb=25276502016 / MB,
    vram_free_mb=23713144832 / MB,
    vram_used_mb=(25276502016 - 23713144832) / MB,
    ram_total_mb=25276502016 / MB,
    ram_used_mb=(25276502016 - 23713144832) / MB,
    queue_running=1,
    queue_pending=2,
    up=True,
)


def answers_for(target: BackendTarget, system_stats: Any, queue: Any) -> dict[str, Any]:
    return {f"{target.url}/system_stats": system_stats, f"{target.url}/queue": queue}


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        pytest.param(answers_for(GOOD, (200, SYSTEM_STATS), (200, QUEUE)), UP_ROW, id="up"),
        pytest.param(
            answers_for(GOOD, requests.ConnectionError("Connection refused"), (200, QUEUE)),
            comfy_row(backend="good", up=False, error="ConnectionError: Connection refused"),
            id="connection-refused",
        ),
        pytest.param(
            answers_for(GOOD, requests.Timeout("read timed out"), (200, QUEUE)),
            comfy_row(backend="good", up=False, error="Timeout: read timed out"),
            id="timeout",
        ),
        pytest.param(
            answers_for(GOOD, (500, "oops"), (200, QUEUE)),
            comfy_row(backend="good", up=False, error="HTTPError: 500 Server Error"),
            id="http-500",
        ),
        pytest.param(
            answers_for(GOOD, (200, "<html>not json</html>"), (200, QUEUE)),
            comfy_row(
                backend="good", up=False, error="JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
            ),
            id="not-json",
        ),
        pytest.param(
            answers_for(GOOD, (200, SYSTEM_STATS), (200, {"queue_running": []})),
            {
                **UP_ROW,
                "queue_running": None,
                "queue_pending": None,
                "up": False,
                "error": "KeyError: 'queue_pending'",
            },
            id="queue-without-pending-keeps-what-was-read",
        ),
    ],
)
def test_probe_rows(answers: dict[str, Any], expected: dict[str, Any]) -> None:
    comfy, session = probe([GOOD], answers)
    try:
        assert comfy.read(TS) == [expected]
    finally:
        comfy.close()
    assert session.timeouts[0] == (1.0, 2.0)


def test_rows_come_back_in_target_order_and_a_down_backend_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = BackendTarget("dead", "http://dead:8188")
    answers = {
        **answers_for(GOOD, (200, SYSTEM_STATS), (200, QUEUE)),
        **answers_for(dead, requests.ConnectionError("refused"), (200, QUEUE)),
    }
    comfy, _ = probe([dead, GOOD], answers)
    with caplog.at_level(logging.INFO, logger="test.comfy"):
        first, second = comfy.read(TS), comfy.read(TS)
        answers.update(answers_for(dead, (200, SYSTEM_STATS), (200, QUEUE)))
        third = comfy.read(TS)
    comfy.close()
    assert [(r["backend"], r["up"]) for r in first] == [("dead", False), ("good", True)]
    assert second == first
    assert [(r["backend"], r["up"]) for r in third] == [("dead", True), ("good", True)]
    assert [r.getMessage() for r in caplog.records] == [
        "backend dead (http://dead:8188): down: ConnectionError: refused",
        "backend dead (http://dead:8188): up again",
    ]


def test_no_backends_no_rows() -> None:
    comfy, _ = probe([], {})
    assert comfy.read(TS) == []
    comfy.close()


def test_gpu_device_fields() -> None:
    stats = {
        "system": {"ram_total": 64 * 1024 * MB, "ram_free": 60 * 1024 * MB},
        "devices": [
            {
                "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
                "type": "cuda",
                "index": 0,
                "vram_total": 24564 * MB,
                "vram_free": 20000 * MB,
            }
        ],
    }
    assert parse_system_stats(stats) == {
        "gpu_name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
        "gpu_index": 0,
        "vram_total_mb": 24564.0,
        "vram_free_mb": 20000.0,
        "vram_used_mb": 4564.0,
        "ram_total_mb": 65536.0,
        "ram_used_mb": 4096.0,
    }


def test_missing_numbers_stay_null() -> None:
    assert parse_system_stats({"system": {}, "devices": [{"name": "cpu"}]}) == {
        "gpu_name": "cpu",
        "gpu_index": None,
        "vram_total_mb": None,
        "vram_free_mb": None,
        "vram_used_mb": None,
        "ram_total_mb": None,
        "ram_used_mb": None,
    }


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="the captured ComfyUI samples are not next to this checkout")
def test_every_captured_system_stats_and_queue_parses() -> None:
    def body(path: Path) -> Any:
        doc = json.loads(path.read_text())
        return doc.get("body", doc)  # some captures keep the HTTP status next to the body

    for path in sorted(SAMPLES.glob("*system_stats*.json")):
        assert parse_system_stats(body(path))["vram_total_mb"] > 0, path.name
    counts = {
        path.stem: parse_queue(body(path))
        for path in sorted(SAMPLES.glob("queue_*.json"))
        if "queue_running" in body(path)
    }
    assert counts["queue_with_pending"] == {"queue_running": 1, "queue_pending": 2}
    assert counts["queue_idle"] == {"queue_running": 0, "queue_pending": 0}
