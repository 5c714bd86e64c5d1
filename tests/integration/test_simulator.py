"""The simulator over real sockets, checked against the captures of a real ComfyUI 0.8.0.

Each test starts its own simulator on a free loopback port (a tiny catalog: runs take milliseconds)
and stops it on the way out.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from router.catalog import Catalog
from router.simulator import SimulatorHandle, start_simulator
from router.simulator.gpu import CUDA_CONTEXT_MB
from router.simulator.testing import (
    WsRecorder,
    checkpoint_graph,
    fast_catalog,
    flux_graph,
    message_types,
    submit,
)

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "comfyui" / "samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="the ComfyUI captures are not available")
SD15 = "v1-5-pruned-emaonly.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
MIB = 1024 * 1024
JsonDict = dict[str, Any]


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def sample_ws(name: str) -> list[JsonDict]:
    lines = (SAMPLES / f"{name}.ws.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["msg"] for line in lines if line.strip()]


def sample_request(name: str, client_id: str) -> JsonDict:
    """A captured request, pointed at a checkpoint the catalog has and at our socket."""
    body: JsonDict = sample(f"{name}.prompt_request.json")
    for node in body["prompt"].values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = SD15
    body["client_id"] = client_id
    return body


def shape(value: Any) -> Any:
    """The JSON structure without the values: keys, and the types of leaves."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return (
        "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    )


@pytest.fixture(scope="module")
def fast(catalog: Catalog) -> Catalog:
    return fast_catalog(catalog)


@pytest.fixture
def sim(fast: Catalog) -> Iterator[SimulatorHandle]:
    with start_simulator(fast, gpu="a100") as handle:
        yield handle


def run_request(sim: SimulatorHandle, body: JsonDict) -> tuple[JsonDict, list[JsonDict]]:
    """POST a request body on a fresh socket; returns (response body, messages after the greeting)."""
    with WsRecorder(sim.url, body["client_id"]) as ws:
        greeting = ws.next()
        assert greeting == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": body["client_id"]},
        }
        response = requests.post(f"{sim.url}/prompt", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json(), ws.until_done(response.json()["prompt_id"])


def history(sim: SimulatorHandle, prompt_id: str) -> JsonDict:
    entry: JsonDict = requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json()[prompt_id]
    return entry


def vram_free_bytes(sim: SimulatorHandle) -> int:
    free: int = requests.get(f"{sim.url}/system_stats", timeout=5).json()["devices"][0]["vram_free"]
    return free


# ---- the protocol, replayed from the captures ----


@needs_samples
def test_model_free_graph_replays_the_capture(sim: SimulatorHandle) -> None:
    body, messages = run_request(sim, sample_request("empty_save", "client-a"))
    assert shape(body) == shape(sample("empty_save.prompt_response.json")["body"])
    assert body["number"] == 0
    assert message_types(messages) == message_types(sample_ws("empty_save")[1:])
    executed = next(m for m in messages if m["type"] == "executed")
    assert executed["data"]["output"] == {
        "images": [{"filename": "router_test_00001_.png", "subfolder": "", "type": "output"}]
    }
    entry = history(sim, body["prompt_id"])
    expected = next(iter(sample("empty_save.history.json").values()))
    assert shape(entry) == shape(expected)
    assert entry["prompt"][2] == expected["prompt"][2]
    assert entry["outputs"] == expected["outputs"]
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]


@needs_samples
def test_sampler_graph_cold_then_warm_replays_the_captures(sim: SimulatorHandle) -> None:
    _, cold = run_request(sim, sample_request("sd15_cold_s1", "client-a"))
    assert message_types(cold) == message_types(sample_ws("sd15_cold_s1")[1:])
    executing = [m["data"]["node"] for m in cold if m["type"] == "executing"]
    assert executing == ["4", "5", "7", "6", "3", "8", "9", None]
    captured_states = [m for m in sample_ws("sd15_cold_s1") if m["type"] == "progress_state"]
    our_states = [m for m in cold if m["type"] == "progress_state"]
    our_id = cold[2]["data"]["prompt_id"]
    captured_id = captured_states[0]["data"]["prompt_id"]
    assert [json.loads(json.dumps(m).replace(our_id, captured_id)) for m in our_states] == captured_states
    _, warm = run_request(sim, sample_request("sd15_warm_s2", "client-a"))
    assert message_types(warm) == message_types(sample_ws("sd15_warm_s2")[1:])
    cached = next(m for m in warm if m["type"] == "execution_cached")
    assert cached["data"]["nodes"] == ["4", "5", "6", "7"]


