"""The client's parsers and its execution watch against the real ComfyUI v0.8.0 captures."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from router.comfyui import (
    ExecutionFailed,
    Interrupted,
    Invalid,
    OutOfMemory,
    Progress,
    Succeeded,
    combo_options,
    is_out_of_memory,
)
from router.comfyui.execution import Execution
from router.comfyui.protocol import (
    HistoryEntry,
    outcome_from_history,
    parse_execution_error,
    parse_history,
    parse_prompt_accepted,
    parse_prompt_rejection,
    parse_queue,
    parse_string_list,
    parse_system_stats,
    parse_ws_message,
)
from router.comfyui.ws import ChannelClosedError

SAMPLES = Path(__file__).parents[2].parent / "shared" / "comfyui" / "samples"

pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"ComfyUI captures not found at {SAMPLES} (shared/comfyui/samples)"
)

KNOWN_WS_TYPES = {
    "status",
    "execution_start",
    "execution_cached",
    "progress_state",
    "executing",
    "progress",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
}


def load(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def unwrap(obj: Any) -> Any:
    if isinstance(obj, dict) and "http_status" in obj and "body" in obj:
        return obj["body"]
    return obj


def samples(pattern: str) -> list[str]:
    return sorted(p.name for p in SAMPLES.glob(pattern)) if SAMPLES.is_dir() else []


def run_names() -> list[str]:
    """Captures of one prompt run: a ws.jsonl and a history with one entry."""
    names = []
    for ws in samples("*.ws.jsonl"):
        name = ws.removesuffix(".ws.jsonl")
        if (SAMPLES / f"{name}.history.json").exists() and (
            SAMPLES / f"{name}.prompt_response.json"
        ).exists():
            names.append(name)
    return names


def ws_raw_lines(name: str) -> list[str]:
    return [
        json.dumps(json.loads(line)["msg"])
        for line in (SAMPLES / f"{name}.ws.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def prompt_id_of(name: str) -> str:
    return str(load(f"{name}.prompt_response.json")["body"]["prompt_id"])


# --- /prompt ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", samples("*.prompt_response.json"))
def test_prompt_responses_parse(name: str) -> None:
    answer = load(name)
    if answer["http_status"] == 200:
        accepted = parse_prompt_accepted(answer["body"])
        assert accepted.prompt_id == answer["body"]["prompt_id"]
        assert isinstance(accepted.number, int)
        assert accepted.node_errors == {}
    else:
        assert answer["http_status"] == 400
        invalid = parse_prompt_rejection("pid", answer["body"])
        assert isinstance(invalid, Invalid)
        assert invalid.kind == "invalid"
        assert invalid.error_type == answer["body"]["error"]["type"]
        assert invalid.problems()[0].startswith(invalid.error_type)


def test_validation_error_keeps_node_errors_and_names_inputs() -> None:
    invalid = parse_prompt_rejection("pid", load("err_bad_values.prompt_response.json")["body"])
    assert invalid is not None
    assert invalid.error_type == "prompt_outputs_failed_validation"
    assert set(invalid.node_errors) == {"1"}
    lines = invalid.problems()
    assert any("node 1 (EmptyImage) width" in line for line in lines)
    assert any("node 1 (EmptyImage) height" in line and "bigger than max" in line for line in lines)


def test_unknown_node_and_missing_file_errors() -> None:
    unknown = parse_prompt_rejection("pid", load("err_unknown_node.prompt_response.json")["body"])
    assert unknown is not None
    assert unknown.error_type == "invalid_prompt"
    assert "DoesNotExistNode" in unknown.message
    not_in_list = parse_prompt_rejection("pid", load("err_ckpt_not_in_list.prompt_response.json")["body"])
    assert not_in_list is not None
    assert any("ckpt_name" in line for line in not_in_list.problems())


def test_rejection_that_is_not_comfyui_shaped_is_none() -> None:
    assert parse_prompt_rejection("pid", "500 Internal Server Error") is None
    assert parse_prompt_rejection("pid", {"detail": "x"}) is None


# --- WebSocket messages -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [n.removesuffix(".ws.jsonl") for n in samples("*.ws.jsonl")])
def test_every_captured_ws_message_parses(name: str) -> None:
    for raw in ws_raw_lines(name):
        message = parse_ws_message(raw)
        assert message is not None
        assert message.type in KNOWN_WS_TYPES
        if message.type not in ("status",):
            assert message.prompt_id is not None


def test_binary_and_junk_frames_are_ignored() -> None:
    assert parse_ws_message(b"\x00\x00\x00\x01\x89PNG") is None
    assert parse_ws_message("not json") is None
    assert parse_ws_message('["a list"]') is None


def test_runtime_error_is_an_execution_error_not_oom() -> None:
    lines = [parse_ws_message(raw) for raw in ws_raw_lines("err_runtime_broken_ckpt")]
    error = next(m for m in lines if m is not None and m.type == "execution_error")
    outcome = parse_execution_error(prompt_id_of("err_runtime_broken_ckpt"), error.data, duration_s=0.3)
    assert type(outcome) is ExecutionFailed
    assert outcome.kind == "execution_error"
    assert outcome.node_id == "4"
    assert outcome.node_type == "CheckpointLoaderSimple"
    assert outcome.exception_type == "safetensors._safetensors_rust.SafetensorError"
    assert "header too large" in outcome.exception_message
    assert len(outcome.traceback) == 8


@pytest.mark.parametrize(
    ("exception_type", "message", "oom"),
    [
        (
            "torch.OutOfMemoryError",
            "Allocation on device 0 would exceed allowed memory. (out of memory)",
            True,
        ),
        ("torch.cuda.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("OutOfMemoryError", "", True),
        ("RuntimeError", "MPS backend out of memory (MPS allocated: 17.00 GB)", True),
        ("RuntimeError", "HIP out of memory. Tried to allocate 512.00 MiB", True),
        ("RuntimeError", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", True),
        (
            "RuntimeError",
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory",
            True,
        ),
        ("safetensors._safetensors_rust.SafetensorError", "Error while deserializing header", False),
        ("RuntimeError", "mat1 and mat2 shapes cannot be multiplied", False),
        ("MemoryErrorLikeButNot", "memory layout is wrong", False),
    ],
)
def test_out_of_memory_recognition(exception_type: str, message: str, oom: bool) -> None:
    assert is_out_of_memory(exception_type, message) is oom


def test_oom_execution_error_becomes_oom_outcome() -> None:
    data = {"node_id": "3", "node_type": "KSampler", "exception_type": "torch.OutOfMemoryError"}
    outcome = parse_execution_error("pid", {**data, "exception_message": "out of memory"}, duration_s=1.0)
    assert isinstance(outcome, OutOfMemory)
    assert isinstance(outcome, ExecutionFailed)  # an OOM is an execution error of a kind
    assert outcome.kind == "oom"


# --- /history ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", samples("*.history.json"))
def test_every_history_capture_parses(name: str) -> None:
    body = unwrap(load(name))
    for prompt_id in body:
        entry = parse_history(prompt_id, body)
        assert entry is not None
        assert entry.status_str in ("success", "error")
        assert entry.output_node_ids
        if entry.status_str == "success":
            assert entry.images, name
            assert entry.completed
            assert entry.server_run_s is not None and entry.server_run_s >= 0


def test_history_of_unknown_prompt_is_none() -> None:
    assert parse_history("nope", load("history_empty.json")) is None
    assert parse_history("nope", unwrap(load("history_deleted_prompt.json"))) is None


def test_history_images_and_cache_flags() -> None:
    pid = prompt_id_of("empty_save")
    entry = parse_history(pid, load("empty_save.history.json"))
    assert entry is not None
    assert [(i.filename, i.subfolder, i.type, i.node_id) for i in entry.images] == [
        ("router_test_00001_.png", "", "output", "2")
    ]
    assert entry.cached is False
    twice = parse_history(prompt_id_of("twice_1"), load("twice_1.history.json"))
    assert twice is not None
    assert twice.cached is True
    assert twice.cached_nodes == ("1", "2")


def test_history_outcomes_for_error_and_interrupt() -> None:
    broken = parse_history(
        prompt_id_of("err_runtime_broken_ckpt"), load("err_runtime_broken_ckpt.history.json")
    )
    assert broken is not None
    outcome = outcome_from_history(broken, duration_s=1.0, interrupt_requested=False)
    assert type(outcome) is ExecutionFailed
    assert outcome.node_type == "CheckpointLoaderSimple"
    interrupted = parse_history(prompt_id_of("interrupt"), load("interrupt.history.json"))
    assert interrupted is not None
    outcome = outcome_from_history(interrupted, duration_s=1.0, interrupt_requested=True)
    assert isinstance(outcome, Interrupted)
    assert outcome.node_id == "11"
    assert outcome.node_type == "ImageBlur"
    assert outcome.requested is True


# --- /queue, /system_stats, /models, /object_info ---------------------------------------------


def queue_answers() -> list[str]:
    """The GET /queue captures (the queue_* names also hold POST answers and prompts)."""
    return [n for n in samples("queue_*.json") if "queue_running" in unwrap(load(n))]


@pytest.mark.parametrize("name", queue_answers())
def test_queue_captures_parse(name: str) -> None:
    body = unwrap(load(name))
    queue = parse_queue(body)
    assert len(queue.running) == len(body["queue_running"])
    assert len(queue.pending) == len(body["queue_pending"])


def test_queue_positions_follow_execution_order() -> None:
    queue = parse_queue(unwrap(load("queue_with_pending.json")))
    ids = load("queue_ops.ids.json")["ids"]
    assert queue.running == (ids[0],)
    assert queue.position(ids[0]) == 0
    assert set(queue.pending) == set(ids[1:])
    assert [queue.position(pid) for pid in queue.pending] == [1, 2]
    assert queue.position("unknown") is None
    shuffled = {
        "queue_running": [],
        "queue_pending": [[7, "b", {}, {}, []], [-1, "front", {}, {}, []], [5, "a", {}, {}, []]],
    }
    assert parse_queue(shuffled).pending == ("front", "a", "b")


@pytest.mark.parametrize(
    "name", ["system_stats.json", "api_system_stats.json", *samples("system_stats_*.json")]
)
def test_system_stats_parse(name: str) -> None:
    stats = parse_system_stats(unwrap(load(name)))
    assert stats.comfyui_version == "0.8.0"
    assert stats.devices and stats.devices[0].type == "cpu"
    assert 0 < stats.devices[0].vram_free_bytes <= stats.devices[0].vram_total_bytes


def test_models_lists() -> None:
    assert "checkpoints" in parse_string_list(load("models.json"), "/models")
    assert parse_string_list(load("models_checkpoints.json"), "/models/checkpoints") == []
    assert "tiny-sd15-random.safetensors" in parse_string_list(
        load("models_checkpoints_with_files.json"), "/models/checkpoints"
    )


def test_combo_options_in_both_formats() -> None:
    with_files = load("object_info_CheckpointLoaderSimple_with_files.json")["CheckpointLoaderSimple"]
    assert combo_options(with_files, "ckpt_name") == [
        "broken-garbage.safetensors",
        "tiny-sd15-random.safetensors",
        "tiny-sd15-shrunk-random.safetensors",
    ]
    everything = load("object_info_all.json")
    assert combo_options(everything["ImageToMask"], "channel") == ["red", "green", "blue", "alpha"]  # COMBO
    assert "euler" in (combo_options(everything["KSampler"], "sampler_name") or [])
    assert combo_options(everything["KSampler"], "steps") is None  # an INT, not a combo
    assert combo_options(everything["KSampler"], "nope") is None
    assert combo_options(everything["DualCLIPLoader"], "device") == ["default", "cpu"]  # optional input


# --- the execution watch, replaying every captured run ----------------------------------------


class ListChannel:
    """Hands out the captured messages, then reports the socket closed."""

    def __init__(self, raw: Sequence[str]) -> None:
        self._raw: Iterator[str] = iter(raw)
        self.closed = False

    def receive(self, timeout_s: float) -> str | bytes | None:
        try:
            return next(self._raw)
        except StopIteration:
            raise ChannelClosedError("end of capture") from None

    def close(self) -> None:
        self.closed = True


class HistoryBackend:
    def __init__(self, body: Any) -> None:
        self.body = body
        self.interrupts: list[str | None] = []
        self.deleted: list[str] = []

    def interrupt(self, prompt_id: str | None) -> None:
        self.interrupts.append(prompt_id)

    def delete_from_queue(self, prompt_ids: Sequence[str]) -> None:
        self.deleted.extend(prompt_ids)

    def history(self, prompt_id: str) -> HistoryEntry | None:
        return parse_history(prompt_id, self.body)


@pytest.mark.parametrize("name", run_names())
def test_replayed_capture_gives_the_recorded_outcome(name: str) -> None:
    pid = prompt_id_of(name)
    history_body = load(f"{name}.history.json")
    entry = parse_history(pid, history_body)
    assert entry is not None
    raw = ws_raw_lines(name)
    progress: list[Progress] = []
    channel = ListChannel(raw)
    execution = Execution(
        backend=HistoryBackend(history_body),
        prompt_id=pid,
        client_id="c",
        submitted_at=0.0,
        channel=channel,
    )
    outcome = execution.wait(timeout_s=5, on_progress=progress.append)
    assert channel.closed
    steps = [m for m in map(parse_ws_message, raw) if m is not None and m.type == "progress"]
    assert len([p for p in progress if p.event == "progress"]) == len(steps)
    if entry.status_str == "success":
        assert isinstance(outcome, Succeeded), outcome
        assert outcome.images == entry.images
        assert outcome.cached == entry.cached
        assert outcome.started_at_s is not None
        assert outcome.timings.server_run_s == pytest.approx(entry.server_run_s)
    elif entry.message("execution_error") is not None:
        assert isinstance(outcome, ExecutionFailed)
    else:
        assert isinstance(outcome, Interrupted)
        assert outcome.requested is False  # nobody asked this client to interrupt
    assert execution.wait(timeout_s=0) is outcome  # final outcomes stick
