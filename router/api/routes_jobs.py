"""POST /select-and-run, the jobs routes and GET /backends."""

from __future__ import annotations

import base64
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import IntegrityError

from router.api.auth import bound_client, may_see
from router.api.body import parse_body, redacted
from router.api.deciding import Decided, decide, raise_if_nothing_chosen
from router.api.errors import ApiError, field_error
from router.api.schemas import FeedbackRequest, JobOut, SelectAndRunRequest
from router.api.services import Services, services
from router.db.jobs import selection_values
from router.db.models import Feedback, Job, ModelUsageLog
from router.db.spool_writer import is_unavailable
from router.db.usage import TERMINAL, job_by_idempotency_key, job_with_attempts
from router.limits.http import admit_run, for_selection, hand_off
from router.runs.render import missing_request_fields
from router.runs.runner import JobSpec
from router.selection import Candidate
from router.workflows.templates import TemplateRegistry

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__)

IMAGE_SLOTS = {"images": "image", "face_image": "face_image", "mask": "mask"}
# On a job answered from this process's memory because its rows are not in the database yet
# (spooled while the database is down): "false". Absent on answers read from the database.
PERSISTED_HEADER = "X-Comfy-Router-Persisted"


@bp.post("/select-and-run")
def select_and_run() -> tuple[Response, int]:
    svc = services()
    runner = svc.runner
    if runner is None:
        raise ApiError(503, "no_runner", "this router has no ComfyUI backends configured to run on")
    req = parse_body(SelectAndRunRequest)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise field_error("Idempotency-Key", "must be 1 to 255 characters")
    if key is not None and (existing := _job_by_key(svc, key)) is not None:
        return _existing(svc, existing, req.wait)
    _check_callback(svc, req.callback_url)
    req, duplicate = admit_run(svc, req, key)  # the acting client and its quotas (429)
    if duplicate is not None:  # refused only while copies of this request held the quota
        return _existing(svc, duplicate, req.wait)
    d = decide(for_selection(svc), req)  # backends at their concurrency cap held back
    try:
        _record_queued(svc, req, d, key)
    except IntegrityError:
        # Another request (maybe another router process) took this key first: answer its job.
        existing = job_by_idempotency_key(svc.database, key or "")
        if existing is None:
            raise
        return _existing(svc, existing, req.wait)
    raise_if_nothing_chosen(d)
    job_id, need, urgency, chosen = d.job_id, d.need, d.urgency, d.selection.chosen
    assert chosen is not None  # raise_if_nothing_chosen
    _check_inputs_for(svc, job_id, chosen, req)
    spec = JobSpec(
        job_id=job_id,
        need=need,
        urgency=urgency,
        first=chosen,
        inputs=_inputs(req),
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seed=req.seed if req.seed is not None else secrets.randbelow(2**48),
        output=req.output,
        front=need.front,
        client_id=req.client_id,
        on_done=hand_off(),
    )
    if not req.wait:
        runner.submit(spec).add_done_callback(lambda _f: _callback(svc, job_id, req.callback_url))
        return _job_answer(svc, job_id), 202
    runner.run(spec)
    _callback(svc, job_id, req.callback_url)
    return _job_answer(svc, job_id), 200


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return _job_answer(services(), job_id)


def _job_answer(svc: Services, job_id: str) -> Response:
    view, persisted = job_view_persisted(svc, job_id)
    response = jsonify(view)
    if not persisted:
        response.headers[PERSISTED_HEADER] = "false"
    return response


def _record_queued(svc: Services, req: SelectAndRunRequest, d: Decided, key: str | None) -> None:
    """The job's row, through the durable writer: spooled to local disk if the database is down."""
    assert svc.writes is not None  # built with the runner
    svc.writes.insert_job(
        selection_values(
            job_id=d.job_id,
            created_at=svc.clock.now(),
            request=redacted(req),
            urgency=d.urgency,
            decision=d.decision.model_dump(mode="json", exclude={"candidates"}),
            selection=d.selection,
            status="queued",
            idempotency_key=key,
        )
    )


