"""A trace: JSON Lines, one request a line (DESIGN.md section 6), validated line by line.

`{"t": arrival seconds, "purpose": ..., "urgency": ..., "quality": ..., "width": ..., "height": ...,
"deadline_s"?: ..., "max_cost_usd"?: ...}`. Arrival times never decrease down the file. Errors name
the file and the line, so a person can fix the trace without guessing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.catalog.schema import Catalog, TierName

PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file and line."""


class TraceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    t: float = Field(ge=0, description="Arrival, seconds from the start of the trace.")
    purpose: str = Field(min_length=1)
    urgency: str = Field(min_length=1)
    quality: TierName
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    deadline_s: PositiveSeconds | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)


def parse_line(text: str, where: str) -> TraceRequest:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(raw, dict):
        raise TraceError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    try:
        return TraceRequest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors()
        )
        raise TraceError(f"{where}: {problems}") from exc


def read_trace(path: Path, catalog: Catalog | None = None) -> list[TraceRequest]:
    """Every request of the file, in order. With a catalog, purposes, urgencies and sizes are checked
    against it too. Raises TraceError naming the line at fault."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise TraceError(f"{path}: no such trace file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc}") from exc
    requests: list[TraceRequest] = []
    last_t = 0.0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        req = parse_line(line, where)
        if req.t < last_t:
            raise TraceError(f"{where}: t={req.t:g} is before the previous line's t={last_t:g} (sort by t)")
        if catalog is not None:
            check_against(req, catalog, where)
        last_t = req.t
        requests.append(req)
    if not requests:
        raise TraceError(f"{path}: the trace has no requests")
    return requests


def check_against(req: TraceRequest, catalog: Catalog, where: str) -> None:
    purposes = catalog.purposes()
    if req.purpose not in purposes:
        raise TraceError(f"{where}: unknown purpose {req.purpose!r}; one of: {', '.join(purposes)}")
    if req.urgency not in catalog.urgencies:
        raise TraceError(f"{where}: unknown urgency {req.urgency!r}; one of: {', '.join(catalog.urgencies)}")
    lim = catalog.limits
    for name, side in (("width", req.width), ("height", req.height)):
        if not lim.min_side_px <= side <= lim.max_side_px or side % lim.side_multiple_px:
            raise TraceError(
                f"{where}: {name} {side} px must be {lim.min_side_px}-{lim.max_side_px} px "
                f"and a multiple of {lim.side_multiple_px}"
            )
    if req.width * req.height > lim.max_pixels:
        raise TraceError(f"{where}: {req.width}x{req.height} is over the {lim.max_pixels} pixel limit")


def write_trace(path: Path, requests: Iterable[TraceRequest]) -> int:
    """Write one request a line (optional fields left out when unset); returns the count."""
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for req in requests:
            out.write(req.model_dump_json(exclude_none=True) + "\n")
            n += 1
    return n


def summary(requests: Sequence[TraceRequest]) -> dict[str, object]:
    """What the replay's JSON says about the trace it ran."""
    by_urgency: dict[str, int] = {}
    by_purpose: dict[str, int] = {}
    for r in requests:
        by_urgency[r.urgency] = by_urgency.get(r.urgency, 0) + 1
        by_purpose[r.purpose] = by_purpose.get(r.purpose, 0) + 1
    span = requests[-1].t - requests[0].t if requests else 0.0
    return {
        "requests": len(requests),
        "duration_s": round(span, 3),
        "rate_per_s": round((len(requests) - 1) / span, 6) if span > 0 else None,
        "by_urgency": dict(sorted(by_urgency.items())),
        "by_purpose": dict(sorted(by_purpose.items())),
    }
