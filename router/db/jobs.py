"""Writing and reading `jobs` rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from router.db.database import Database
from router.db.models import Job
from router.selection.types import Selection


def new_job_id() -> str:
    return str(uuid.uuid4())


def record_selection(
    db: Database,
    *,
    job_id: str,
    created_at: datetime,
    request: dict[str, Any],
    urgency: str,
    decision: dict[str, Any],
    selection: Selection,
    status: str = "selected",
    idempotency_key: str | None = None,
) -> None:
    chosen = selection.chosen
    row = Job(
        id=job_id,
        created_at=created_at,
        client_id=request.get("client_id"),
        purpose=request["purpose"],
        urgency=urgency,
        deadline_s=selection.deadline_s,
        quality_target=request.get("quality", "high"),
        request=request,
        decision=decision,
        status=status if chosen else "failed",
        model_name=chosen.model.id if chosen else None,
        tier=chosen.tier if chosen else None,
        backend=chosen.view.backend.id if chosen else None,
        selection_reason=selection.selection_reason,
        reason_code=selection.reason_code,
        degraded=False,
        estimated_cost_usd=chosen.estimated_cost_usd if chosen else None,
        finished_at=None if chosen else created_at,
        error=None if chosen else selection.selection_reason,
        idempotency_key=idempotency_key,
    )
    with db.session() as s:
        s.add(row)


def get_job(db: Database, job_id: str) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)
