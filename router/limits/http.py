"""The limits at the HTTP edge: the acting client, admission, hand-off to the runner, 429s with
`Retry-After`, and GET /admin/quotas (the admin scope is checked by router/api/auth.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from flask import Blueprint, Flask, Response, g, jsonify

from router.api.auth import acting_client
from router.api.errors import error_response
from router.api.schemas import SelectRequest
from router.api.services import Services, services
from router.db.models import Job
from router.db.usage import job_by_idempotency_key
from router.limits.capped_state import CappedBackendState
from router.limits.quotas import Admission, QuotaRefused

bp = Blueprint("limits", __name__)
Req = TypeVar("Req", bound=SelectRequest)
DUPLICATE_WAIT_S = 1.0  # a copy of the request records its job within milliseconds of admission


def _bind(req: Req) -> Req:
    client = acting_client(req.client_id)
    return req if client == req.client_id else req.model_copy(update={"client_id": client})


def for_selection(svc: Services) -> Services:
    """The services a decision sees: backends at their concurrency cap offered as unavailable.
    Only decisions: /readyz and /backends still show the backends' own health."""
    if svc.quotas is None or not svc.quotas.limits.caps_backends:
        return svc
    return replace(svc, backend_state=CappedBackendState(svc.backend_state, svc.quotas))


def check_request(svc: Services, req: Req) -> Req:
    """/select: the acting client (403 for another client's id) and its requests per minute."""
    req = _bind(req)
    if svc.quotas is not None:
        svc.quotas.check_request(req.client_id)
    return req


def admit_run(svc: Services, req: Req, idempotency_key: str | None = None) -> tuple[Req, Job | None]:
    """/select-and-run: also the spend caps, a running slot and the images of the day. What is
    taken is given back when the job ends (`hand_off`), or at the end of the request if it never
    reached the runner (a refusal, an invalid input, a lost Idempotency-Key race).

    Copies of one request sent at once with the same Idempotency-Key each hold quota until one of
    them records the job; a copy refused meanwhile answers that job instead of a 429 (second item)."""
    req = _bind(req)
    if svc.quotas is None:
        return req, None
    try:
        g.admission = svc.quotas.admit_run(req.client_id, images=req.batch_size)
    except QuotaRefused:
        existing = _job_for_key(svc, idempotency_key) if idempotency_key is not None else None
        if existing is None:
            raise
        return req, existing
    return req, None


def _job_for_key(svc: Services, key: str) -> Job | None:
    """The job of an Idempotency-Key, waiting up to DUPLICATE_WAIT_S for a copy to record it."""
    end = svc.clock.monotonic() + DUPLICATE_WAIT_S
    while True:
        job = job_by_idempotency_key(svc.database, key)
        if job is not None or svc.clock.monotonic() >= end:
            return job
        time.sleep(0.025)


def hand_off() -> Callable[[], None] | None:
    """The runner now owns the admission: it calls the returned function when the job ends."""
    admission: Admission | None = g.pop("admission", None)
    return admission.release if admission is not None else None


def register(app: Flask) -> None:
    @app.errorhandler(QuotaRefused)
    def _quota(exc: QuotaRefused) -> tuple[Response, int]:
        response, status = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        return response, status

    @app.teardown_request
    def _not_handed_off(_exc: BaseException | None) -> None:
        admission: Admission | None = g.pop("admission", None)
        if admission is not None:
            admission.refund()  # nothing ran: the slot and the images go back


@bp.get("/admin/quotas")
def admin_quotas() -> tuple[Response, int]:
    svc = services()
    if svc.quotas is None:
        return jsonify({"limits": None, "counters": [], "alerts": []}), 200
    return jsonify(svc.quotas.state()), 200
