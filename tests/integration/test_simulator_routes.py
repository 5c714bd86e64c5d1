"""The simulator's other routes over real sockets: queue control, history, uploads, node info, jobs,
fault injection, the custom-node switch and the command line."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from router.catalog import Catalog
from router.simulator import SimulatorHandle, start_simulator
from router.simulator.__main__ import main as simulator_main
from router.simulator.testing import WsRecorder, checkpoint_graph, fast_catalog, message_types, submit

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT.parent / "shared" / "comfyui" / "samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="the ComfyUI captures are not available")
SD15 = "v1-5-pruned-emaonly.safetensors"
JsonDict = dict[str, Any]


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def fast(catalog: Catalog) -> Catalog:
    return fast_catalog(catalog)


@pytest.fixture
def sim(fast: Catalog) -> Iterator[SimulatorHandle]:
    with start_simulator(fast) as handle:
        yield handle


@pytest.fixture
def slow_sim(fast: Catalog) -> Iterator[SimulatorHandle]:
    """Sampling takes 0.05 s a step: a 200-step prompt keeps the worker busy for 10 s."""
    with start_simulator(fast_catalog(fast, per_step_s=0.05)) as handle:
        yield handle


def queue(sim: SimulatorHandle) -> JsonDict:
    body: JsonDict = requests.get(f"{sim.url}/queue", timeout=5).json()
    return body


def pending_ids(sim: SimulatorHandle) -> list[str]:
    return [item[1] for item in queue(sim)["queue_pending"]]


# ---- queue control ----


def test_front_delete_clear_and_interrupt(slow_sim: SimulatorHandle) -> None:
    url = slow_sim.url
    with WsRecorder(url) as ws:
        ws.next()
        running = submit(url, checkpoint_graph(SD15, steps=200, seed=1), ws.client_id)
        ws.until(lambda m: m["type"] == "progress")
        later = [submit(url, checkpoint_graph(SD15, steps=200, seed=s)) for s in (2, 3)]
        response = requests.post(
            f"{url}/prompt", json={"prompt": checkpoint_graph(SD15, seed=4), "front": True}, timeout=5
        )
        front = response.json()
        assert front["number"] == -3
        state = queue(slow_sim)
        assert [item[1] for item in state["queue_running"]] == [running]
        assert len(state["queue_running"][0]) == 5
        assert pending_ids(slow_sim) == [front["prompt_id"], *later]
        requests.post(f"{url}/queue", json={"delete": [later[1]]}, timeout=5)
        assert pending_ids(slow_sim) == [front["prompt_id"], later[0]]
        requests.post(f"{url}/queue", json={"clear": True}, timeout=5)
        assert pending_ids(slow_sim) == []
        requests.post(f"{url}/interrupt", timeout=5)  # global: no body
        ws.until_done(running)
    assert queue(slow_sim) == {"queue_running": [], "queue_pending": []}
    assert requests.get(f"{url}/prompt", timeout=5).json() == {"exec_info": {"queue_remaining": 0}}


def test_front_prompt_runs_next(slow_sim: SimulatorHandle) -> None:
    url = slow_sim.url
    with WsRecorder(url) as ws:
        ws.next()
        first = submit(url, checkpoint_graph(SD15, steps=200, seed=1), ws.client_id)
        ws.until(lambda m: m["type"] == "progress")
        back = submit(url, checkpoint_graph(SD15, steps=1, seed=2), ws.client_id)
        front = submit(url, checkpoint_graph(SD15, steps=1, seed=3), ws.client_id, front=True)
        requests.post(f"{url}/interrupt", json={"prompt_id": first}, timeout=5)
        ws.until_done(back)
    starts = [m["data"]["prompt_id"] for m in ws.messages if m["type"] == "execution_start"]
    assert starts == [first, front, back]


def test_free_during_a_run_applies_after_it(slow_sim: SimulatorHandle) -> None:
    with WsRecorder(slow_sim.url) as ws:
        ws.next()
        prompt_id = submit(slow_sim.url, checkpoint_graph(SD15, steps=6), ws.client_id)
        ws.until(lambda m: m["type"] == "progress")
        requests.post(f"{slow_sim.url}/free", json={"unload_models": True}, timeout=5)
        assert [m["id"] for m in slow_sim.state()["loaded_models"]] == ["sd15"]
        ws.until_done(prompt_id)
    assert slow_sim.state()["loaded_models"] == []


def test_without_client_id_only_progress_is_broadcast(sim: SimulatorHandle) -> None:
    with WsRecorder(sim.url) as ws:
        ws.next()
        prompt_id = submit(sim.url, checkpoint_graph(SD15, steps=3))
        ws.until(lambda m: m["type"] == "progress" and m["data"]["value"] == 3)
        ws.until(lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
    assert set(message_types(ws.messages)) == {"status", "progress_state", "progress"}
    extra_data = requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json()[prompt_id]["prompt"][3]
    assert list(extra_data) == ["create_time"]


def test_feature_flags_handshake(sim: SimulatorHandle) -> None:
    with WsRecorder(sim.url) as ws:
        ws.next()
        ws.send({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        reply = ws.next()
    assert reply["type"] == "feature_flags"
    assert reply["data"]["max_upload_size"] == 104857600


def test_history_routes(sim: SimulatorHandle) -> None:
    with WsRecorder(sim.url) as ws:
        ws.next()
        ids = []
        for seed in range(4):
            ids.append(submit(sim.url, checkpoint_graph(SD15, steps=1, seed=seed), ws.client_id))
            ws.until_done(ids[-1])
    assert list(requests.get(f"{sim.url}/history", timeout=5).json()) == ids
    assert list(requests.get(f"{sim.url}/history?max_items=3", timeout=5).json()) == ids[1:]
    assert requests.get(f"{sim.url}/history/unknown", timeout=5).json() == {}
    requests.post(f"{sim.url}/history", json={"delete": [ids[0]]}, timeout=5)
    assert list(requests.get(f"{sim.url}/api/history", timeout=5).json()) == ids[1:]
    requests.post(f"{sim.url}/history", json={"clear": True}, timeout=5)
    assert requests.get(f"{sim.url}/history", timeout=5).json() == {}


def test_jobs_api(sim: SimulatorHandle) -> None:
    with WsRecorder(sim.url) as ws:
        ws.next()
        done = submit(sim.url, checkpoint_graph(SD15, steps=1), ws.client_id)
        ws.until_done(done)
    jobs = requests.get(f"{sim.url}/api/jobs", timeout=5).json()
    assert jobs["pagination"] == {"offset": 0, "limit": None, "total": 1, "has_more": False}
    job = jobs["jobs"][0]
    assert (job["id"], job["status"], job["outputs_count"]) == (done, "completed", 1)
    assert job["preview_output"] == {
        "filename": "sim_00001_.png",
        "subfolder": "",
        "type": "output",
        "nodeId": "9",
        "mediaType": "images",
    }
    detail = requests.get(f"{sim.url}/api/jobs/{done}", timeout=5).json()
    assert set(detail) >= {"outputs", "execution_status", "workflow"}
    missing = requests.get(f"{sim.url}/api/jobs/nope", timeout=5)
    assert (missing.status_code, missing.json()) == (404, {"error": "Job not found"})


# ---- node info and the small GET routes ----


@needs_samples
def test_node_info_and_static_routes(sim: SimulatorHandle) -> None:
    ksampler = requests.get(f"{sim.url}/object_info/KSampler", timeout=5).json()
    assert ksampler == sample("object_info_KSampler.json")
    everything = requests.get(f"{sim.url}/api/object_info", timeout=5).json()
    assert {"UNETLoader", "ReActorFaceSwap", "IPAdapterAdvanced"} <= set(everything)
    assert requests.get(f"{sim.url}/object_info/NoSuchNode", timeout=5).json() == {}
    assert requests.get(f"{sim.url}/features", timeout=5).json() == sample("features.json")
    assert requests.get(f"{sim.url}/embeddings", timeout=5).json() == []
    assert requests.get(f"{sim.url}/models", timeout=5).json()[:21] == sample("models.json")
    assert SD15 in requests.get(f"{sim.url}/models/checkpoints", timeout=5).json()
    assert requests.get(f"{sim.url}/models/nonexistent", timeout=5).status_code == 404
    assert isinstance(requests.get(f"{sim.url}/extensions", timeout=5).json(), list)


@needs_samples
def test_system_stats_names_the_device_as_simulated(sim: SimulatorHandle) -> None:
    stats = requests.get(f"{sim.url}/system_stats", timeout=5).json()
    captured = sample("system_stats.json")
    assert list(stats) == list(captured)
    assert list(stats["system"]) == list(captured["system"])
    assert list(stats["devices"][0]) == list(captured["devices"][0])
    assert stats["system"]["comfyui_version"] == "0.8.0"
    device = stats["devices"][0]
    assert device["name"] == "Simulated NVIDIA A100 80GB PCIe (comfy-router simulator)"
    assert device["vram_total"] == 81920 * 1024 * 1024


def test_custom_nodes_can_be_switched_off(fast: Catalog) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {
            "class_type": "ReActorRestoreFace",
            "inputs": {
                "image": ["1", 0],
                "facedetection": "retinaface_resnet50",
                "model": "GFPGANv1.4.pth",
                "visibility": 1.0,
                "codeformer_weight": 0.5,
            },
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "face"}},
    }
    with start_simulator(fast, custom_nodes=False) as sim:
        response = requests.post(f"{sim.url}/prompt", json={"prompt": graph}, timeout=5)
        assert response.status_code == 400
        assert (
            response.json()["error"]["message"]
            == "Cannot execute because node ReActorRestoreFace does not exist."
        )
    with start_simulator(fast) as sim, WsRecorder(sim.url) as ws:
        ws.next()
        prompt_id = submit(sim.url, graph, ws.client_id)
        assert message_types(ws.until_done(prompt_id))[-3] == "execution_success"


# ---- uploads ----


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(sim: SimulatorHandle, data: bytes, name: str = "face.png", **fields: str) -> JsonDict:
    response = requests.post(
        f"{sim.url}/upload/image", files={"image": (name, data, "image/png")}, data=fields, timeout=5
    )
    assert response.status_code == 200, response.text
    body: JsonDict = response.json()
    return body


def test_upload_then_load_image(sim: SimulatorHandle) -> None:
    assert upload(sim, png(200, 100, (255, 0, 0))) == {"name": "face.png", "subfolder": "", "type": "input"}
    assert upload(sim, png(200, 100, (255, 0, 0)))["name"] == "face.png"  # same bytes: same file
    assert upload(sim, png(20, 10, (0, 0, 255)))["name"] == "face (1).png"
    assert upload(sim, png(20, 10, (0, 0, 255)), overwrite="true")["name"] == "face.png"
    choices = requests.get(f"{sim.url}/object_info/LoadImage", timeout=5).json()["LoadImage"]
    assert choices["input"]["required"]["image"][0] == ["example.png", "face (1).png", "face.png"]
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "face (1).png"}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "lanczos",
                "width": 0,
                "height": 50,
                "crop": "disabled",
            },
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "scaled/out"}},
    }
    with WsRecorder(sim.url) as ws:
        ws.next()
        prompt_id = submit(sim.url, graph, ws.client_id)
        ws.until_done(prompt_id)
    image = requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json()[prompt_id]["outputs"]["3"][
        "images"
    ][0]
    assert image == {"filename": "out_00001_.png", "subfolder": "scaled", "type": "output"}
    content = requests.get(f"{sim.url}/view", params=image, timeout=5).content
    with Image.open(io.BytesIO(content)) as out:
        assert out.size == (100, 50)
        assert out.getpixel((50, 25)) == (0, 0, 255)
    missing = requests.post(f"{sim.url}/upload/image", data={"type": "input"}, timeout=5)
    assert missing.status_code == 400


# ---- fault injection ----


def test_http_500_and_hang_faults(sim: SimulatorHandle) -> None:
    response = requests.post(f"{sim.url}/sim/faults", json={"http_500": True}, timeout=5)
    assert response.json()["http_500"] is True
    broken = requests.get(f"{sim.url}/api/system_stats", timeout=5)
    assert (broken.status_code, broken.headers["Content-Type"]) == (500, "text/plain; charset=utf-8")
    assert requests.get(f"{sim.url}/sim/state", timeout=5).status_code == 200
    sim.set_faults(reset=True, hang=True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sim.url}/system_stats", timeout=0.3)
    sim.set_faults(hang=False)
    assert requests.get(f"{sim.url}/system_stats", timeout=5).status_code == 200
    bad = requests.post(f"{sim.url}/sim/faults", json={"explode": True}, timeout=5)
    assert bad.status_code == 400


def test_oom_fault_fails_the_next_prompt_only(sim: SimulatorHandle) -> None:
    sim.set_faults(oom_next=1)
    with WsRecorder(sim.url) as ws:
        ws.next()
        failed = submit(sim.url, checkpoint_graph(SD15, seed=1), ws.client_id)
        error = next(m for m in ws.until_done(failed) if m["type"] == "execution_error")
        ok = submit(sim.url, checkpoint_graph(SD15, seed=2), ws.client_id)
        assert message_types(ws.until_done(ok))[-3] == "execution_success"
    assert error["data"]["exception_type"] == "torch.OutOfMemoryError"
    assert error["data"]["exception_message"].startswith("CUDA out of memory. Tried to allocate ")
    assert sim.state()["faults"]["oom_next"] == 0


def test_drop_ws_fault_cuts_sockets_but_the_prompt_completes(slow_sim: SimulatorHandle) -> None:
    slow_sim.set_faults(drop_ws_after_steps=2)
    ws = WsRecorder(slow_sim.url)
    try:
        ws.next()
        prompt_id = submit(slow_sim.url, checkpoint_graph(SD15, steps=6), ws.client_id)
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            ws.until_done(prompt_id)
    finally:
        ws.close()
    progress = [m["data"]["value"] for m in ws.messages if m["type"] == "progress"]
    assert progress == [1, 2]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        entry = requests.get(f"{slow_sim.url}/history/{prompt_id}", timeout=5).json()
        if entry:
            assert entry[prompt_id]["status"]["status_str"] == "success"
            break
        time.sleep(0.05)
    else:
        pytest.fail("the prompt did not finish after its socket was dropped")
    assert slow_sim.state()["faults"]["drop_ws_after_steps"] is None


def test_reconnecting_client_is_told_the_running_node(slow_sim: SimulatorHandle) -> None:
    with WsRecorder(slow_sim.url, "same-client") as first:
        first.next()
        prompt_id = submit(slow_sim.url, checkpoint_graph(SD15, steps=20), first.client_id)
        first.until(lambda m: m["type"] == "progress")
    with WsRecorder(slow_sim.url, "same-client") as again:
        assert again.next()["data"]["sid"] == "same-client"
        assert again.next() == {"type": "executing", "data": {"node": "3"}}
        again.until_done(prompt_id)


# ---- the command line ----


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_cli_serves_until_terminated() -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "router.simulator",
        "serve",
        "--port",
        str(port),
        "--gpu",
        "rtx4090",
        "--config",
        str(ROOT / "models_config.json"),
        "--seed",
        "3",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        deadline = time.monotonic() + 15
        stats = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                stats = requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=1).json()
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert stats is not None, "the simulator did not come up"
        assert stats["devices"][0]["name"] == "Simulated NVIDIA GeForce RTX 4090 (comfy-router simulator)"
        assert stats["system"]["argv"][:3] == ["comfy-router", "simulate", "serve"]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
    assert process.returncode == 0
    assert "SIMULATOR" in stderr


def test_cli_rejects_an_unknown_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    code = simulator_main(["serve", "--gpu", "nope", "--config", str(ROOT / "models_config.json")])
    assert code == 2
    assert "unknown GPU 'nope'" in capsys.readouterr().err