@needs_samples
def test_identical_resubmission_is_served_from_cache(sim: SimulatorHandle) -> None:
    first_body, _ = run_request(sim, sample_request("twice_0", "client-a"))
    assert first_body["prompt_id"] == sample("twice_0.prompt_request.json")["prompt_id"]
    second_body, second = run_request(sim, sample_request("twice_1", "client-b"))
    assert message_types(second) == message_types(sample_ws("twice_1")[1:])
    entry = history(sim, second_body["prompt_id"])
    expected = next(iter(sample("twice_1.history.json").values()))
    assert entry["outputs"] == expected["outputs"]  # the old file, router_twice_00001_.png
    assert list(entry["prompt"][3]) == ["router_tag", "client_id", "create_time"]
    assert entry["status"]["messages"][1][1]["nodes"] == ["1", "2"]


def test_progress_arrives_once_per_step(sim: SimulatorHandle) -> None:
    with WsRecorder(sim.url) as ws:
        ws.next()
        prompt_id = submit(sim.url, checkpoint_graph(SD15, steps=7), ws.client_id)
        messages = ws.until_done(prompt_id)
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert progress == [{"value": v, "max": 7, "prompt_id": prompt_id, "node": "3"} for v in range(1, 8)]
    assert message_types(messages)[-3:] == ["execution_success", "status", "executing"]


def test_prompt_events_go_only_to_their_client(sim: SimulatorHandle) -> None:
    with WsRecorder(sim.url) as mine, WsRecorder(sim.url) as other:
        mine.next()
        other.next()
        prompt_id = submit(sim.url, checkpoint_graph(SD15, steps=2), mine.client_id)
        mine.until_done(prompt_id)
        theirs = other.until(lambda m: m["data"].get("status", {}).get("exec_info") == {"queue_remaining": 0})
    assert set(message_types(theirs)) == {"status"}


# ---- interrupt, OOM, runtime errors ----


@needs_samples
def test_targeted_interrupt_during_sampling(fast: Catalog) -> None:
    slow = fast_catalog(fast, per_step_s=0.05)
    with start_simulator(slow) as sim, WsRecorder(sim.url) as ws:
        ws.next()
        prompt_id = submit(sim.url, checkpoint_graph(SD15, steps=200), ws.client_id)
        ws.until(lambda m: m["type"] == "progress")
        other = requests.post(f"{sim.url}/interrupt", json={"prompt_id": "not-running"}, timeout=5)
        assert (other.status_code, other.text) == (200, "")
        ws.until(lambda m: m["type"] == "progress" and m["data"]["value"] >= 2)
        started = time.monotonic()
        requests.post(f"{sim.url}/interrupt", json={"prompt_id": prompt_id}, timeout=5)
        tail = ws.until_done(prompt_id)
        assert time.monotonic() - started < 0.5
        entry = history(sim, prompt_id)
    assert message_types(tail)[-3:] == ["execution_interrupted", "status", "executing"]
    interrupted = tail[-3]["data"]
    captured = next(m for m in sample_ws("interrupt_ksampler") if m["type"] == "execution_interrupted")[
        "data"
    ]
    assert list(interrupted) == list(captured)
    assert (interrupted["node_id"], interrupted["node_type"]) == ("3", "KSampler")
    assert interrupted["executed"] == ["4", "5", "7", "6"]
    expected = next(iter(sample("interrupt_ksampler.history.json").values()))
    assert (entry["outputs"], entry["meta"]) == (expected["outputs"], expected["meta"])
    assert {k: v for k, v in entry["status"].items() if k != "messages"} == {
        "status_str": "error",
        "completed": False,
    }
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in expected["status"]["messages"]]


