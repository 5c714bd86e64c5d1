"""POST /select: decide only, and record the decision as a `jobs` row with status `selected`."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from router.api.body import parse_body
from router.api.deciding import decide, raise_if_nothing_chosen, record
from router.api.schemas import SelectRequest
from router.api.services import services
from router.limits.http import check_request, for_selection

log = logging.getLogger(__name__)
bp = Blueprint("select", __name__)


@bp.post("/select")
def post_select() -> tuple[Response, int]:
    req = parse_body(SelectRequest)
    svc = services()
    req = check_request(svc, req)  # the acting client and its requests per minute (429)
    d = decide(for_selection(svc), req)  # backends at their concurrency cap held back
    decision = d.decision
    try:
        record(svc, req, d, status="selected")
    except Exception:  # the decision is still worth answering; the log says it was not recorded
        log.exception("could not record the decision of /select")
        decision = decision.model_copy(update={"job_id": None})
    raise_if_nothing_chosen(d)
    return jsonify(decision.model_dump(mode="json")), 200
