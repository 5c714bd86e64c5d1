"""POST /select: decide only, and record the decision as a `jobs` row with status `selected`."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from router.api.body import parse_body, redacted
from router.api.decision import to_decision
from router.api.errors import ApiError
from router.api.resolve import resolve_need
from router.api.schemas import SelectRequest
from router.api.services import services
from router.db.jobs import new_job_id, record_selection
from router.selection import select

log = logging.getLogger(__name__)
bp = Blueprint("select", __name__)


@bp.post("/select")
def post_select() -> tuple[Response, int]:
    req = parse_body(SelectRequest)
    svc = services()
    catalog = svc.catalogs.current
    need, urgency = resolve_need(req, catalog)
    selection = select(catalog, need, svc.backend_state.snapshot(catalog), urgency)
    chosen = selection.chosen
    svc.metrics.selections.labels(
        chosen.model.id if chosen else "", chosen.tier if chosen else "", selection.reason_code
    ).inc()
    job_id: str | None = new_job_id()
    decision = to_decision(selection, job_id)
    try:
        record_selection(
            svc.database,
            job_id=job_id or "",
            created_at=svc.clock.now(),
            request=redacted(req),
            urgency=urgency,
            decision=decision.model_dump(mode="json", exclude={"candidates"}),
            selection=selection,
        )
    except Exception:  # the decision is still worth answering; the log says it was not recorded
        log.exception("could not record the decision of /select")
        decision = decision.model_copy(update={"job_id": None})
    if selection.chosen is None:
        status = 503 if selection.reason_code == "no_backend_available" else 422
        raise ApiError(
            status, selection.reason_code, selection.selection_reason, decision.model_dump(mode="json")
        )
    return jsonify(decision.model_dump(mode="json")), 200
