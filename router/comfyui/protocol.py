"""Parsers for the JSON shapes ComfyUI speaks (checked against the v0.8.0 captures in shared/comfyui).

Pure functions: bytes or decoded JSON in, typed values out. Shapes that are not what the protocol
says raise `ComfyUIProtocolError`, never KeyError or TypeError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.comfyui.errors import ComfyUIProtocolError
from router.comfyui.outcomes import (
    ExecutionFailed,
    ImageRef,
    Interrupted,
    Invalid,
    Outcome,
    OutOfMemory,
    Succeeded,
    Timings,
)

# --- WebSocket messages -------------------------------------------------------------------------


@dataclass(frozen=True)
class WsMessage:
    type: str
    data: Mapping[str, Any]

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return value if isinstance(value, str) else None


def parse_ws_message(raw: str | bytes) -> WsMessage | None:
    """A text frame as a message; None for binary frames (preview images) and for junk."""
    if isinstance(raw, bytes | bytearray):
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return None
    data = obj.get("data")
    return WsMessage(obj["type"], data if isinstance(data, dict) else {})


def queue_remaining(message: WsMessage) -> int | None:
    """The queue length a `status` broadcast reports (running prompt included)."""
    status = message.data.get("status")
    exec_info = status.get("exec_info") if isinstance(status, Mapping) else None
    value = exec_info.get("queue_remaining") if isinstance(exec_info, Mapping) else None
    return value if isinstance(value, int) else None


# --- POST /prompt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptAccepted:
    prompt_id: str
    number: int | None
    # ComfyUI queues a prompt when at least one output is valid; the invalid ones are listed here.
    node_errors: Mapping[str, Any] = field(default_factory=dict)


def parse_prompt_accepted(body: object) -> PromptAccepted:
    if not isinstance(body, Mapping) or not isinstance(body.get("prompt_id"), str):
        raise ComfyUIProtocolError(f"/prompt answered 200 without a prompt_id: {_excerpt(body)}")
    number = body.get("number")
    node_errors = body.get("node_errors")
    return PromptAccepted(
        prompt_id=body["prompt_id"],
        number=number if isinstance(number, int) else None,
        node_errors=node_errors if isinstance(node_errors, Mapping) else {},
    )


def parse_prompt_rejection(prompt_id: str, body: object) -> Invalid | None:
    """A 400 answer of /prompt as an Invalid outcome; None if the body is not ComfyUI's error shape."""
    if not isinstance(body, Mapping) or not isinstance(body.get("error"), Mapping):
        return None
    error: Mapping[str, Any] = body["error"]
    node_errors = body.get("node_errors")
    return Invalid(
        prompt_id=prompt_id,
        error_type=str(error.get("type", "unknown")),
        message=str(error.get("message", "")),
        details=str(error.get("details", "") or ""),
        error=dict(error),
        node_errors=dict(node_errors) if isinstance(node_errors, Mapping) else {},
    )


# --- execution_error / execution_interrupted ----------------------------------------------------

# Substrings (lower case) of allocator messages: CUDA ("CUDA out of memory"), ROCm ("HIP out of
# memory"), Apple ("MPS backend out of memory"), ComfyUI's own "Allocation on device ... (out of
# memory)", cuBLAS failing to allocate its workspace, and the CPU allocator when RAM runs out.
_OOM_MESSAGE_MARKERS = ("out of memory", "cublas_status_alloc_failed", "defaultcpuallocator: can't allocate")


def is_out_of_memory(exception_type: str, exception_message: str) -> bool:
    """torch.OutOfMemoryError, torch.cuda.OutOfMemoryError, or an allocator message saying so."""
    if exception_type.rsplit(".", 1)[-1] == "OutOfMemoryError":
        return True
    message = exception_message.lower()
    return any(marker in message for marker in _OOM_MESSAGE_MARKERS)


def parse_execution_error(
    prompt_id: str, data: Mapping[str, Any], *, duration_s: float
) -> ExecutionFailed | OutOfMemory:
    exception_type = str(data.get("exception_type", "") or "")
    exception_message = str(data.get("exception_message", "") or "")
    traceback = data.get("traceback")
    cls = OutOfMemory if is_out_of_memory(exception_type, exception_message) else ExecutionFailed
    return cls(
        prompt_id=prompt_id,
        node_id=_opt_str(data.get("node_id")),
        node_type=_opt_str(data.get("node_type")),
        exception_type=exception_type,
        exception_message=exception_message,
        traceback=tuple(str(line) for line in traceback) if isinstance(traceback, list) else (),
        duration_s=duration_s,
    )