@needs_samples
def test_oom_when_the_model_does_not_fit(fast: Catalog) -> None:
    with start_simulator(fast, gpu="a100-80gb", vram_mb=8000) as sim, WsRecorder(sim.url) as ws:
        ws.next()
        prompt_id = submit(sim.url, flux_graph(), ws.client_id)
        messages = ws.until_done(prompt_id)
        error = next(m for m in messages if m["type"] == "execution_error")["data"]
        free_after = vram_free_bytes(sim)
        state = requests.get(f"{sim.url}/sim/state", timeout=5).json()
        entry = history(sim, prompt_id)
    captured = next(m for m in sample_ws("err_runtime_broken_ckpt") if m["type"] == "execution_error")["data"]
    assert list(error) == list(captured)
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert re.match(
        r"CUDA out of memory\. Tried to allocate [\d.]+ GiB\. GPU 0 has a total capacity of 7\.81 GiB "
        r"of which [\d.]+ MiB is free\.",
        error["exception_message"],
    )
    assert (error["node_id"], error["node_type"]) == ("8", "KSampler")
    assert error["current_inputs"]["steps"] == [4]
    assert free_after == (8000 - CUDA_CONTEXT_MB) * MIB  # the memory is free again
    assert state["loaded_models"] == []
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)


@needs_samples
def test_a_broken_model_file_fails_at_run_time_like_the_capture(sim: SimulatorHandle) -> None:
    sim.set_faults(broken_files=["broken-garbage.safetensors"])
    body = sample("err_runtime_broken_ckpt.prompt_request.json")
    body["client_id"] = "client-a"
    response, messages = run_request(sim, body)
    assert shape(response) == shape(sample("err_runtime_broken_ckpt.prompt_response.json")["body"])
    captured = sample_ws("err_runtime_broken_ckpt")
    assert message_types(messages) == message_types(captured[1:])
    error = next(m for m in messages if m["type"] == "execution_error")["data"]
    expected = next(m for m in captured if m["type"] == "execution_error")["data"]
    for key in ("node_id", "node_type", "executed", "exception_message", "exception_type", "current_inputs"):
        assert error[key] == expected[key]
    assert sorted(error["current_outputs"]) == sorted(expected["current_outputs"])


@needs_samples
@pytest.mark.parametrize(
    "name",
    [
        "err_bad_link",
        "err_bad_values",
        "err_ckpt_not_in_list",
        "err_missing_input",
        "err_no_outputs",
        "err_unknown_node",
    ],
)
def test_validation_errors_match_the_captures(sim: SimulatorHandle, name: str) -> None:
    response = requests.post(f"{sim.url}/prompt", json=sample(f"{name}.prompt_request.json"), timeout=5)
    expected = sample(f"{name}.prompt_response.json")
    assert response.status_code == expected["http_status"]
    assert response.headers["Content-Type"] == expected["content_type"]
    body = response.json()
    assert body["error"]["type"] == expected["body"]["error"]["type"]
    assert shape(body["error"]) == shape(expected["body"]["error"])
    got = {n: [e["type"] for e in v["errors"]] for n, v in body["node_errors"].items()}
    want = {n: [e["type"] for e in v["errors"]] for n, v in expected["body"]["node_errors"].items()}
    assert got == want


@needs_samples
def test_body_without_prompt_or_not_json(sim: SimulatorHandle) -> None:
    response = requests.post(f"{sim.url}/prompt", json={"client_id": "x"}, timeout=5)
    assert (response.status_code, response.json()) == (
        400,
        sample("err_no_prompt_key.prompt_response.json")["body"],
    )
    raw = requests.post(f"{sim.url}/api/prompt", data=b"{not json", timeout=5)
    status_line, body = (SAMPLES / "err_not_json.prompt_response.txt").read_text().split("\n", 1)
    assert status_line == f"HTTP {raw.status_code} {raw.headers['Content-Type']}"
    assert raw.text == body