def _job_by_key(svc: Services, key: str) -> Job | None:
    """The job holding an Idempotency-Key: in memory (maybe not persisted yet), else in the database.
    While the database is down a key not in memory cannot be checked: refused (503) rather than
    risk running the same request twice."""
    job_id = svc.writes.job_id_for_key(key) if svc.writes is not None else None
    found = svc.writes.view(job_id) if svc.writes is not None and job_id is not None else None
    if found is not None:
        return found[0]
    try:
        return job_by_idempotency_key(svc.database, key)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise ApiError(
            503,
            "database_unavailable",
            "the database is unreachable, so this Idempotency-Key cannot be checked against earlier"
            " requests; retry later (or send the request without the key)",
        ) from exc


@bp.get("/jobs/<job_id>/outputs/<int:index>")
def get_output(job_id: str, index: int) -> Response:
    svc = services()
    if bound_client() is not None:
        job_view(svc, job_id)  # 404 unless the job is that client's
    data = svc.outputs.load(job_id, index) if svc.outputs else None
    if data is None:
        raise ApiError(404, "not_found", f"job {job_id} has no output {index}")
    return Response(data, mimetype="image/png")


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    svc = services()
    view = job_view(svc, job_id)
    if view["status"] in TERMINAL:
        raise ApiError(409, "job_finished", f"job {job_id} is already {view['status']}")
    if svc.runner is None or not svc.runner.cancel(job_id):
        raise ApiError(409, "not_here", f"job {job_id} is not running in this router process")
    control = svc.runner.control(job_id)
    if control is not None:
        control.done.wait(timeout=30)
    return jsonify(job_view(svc, job_id)), 200


@bp.post("/jobs/<job_id>/feedback")
def feedback(job_id: str) -> tuple[Response, int]:
    svc = services()
    body = parse_body(FeedbackRequest)
    job_view(svc, job_id)  # 404 for an unknown job
    with svc.database.session() as s:
        s.add(Feedback(job_id=job_id, rating=body.rating, comment=body.comment, created_at=svc.clock.now()))
    return jsonify({"job_id": job_id, "rating": body.rating}), 201


@bp.get("/backends")
def backends() -> Response:
    svc = services()
    describe = getattr(svc.backend_state, "describe", None)
    catalog = svc.catalogs.current
    if describe is None:
        views = svc.backend_state.snapshot(catalog)
        rows: list[dict[str, Any]] = [
            {"id": v.backend.id, "healthy": v.healthy, "vram_total_mb": v.backend.vram_mb, "live": False}
            for v in views
        ]
    else:
        rows = describe(catalog)
    return jsonify({"backends": rows, "simulated": svc.simulated})


def job_view(svc: Services, job_id: str) -> dict[str, Any]:
    return job_view_persisted(svc, job_id)[0]


def job_view_persisted(svc: Services, job_id: str) -> tuple[dict[str, Any], bool]:
    """The Job answer, and whether it was read from the database (False: from this process's
    memory, for a job whose writes wait in the spool or while the database is down)."""
    found, persisted = _find_job(svc, job_id)
    # Another client's job is answered as unknown: a key must not learn which ids exist.
    if found is None or not may_see(found[0].client_id):
        raise ApiError(404, "not_found", f"no job {job_id}")
    job, attempts = found
    view = {
        "id": job.id,
        "status": job.status,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "purpose": job.purpose,
        "urgency": job.urgency,
        "deadline_s": job.deadline_s,
        "model": job.model_name,
        "tier": job.tier,
        "backend": job.backend,
        "selection_reason": job.selection_reason,
        "reason_code": job.reason_code,
        "degraded": job.degraded,
        "deadline_met": job.deadline_met,
        "estimated_cost_usd": job.estimated_cost_usd,
        "cost_usd": job.cost_usd,
        "error": job.error,
        "outputs": job.outputs or [],
        "attempts": [_attempt_view(a) for a in attempts],
        "decision": job.decision,
    }
    # Through the answer model, so the OpenAPI document and the answers cannot drift apart.
    return JobOut.model_validate(view).model_dump(mode="json", exclude_none=False), persisted