def parse_execution_interrupted(
    prompt_id: str, data: Mapping[str, Any], *, duration_s: float, requested: bool
) -> Interrupted:
    executed = data.get("executed")
    return Interrupted(
        prompt_id=prompt_id,
        node_id=_opt_str(data.get("node_id")),
        node_type=_opt_str(data.get("node_type")),
        executed=tuple(str(n) for n in executed) if isinstance(executed, list) else (),
        duration_s=duration_s,
        requested=requested,
    )


# --- GET /history/<prompt_id> -------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    prompt_id: str
    status_str: str | None
    completed: bool
    outputs: Mapping[str, Any]
    messages: tuple[tuple[str, Mapping[str, Any]], ...]
    output_node_ids: tuple[str, ...]

    @property
    def images(self) -> list[ImageRef]:
        return images_from_outputs(self.outputs)

    def message(self, message_type: str) -> Mapping[str, Any] | None:
        return next((data for kind, data in self.messages if kind == message_type), None)

    @property
    def cached_nodes(self) -> tuple[str, ...]:
        cached = self.message("execution_cached")
        nodes = cached.get("nodes") if cached else None
        return tuple(str(n) for n in nodes) if isinstance(nodes, list) else ()

    @property
    def cached(self) -> bool:
        """Every output node came from ComfyUI's cache: an identical graph ran before."""
        return bool(self.output_node_ids) and set(self.output_node_ids) <= set(self.cached_nodes)

    @property
    def server_run_s(self) -> float | None:
        start = self.message("execution_start")
        end = next(
            (
                data
                for kind, data in self.messages
                if kind in ("execution_success", "execution_error", "execution_interrupted")
            ),
            None,
        )
        return server_seconds(start, end)


def parse_history(prompt_id: str, body: object) -> HistoryEntry | None:
    """The entry for `prompt_id`, or None when ComfyUI does not (yet) know it (it answers `{}`)."""
    if not isinstance(body, Mapping):
        raise ComfyUIProtocolError(f"/history answered something that is not an object: {_excerpt(body)}")
    entry = body.get(prompt_id)
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise ComfyUIProtocolError(f"/history entry for {prompt_id} is not an object")
    raw_status = entry.get("status")
    status: Mapping[str, Any] = raw_status if isinstance(raw_status, Mapping) else {}
    outputs = entry.get("outputs")
    prompt = entry.get("prompt")
    # prompt = [number, prompt_id, graph, extra_data, output node ids]
    output_ids = prompt[4] if isinstance(prompt, list) and len(prompt) > 4 else []
    return HistoryEntry(
        prompt_id=prompt_id,
        status_str=_opt_str(status.get("status_str")),
        completed=bool(status.get("completed", False)),
        outputs=outputs if isinstance(outputs, Mapping) else {},
        messages=_history_messages(status.get("messages")),
        output_node_ids=tuple(str(n) for n in output_ids) if isinstance(output_ids, list) else (),
    )


def images_from_outputs(outputs: Mapping[str, Any]) -> list[ImageRef]:
    """Images of an `outputs` mapping (history) or of one `executed` message's `output`, per node."""
    images: list[ImageRef] = []
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, Mapping):
            continue
        for item in node_output.get("images", []) or []:
            if isinstance(item, Mapping) and isinstance(item.get("filename"), str):
                images.append(
                    ImageRef(
                        filename=item["filename"],
                        subfolder=str(item.get("subfolder", "") or ""),
                        type=str(item.get("type", "output") or "output"),
                        node_id=str(node_id),
                    )
                )
    return images


def outcome_from_history(entry: HistoryEntry, *, duration_s: float, interrupt_requested: bool) -> Outcome:
    """The outcome of a finished prompt as /history records it (the fallback when the socket is lost)."""
    if entry.status_str == "success":
        return Succeeded(
            prompt_id=entry.prompt_id,
            images=entry.images,
            duration_s=duration_s,
            cached=entry.cached,
            cached_nodes=entry.cached_nodes,
            timings=Timings(server_run_s=entry.server_run_s),
        )
    error = entry.message("execution_error")
    if error is not None:
        return parse_execution_error(entry.prompt_id, error, duration_s=duration_s)
    interrupted = entry.message("execution_interrupted")
    if interrupted is not None:
        return parse_execution_interrupted(
            entry.prompt_id, interrupted, duration_s=duration_s, requested=interrupt_requested
        )
    return ExecutionFailed(
        prompt_id=entry.prompt_id,
        node_id=None,
        node_type=None,
        exception_type="unknown",
        exception_message=f"history status {entry.status_str!r} without an error message",
        duration_s=duration_s,
    )


