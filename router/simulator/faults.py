"""Fault injection for tests, set through `POST /sim/faults` (a route ComfyUI does not have)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

JsonDict = dict[str, Any]


class FaultError(ValueError):
    """A fault request the simulator does not understand (answered with 400)."""


@dataclass
class Faults:
    """`oom_next`: that many coming model placements fail with a CUDA OOM.
    `hang`: every non-/sim HTTP request (and WebSocket handshake) stalls until cleared.
    `http_500`: every non-/sim route answers 500 like a crashed handler.
    `drop_ws_after_steps`: after that many sampler steps, every client WebSocket is cut (once).
    `slowdown`: replaces the server's slowdown for the nodes that start from now on.
    `broken_files`: file names added to every loader's choices that fail to load like a corrupt
    safetensors file (ComfyUI accepts the prompt, then reports `execution_error`).
    """

    oom_next: int = 0
    hang: bool = False
    http_500: bool = False
    drop_ws_after_steps: int | None = None
    slowdown: float | None = None
    broken_files: list[str] = field(default_factory=list)

    def as_json(self) -> JsonDict:
        return asdict(self)


FAULT_NAMES: tuple[str, ...] = (*(f.name for f in fields(Faults)), "reset")


def apply_faults(current: Faults, request: JsonDict) -> Faults:
    """A new Faults from `current` and a request; `reset` first clears everything."""
    unknown = sorted(set(request) - set(FAULT_NAMES))
    if unknown:
        raise FaultError(f"unknown fault(s) {unknown}; known: {list(FAULT_NAMES)}")
    values = Faults().as_json() if request.get("reset") else current.as_json()
    for name, value in request.items():
        if name != "reset":
            values[name] = _checked(name, value)
    return Faults(**values)


def _checked(name: str, value: Any) -> Any:
    if name in ("hang", "http_500"):
        if not isinstance(value, bool):
            raise FaultError(f"{name} must be true or false")
        return value
    if name == "oom_next":
        if value is True:
            return 1
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FaultError("oom_next must be a count >= 0")
        return value
    if name == "broken_files":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise FaultError("broken_files must be a list of file names")
        return list(value)
    if name == "drop_ws_after_steps":
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise FaultError("drop_ws_after_steps must be a step count >= 0 or null")
        return value
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value <= 0):
        raise FaultError("slowdown must be a number > 0 or null")
    return None if value is None else float(value)