def _find_job(svc: Services, job_id: str) -> tuple[tuple[Job, list[ModelUsageLog]] | None, bool]:
    # No job id holds a NUL, and PostgreSQL refuses one in a text parameter: not found, not a 500.
    if "\x00" in job_id:
        return None, True
    writes = svc.writes
    if writes is not None and writes.pending(job_id):
        return writes.view(job_id), False
    try:
        return job_with_attempts(svc.database, job_id), True
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        remembered = writes.view(job_id) if writes is not None else None
        if remembered is None:
            raise ApiError(
                503, "database_unavailable", f"the database is unreachable; job {job_id} cannot be read now"
            ) from exc
        return remembered, False


def _attempt_view(a: ModelUsageLog) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "model": a.model_name,
        "tier": a.tier,
        "backend": a.backend,
        "steps": a.steps,
        "width": a.width,
        "height": a.height,
        "started_at": a.started_at.isoformat(),
        "finished_at": a.finished_at.isoformat() if a.finished_at else None,
        "estimated_s": a.estimated_s,
        "duration_s": a.actual_s,
        "outcome": a.outcome,
        "error": a.error,
        "cost_usd": a.cost_usd,
    }


def _existing(svc: Services, job: Job, wait: bool) -> tuple[Response, int]:
    """The same Idempotency-Key returns the same job, never a second run; a refusal, the same refusal."""
    if job.status == "failed" and job.model_name is None and job.reason_code:
        status = 503 if job.reason_code == "no_backend_available" else 422
        raise ApiError(status, job.reason_code, job.selection_reason or job.reason_code, job.decision)
    control = svc.runner.control(job.id) if svc.runner else None
    if wait and control is not None:
        control.done.wait(timeout=job.deadline_s * 2 + 60)
    view = job_view(svc, job.id)
    return jsonify(view), (200 if view["status"] in TERMINAL else 202)


def _check_inputs_for(svc: Services, job_id: str, rung: Candidate, req: SelectAndRunRequest) -> None:
    given = {name for name in ("prompt", "images", "mask", "face_image") if getattr(req, name)}
    missing = missing_request_fields(runner_templates(svc), rung, req.purpose, given)
    if missing:
        message = f"the {rung.model.workflow} workflow of {rung.model.id} needs {', '.join(missing)}"
        assert svc.writes is not None  # built with the runner
        svc.writes.update_job(job_id, status="failed", error=message, finished_at=svc.clock.now())
        raise ApiError(
            422, "validation_error", message, [{"field": f, "message": "required"} for f in missing]
        )


def runner_templates(svc: Services) -> TemplateRegistry:
    assert svc.runner is not None  # checked at the top of select_and_run
    return svc.runner.templates


def _inputs(req: SelectAndRunRequest) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if req.images:
        out["image"] = _b64(req.images[0])
    if req.face_image is not None:
        out["face_image"] = _b64(req.face_image)
    if req.mask is not None:
        out["mask"] = _b64(req.mask)
    return out


def _b64(text: str) -> bytes:
    return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text)


def _check_callback(svc: Services, url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise field_error("callback_url", "must be an http(s) URL")
    allowed = svc.settings.callback_hosts()
    if parts.hostname.lower() not in allowed:
        raise field_error(
            "callback_url",
            f"host {parts.hostname!r} is not on the allowlist "
            f"(COMFY_ROUTER_CALLBACK_HOSTS: {sorted(allowed) or 'empty'})",
        )


def _callback(svc: Services, job_id: str, url: str | None) -> None:
    if url is None:
        return
    import requests

    body = job_view(svc, job_id)
    for attempt in range(3):
        try:
            requests.post(url, json=body, timeout=5).raise_for_status()
            return
        except requests.RequestException as exc:
            log.warning("callback %d to %s for job %s failed: %s", attempt + 1, url, job_id, exc)
