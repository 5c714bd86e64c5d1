"""Decide and record: the step /select and /select-and-run share."""

from __future__ import annotations

from dataclasses import dataclass

from router.api.body import redacted
from router.api.decision import to_decision
from router.api.errors import ApiError
from router.api.resolve import resolve_need
from router.api.schemas import Decision, SelectRequest
from router.api.services import Services
from router.db.jobs import new_job_id, record_selection
from router.selection import Need, Selection, select


@dataclass(frozen=True)
class Decided:
    job_id: str
    need: Need
    urgency: str
    selection: Selection
    decision: Decision


def decide(svc: Services, req: SelectRequest) -> Decided:
    """Validate against the catalog, select on the live backend views, count it. Raises 4xx."""
    catalog = svc.catalogs.current
    need, urgency = resolve_need(req, catalog)
    selection = select(catalog, need, svc.backend_state.snapshot(catalog), urgency)
    chosen = selection.chosen
    svc.metrics.selections.labels(
        chosen.model.id if chosen else "", chosen.tier if chosen else "", selection.reason_code
    ).inc()
    job_id = new_job_id()
    return Decided(job_id, need, urgency, selection, to_decision(selection, job_id))


def record(
    svc: Services, req: SelectRequest, d: Decided, status: str, idempotency_key: str | None = None
) -> None:
    """The `jobs` row of a decision (status `failed` when nothing could be chosen)."""
    record_selection(
        svc.database,
        job_id=d.job_id,
        created_at=svc.clock.now(),
        request=redacted(req),
        urgency=d.urgency,
        decision=d.decision.model_dump(mode="json", exclude={"candidates"}),
        selection=d.selection,
        status=status,
        idempotency_key=idempotency_key,
    )


def raise_if_nothing_chosen(d: Decided) -> None:
    sel = d.selection
    if sel.chosen is None:
        status = 503 if sel.reason_code == "no_backend_available" else 422
        raise ApiError(status, sel.reason_code, sel.selection_reason, d.decision.model_dump(mode="json"))
