"""`simulate replay --record DATABASE_URL`: the router policy's jobs and attempts written as the live
runner writes them (jobs + model_usage_log), on virtual timestamps from `--start`, so that
`comfy-router report` and the Grafana dashboards run on a replayed day.

Shapes follow router.runs.runner and router.db.jobs: an attempt's `started_at` is its submission,
`actual_s` the seconds from submission to its outcome, `queue_s`/`load_s`/`estimated_s` the
selector's estimates, `cost_usd` the backend's usd_per_hour x seconds on the GPU, `hosted_usd` the
hosted price of an image it produced, `quality_score` the rung's quality; a job's `deadline_met` is
false unless it succeeded in time. A request the selector refused has a failed job and no attempt.
Ids are derived from (start, seed, request index), so recording the same replay twice is refused
instead of counted twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from router.replay.records import AttemptRecord, RequestRecord

_NAMESPACE = uuid.UUID("6b3f6f8e-2f1c-4b8e-9a57-3c0a7e5d9b21")
RUNNER = "trace-replay"


def job_id(start: datetime, seed: int, index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{start.isoformat()}|{seed}|{index}"))


def _at(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


def job_row(record: RequestRecord, start: datetime, seed: int) -> Job:
    last = record.attempts[-1] if record.attempts else None
    succeeded = record.status == "succeeded"
    first = record.first
    model, tier, backend = (last.model, last.tier, last.backend) if last else (first or (None, None, None))
    return Job(
        id=job_id(start, seed, record.index),
        created_at=_at(start, record.arrived_at),
        client_id=None,
        purpose=record.request.purpose,
        urgency=record.urgency,
        deadline_s=record.deadline_s,
        quality_target=record.request.quality,
        request=record.request.model_dump(mode="json", exclude_none=True),
        decision=(
            {"model": first[0], "tier": first[1], "backend": first[2], "source": RUNNER} if first else None
        ),
        status=record.status,
        model_name=model,
        tier=tier,
        backend=backend,
        selection_reason=record.selection_reason,
        reason_code=record.reason_code,
        degraded=record.degraded,
        deadline_met=record.deadline_met,
        estimated_cost_usd=record.first_estimated_cost_usd,
        cost_usd=record.cost_usd if record.attempts else None,
        error=None if succeeded else record.error,
        outputs=None,
        finished_at=_at(start, record.finished_at) if record.finished_at is not None else None,
        idempotency_key=None,
    )


def attempt_row(record: RequestRecord, a: AttemptRecord, start: datetime, seed: int) -> ModelUsageLog:
    values: dict[str, Any] = {
        "job_id": job_id(start, seed, record.index),
        "attempt": a.attempt,
        "source": "router",
        "prompt_id": str(uuid.uuid5(_NAMESPACE, f"{start.isoformat()}|{seed}|{record.index}|{a.attempt}")),
        "runner": RUNNER,
        "started_at": _at(start, a.submitted_at),
        "finished_at": _at(start, a.ended_at),
        "backend": a.backend,
        "model_name": a.model,
        "tier": a.tier,
        "purpose": record.request.purpose,
        "steps": a.steps,
        "width": a.width,
        "height": a.height,
        "estimated_s": round(a.estimated_s, 4),
        "actual_s": round(a.actual_s, 4),
        "queue_s": round(a.estimated_queue_s, 4),
        "load_s": round(a.estimated_load_s, 4),
        "outcome": a.outcome,
        "error": a.error,
        "estimated_cost_usd": round(a.estimated_cost_usd, 8),
        "cost_usd": a.cost_usd,
        "hosted_usd": a.hosted_usd,
        "quality_score": a.quality,
        "selection_reason": f"{a.model}/{a.tier} on {a.backend}" + (" (degraded)" if a.degraded else ""),
        "degraded": a.degraded,
    }
    return ModelUsageLog(**values)


def record_replay(db: Database, records: list[RequestRecord], start: datetime, seed: int) -> dict[str, int]:
    """Write every job and attempt in one transaction; returns the counts."""
    jobs = [job_row(r, start, seed) for r in records]
    attempts = [attempt_row(r, a, start, seed) for r in records for a in r.attempts]
    with db.session() as s:
        s.add_all(jobs)
        s.flush()  # jobs first: attempts reference them
        s.add_all(attempts)
    return {"jobs": len(jobs), "attempts": len(attempts)}