def server_seconds(start: Mapping[str, Any] | None, end: Mapping[str, Any] | None) -> float | None:
    """Seconds between two messages by ComfyUI's own clock (their `timestamp`, milliseconds)."""
    if start is None or end is None:
        return None
    t0, t1 = start.get("timestamp"), end.get("timestamp")
    if isinstance(t0, int | float) and isinstance(t1, int | float):
        return max(0.0, (t1 - t0) / 1000.0)
    return None


# --- GET /queue, /system_stats, /models ---------------------------------------------------------


@dataclass(frozen=True)
class QueueState:
    running: tuple[str, ...]
    pending: tuple[str, ...]

    def position(self, prompt_id: str) -> int | None:
        """0 while running, 1 for the next pending prompt and so on; None if not queued."""
        if prompt_id in self.running:
            return 0
        if prompt_id in self.pending:
            return self.pending.index(prompt_id) + 1
        return None

    def __len__(self) -> int:
        return len(self.running) + len(self.pending)


def parse_queue(body: object) -> QueueState:
    if not isinstance(body, Mapping):
        raise ComfyUIProtocolError(f"/queue answered something that is not an object: {_excerpt(body)}")
    return QueueState(
        running=tuple(pid for _, pid in _queue_items(body.get("queue_running"))),
        # ComfyUI lists pending items in heap order; the number is the execution order
        # (a `front` submission gets a negative number).
        pending=tuple(pid for _, pid in sorted(_queue_items(body.get("queue_pending")))),
    )


@dataclass(frozen=True)
class DeviceStats:
    name: str
    type: str
    index: int | None
    vram_total_bytes: int
    vram_free_bytes: int
    torch_vram_total_bytes: int
    torch_vram_free_bytes: int


@dataclass(frozen=True)
class SystemStats:
    comfyui_version: str | None
    pytorch_version: str | None
    ram_total_bytes: int
    ram_free_bytes: int
    devices: tuple[DeviceStats, ...]
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)


def parse_system_stats(body: object) -> SystemStats:
    if not isinstance(body, Mapping) or not isinstance(body.get("system"), Mapping):
        raise ComfyUIProtocolError(f"/system_stats answered an unexpected shape: {_excerpt(body)}")
    system: Mapping[str, Any] = body["system"]
    raw_devices = body.get("devices")
    devices: list[Any] = raw_devices if isinstance(raw_devices, list) else []
    return SystemStats(
        comfyui_version=_opt_str(system.get("comfyui_version")),
        pytorch_version=_opt_str(system.get("pytorch_version")),
        ram_total_bytes=_int(system.get("ram_total")),
        ram_free_bytes=_int(system.get("ram_free")),
        devices=tuple(_device(d) for d in devices if isinstance(d, Mapping)),
        raw=dict(body),
    )


def parse_string_list(body: object, what: str) -> list[str]:
    if not isinstance(body, list) or not all(isinstance(x, str) for x in body):
        raise ComfyUIProtocolError(f"{what} answered something that is not a list of names: {_excerpt(body)}")
    return list(body)


def parse_upload(body: object) -> str:
    """The value to put in LoadImage's `image` input for an uploaded file."""
    if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
        raise ComfyUIProtocolError(f"/upload/image answered an unexpected shape: {_excerpt(body)}")
    subfolder = body.get("subfolder") or ""
    return f"{subfolder}/{body['name']}" if subfolder else str(body["name"])


# --- helpers ------------------------------------------------------------------------------------


def _history_messages(raw: object) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    if not isinstance(raw, list):
        return ()
    out: list[tuple[str, Mapping[str, Any]]] = []
    for item in raw:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], item[1] if isinstance(item[1], Mapping) else {}))
    return tuple(out)


def _queue_items(raw: object) -> list[tuple[float, str]]:
    """(number, prompt_id) of each `[number, prompt_id, graph, extra_data, outputs]` item."""
    if not isinstance(raw, list):
        return []
    items: list[tuple[float, str]] = []
    for item in raw:
        if isinstance(item, Sequence) and len(item) > 1 and isinstance(item[1], str):
            number = item[0] if isinstance(item[0], int | float) else 0
            items.append((float(number), item[1]))
    return items


def _device(raw: Mapping[str, Any]) -> DeviceStats:
    index = raw.get("index")
    return DeviceStats(
        name=str(raw.get("name", "")),
        type=str(raw.get("type", "")),
        index=index if isinstance(index, int) else None,
        vram_total_bytes=_int(raw.get("vram_total")),
        vram_free_bytes=_int(raw.get("vram_free")),
        torch_vram_total_bytes=_int(raw.get("torch_vram_total")),
        torch_vram_free_bytes=_int(raw.get("torch_vram_free")),
    )


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _excerpt(body: object, limit: int = 200) -> str:
    text = body if isinstance(body, str) else repr(body)
    return text[:limit]