# ---- the GPU model: load, VRAM, /free ----


def timed_run(sim: SimulatorHandle, ws: WsRecorder, prompt: JsonDict) -> float:
    started = time.monotonic()
    prompt_id = submit(sim.url, prompt, ws.client_id)
    ws.until_done(prompt_id)
    return time.monotonic() - started


def test_model_switch_costs_load_time_and_vram(fast: Catalog) -> None:
    loading = fast_catalog(fast, load_s=0.3)
    with start_simulator(loading, gpu="a100-80gb", vram_mb=12_000) as sim, WsRecorder(sim.url) as ws:
        ws.next()
        idle_free = vram_free_bytes(sim)
        assert idle_free == (12_000 - CUDA_CONTEXT_MB) * MIB
        assert timed_run(sim, ws, checkpoint_graph(SD15, seed=1)) >= 0.3
        assert vram_free_bytes(sim) == idle_free - 4500 * MIB
        assert timed_run(sim, ws, checkpoint_graph(SD15, seed=2)) < 0.25  # warm: no load
        assert timed_run(sim, ws, checkpoint_graph(SDXL, seed=3)) >= 0.3  # a switch pays the load
        state = requests.get(f"{sim.url}/sim/state", timeout=5).json()
        assert [m["id"] for m in state["loaded_models"]] == [
            "sdxl-base"
        ]  # 4500 + 9500 MiB do not fit in 12 GB
        assert vram_free_bytes(sim) == idle_free - 9500 * MIB
        freed = requests.post(f"{sim.url}/free", json={"unload_models": True, "free_memory": True}, timeout=5)
        assert (freed.status_code, freed.text) == (200, "")
        assert vram_free_bytes(sim) == idle_free
        assert timed_run(sim, ws, checkpoint_graph(SDXL, seed=4)) >= 0.3  # cold again after /free


def test_both_models_stay_loaded_when_they_fit(sim: SimulatorHandle) -> None:
    with WsRecorder(sim.url) as ws:
        ws.next()
        timed_run(sim, ws, checkpoint_graph(SD15))
        timed_run(sim, ws, checkpoint_graph(SDXL))
    state = requests.get(f"{sim.url}/sim/state", timeout=5).json()
    assert [m["id"] for m in state["loaded_models"]] == ["sd15", "sdxl-base"]


def test_slowdown_multiplies_durations(fast: Catalog) -> None:
    with start_simulator(fast_catalog(fast, per_step_s=0.02), slowdown=3.0) as sim, WsRecorder(sim.url) as ws:
        ws.next()
        slow_s = timed_run(sim, ws, checkpoint_graph(SD15, steps=10, seed=1))
        sim.set_faults(slowdown=1.0)
        normal_s = timed_run(sim, ws, checkpoint_graph(SD15, steps=10, seed=2))
    # cold run: load 0.05 + fixed 0.02 + 10 steps x 0.02 = 0.27 s true time, x3 = 0.81 s
    assert slow_s >= 0.75
    assert normal_s < 0.5


# ---- outputs ----


def test_view_serves_the_png_at_the_rendered_size(sim: SimulatorHandle) -> None:
    with WsRecorder(sim.url) as ws:
        ws.next()
        prompt_id = submit(sim.url, checkpoint_graph(SD15, width=320, height=192, batch_size=2), ws.client_id)
        ws.until_done(prompt_id)
    images = history(sim, prompt_id)["outputs"]["9"]["images"]
    assert [i["filename"] for i in images] == ["sim_00001_.png", "sim_00002_.png"]
    for image in images:
        response = requests.get(f"{sim.url}/view", params=image, timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/png"
        with Image.open(io.BytesIO(response.content)) as png:
            assert (png.format, png.size) == ("PNG", (320, 192))
    missing = requests.get(f"{sim.url}/view", params={"filename": "nope.png", "type": "output"}, timeout=5)
    assert (missing.status_code, missing.text) == (404, "")
    sneaky = requests.get(f"{sim.url}/view", params={"filename": "../x.png"}, timeout=5)
    assert sneaky.status_code == 400
