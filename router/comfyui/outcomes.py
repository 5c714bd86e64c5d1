"""What running a prompt on ComfyUI can end in: one success type and one type per failure kind.

Every outcome has a `kind` (a short code for logs, metrics and the jobs table) and `ok`.
`duration_s` is always measured on the client's monotonic clock from the submission of the
prompt to the moment the outcome was known, so it includes queueing and network time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal


@dataclass(frozen=True)
class ImageRef:
    """An image ComfyUI saved; pass the first three fields to `ComfyUIClient.view()`."""

    filename: str
    subfolder: str
    type: str
    node_id: str


@dataclass(frozen=True)
class Progress:
    """A progress report for the caller's deadline logic.

    `event` is "progress" for a sampler step (`value` of `max`) and "executing" when a node starts
    (then `value` and `max` are 0). Times are seconds after submission; `started_at_s` is when
    ComfyUI started executing the prompt (None while it is still queued).
    """

    value: int
    max: int
    node: str | None
    elapsed_s: float
    started_at_s: float | None
    event: Literal["progress", "executing"] = "progress"
    queue_remaining: int | None = None

    @property
    def fraction(self) -> float | None:
        """Share of the current node's steps done, or None when the node reports no steps."""
        return self.value / self.max if self.max > 0 else None

    @property
    def running_s(self) -> float | None:
        return None if self.started_at_s is None else self.elapsed_s - self.started_at_s


@dataclass(frozen=True)
class Timings:
    """Where the time went. Client-side figures come from the WebSocket and are None when the
    outcome was recovered from /history (socket dropped); `server_run_s` comes from ComfyUI's own
    message timestamps (milliseconds) and excludes network and queueing."""

    queued_s: float | None = None
    run_s: float | None = None
    server_run_s: float | None = None
    node_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Succeeded:
    kind: ClassVar[Literal["succeeded"]] = "succeeded"
    ok: ClassVar[bool] = True

    prompt_id: str
    images: list[ImageRef]
    duration_s: float
    started_at_s: float | None = None
    cached: bool = False
    cached_nodes: tuple[str, ...] = ()
    timings: Timings = field(default_factory=Timings)


@dataclass(frozen=True, kw_only=True)
class Failure:
    kind: ClassVar[str] = "failure"
    ok: ClassVar[bool] = False

    prompt_id: str


@dataclass(frozen=True, kw_only=True)
class Invalid(Failure):
    """ComfyUI refused the graph (HTTP 400 from /prompt): nothing was queued."""

    kind: ClassVar[Literal["invalid"]] = "invalid"

    error_type: str
    message: str
    details: str = ""
    error: Mapping[str, Any] = field(default_factory=dict)
    node_errors: Mapping[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """One human-readable line per problem, e.g. "node 1 (EmptyImage) width: Failed to convert..."."""
        lines = [f"{self.error_type}: {self.message}" + (f" ({self.details})" if self.details else "")]
        for node_id, node in sorted(self.node_errors.items()):
            if not isinstance(node, Mapping):
                continue
            class_type = node.get("class_type", "?")
            for err in node.get("errors", []) or []:
                if not isinstance(err, Mapping):
                    continue
                extra = err.get("extra_info")
                input_name = extra.get("input_name") if isinstance(extra, Mapping) else None
                where = f" {input_name}" if input_name else ""
                details = f" ({err['details']})" if err.get("details") else ""
                lines.append(f"node {node_id} ({class_type}){where}: {err.get('message', '')}{details}")
        return lines


@dataclass(frozen=True, kw_only=True)
class ExecutionFailed(Failure):
    """The prompt was accepted but a node raised while running (`execution_error`)."""

    kind: ClassVar[Literal["execution_error", "oom"]] = "execution_error"

    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()
    duration_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class OutOfMemory(ExecutionFailed):
    """An execution error raised by the GPU (or MPS/HIP) allocator running out of memory."""

    kind: ClassVar[Literal["oom"]] = "oom"


@dataclass(frozen=True, kw_only=True)
class Interrupted(Failure):
    """ComfyUI stopped the prompt (`execution_interrupted`). `requested` says whether this client
    asked for it (on_progress returned True or cancel()); False means someone else interrupted."""

    kind: ClassVar[Literal["interrupted"]] = "interrupted"

    node_id: str | None = None
    node_type: str | None = None
    executed: tuple[str, ...] = ()
    duration_s: float = 0.0
    requested: bool = False


@dataclass(frozen=True, kw_only=True)
class ConnectionRefused(Failure):
    """Nothing answered at the backend URL: the prompt was never submitted."""

    kind: ClassVar[Literal["connection_refused"]] = "connection_refused"

    url: str
    message: str


@dataclass(frozen=True, kw_only=True)
class HttpError(Failure):
    """An unexpected HTTP answer (5xx, a body that is not what the protocol says) or a timeout of the
    submission request. `status` is None when no response arrived."""

    kind: ClassVar[Literal["http_error"]] = "http_error"

    url: str
    status: int | None
    body_excerpt: str


@dataclass(frozen=True, kw_only=True)
class TimedOut(Failure):
    """No outcome within timeout_s. The prompt may still run: the Execution stays usable for
    `wait()` again or `cancel()`."""

    kind: ClassVar[Literal["timeout"]] = "timeout"

    timeout_s: float
    duration_s: float
    started: bool
    last_progress: Progress | None = None
    interrupt_requested: bool = False


@dataclass(frozen=True, kw_only=True)
class SocketDropped(Failure):
    """The WebSocket closed mid-run and /history did not show the prompt finished within the
    bounded fallback polls. The prompt may still be running on the backend."""

    kind: ClassVar[Literal["socket_dropped"]] = "socket_dropped"

    duration_s: float
    history_polls: int
    reason: str


Outcome = (
    Succeeded
    | Invalid
    | ExecutionFailed
    | OutOfMemory
    | Interrupted
    | ConnectionRefused
    | HttpError
    | TimedOut
    | SocketDropped
)
