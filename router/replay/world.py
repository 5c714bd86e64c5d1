"""What every policy of one replay shares: the catalog, the clock, the fleet, the request records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from router.catalog.schema import Catalog
from router.replay.engine import EventLoop
from router.replay.fleet import Fleet
from router.replay.records import RequestRecord
from router.replay.trace import TraceRequest
from router.selection.types import Need


@dataclass
class World:
    catalog: Catalog
    loop: EventLoop
    fleet: Fleet
    start: datetime  # wall time of virtual second 0 (records only)


def inputs_for(catalog: Catalog, purpose: str) -> frozenset[str]:
    """A trace line carries no images: assume the request brought what its purpose's models need
    (an inpaint request has its image and mask), as a valid API request would."""
    return frozenset(i for m in catalog.models if purpose in m.purposes for i in m.needs_inputs)


def need_for(catalog: Catalog, req: TraceRequest) -> Need:
    """The selector's Need of a trace line, as router.api.resolve builds it for an API request."""
    return Need.for_urgency(
        catalog,
        req.urgency,
        req.deadline_s,
        purpose=req.purpose,
        target_tier=req.quality,
        width=req.width,
        height=req.height,
        max_cost_usd=req.max_cost_usd,
        inputs=inputs_for(catalog, req.purpose),
    )


def new_record(catalog: Catalog, index: int, req: TraceRequest) -> RequestRecord:
    need = need_for(catalog, req)
    return RequestRecord(
        index=index, request=req, urgency=req.urgency, deadline_s=need.deadline_s, arrived_at=req.t
    )


def finish_failed(record: RequestRecord, t: float, error: str) -> None:
    record.status = "failed"
    record.finished_at = t
    record.error = error
