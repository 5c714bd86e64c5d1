"""ComfyUI client: plain HTTP calls, deadline-aware prompt execution, typed outcomes."""

from router.comfyui.client import ComfyUIClient
from router.comfyui.errors import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIHTTPError,
    ComfyUIProtocolError,
    ComfyUITimeoutError,
)
from router.comfyui.execution import DEFAULT_HISTORY_POLL_DELAYS_S, Execution, ProgressCallback
from router.comfyui.object_info import ObjectInfoCache, combo_options, input_spec
from router.comfyui.outcomes import (
    ConnectionRefused,
    ExecutionFailed,
    Failure,
    HttpError,
    ImageRef,
    Interrupted,
    Invalid,
    Outcome,
    OutOfMemory,
    Progress,
    SocketDropped,
    Succeeded,
    TimedOut,
    Timings,
)
from router.comfyui.protocol import HistoryEntry, QueueState, SystemStats, is_out_of_memory

__all__ = [
    "DEFAULT_HISTORY_POLL_DELAYS_S",
    "ComfyUIClient",
    "ComfyUIConnectionError",
    "ComfyUIError",
    "ComfyUIHTTPError",
    "ComfyUIProtocolError",
    "ComfyUITimeoutError",
    "ConnectionRefused",
    "Execution",
    "ExecutionFailed",
    "Failure",
    "HistoryEntry",
    "HttpError",
    "ImageRef",
    "Interrupted",
    "Invalid",
    "ObjectInfoCache",
    "OutOfMemory",
    "Outcome",
    "Progress",
    "ProgressCallback",
    "QueueState",
    "SocketDropped",
    "Succeeded",
    "SystemStats",
    "TimedOut",
    "Timings",
    "combo_options",
    "input_spec",
    "is_out_of_memory",
]
