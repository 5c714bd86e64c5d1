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
    insert_job(
        db,
        selection_values(
            job_id=job_id,
            created_at=created_at,
            request=request,
            urgency=urgency,
            decision=decision,
            selection=selection,
            status=status,
            idempotency_key=idempotency_key,
        ),
    )


def selection_values(
    *,
    job_id: str,
    created_at: datetime,
    request: dict[str, Any],
    urgency: str,
    decision: dict[str, Any],
    selection: Selection,
    status: str = "selected",
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """The `jobs` row of a decision, as column values (plain data: it may be spooled)."""
    chosen = selection.chosen
    return {
        "id": job_id,
        "created_at": created_at,
        "client_id": request.get("client_id"),
        "purpose": request["purpose"],
        "urgency": urgency,
        "deadline_s": selection.deadline_s,
        "quality_target": request.get("quality", "high"),
        "request": request,
        "decision": decision,
        "status": status if chosen else "failed",
        "model_name": chosen.model.id if chosen else None,
        "tier": chosen.tier if chosen else None,
        "backend": chosen.view.backend.id if chosen else None,
        "selection_reason": selection.selection_reason,
        "reason_code": selection.reason_code,
        "degraded": False,
        "deadline_met": None,
        "estimated_cost_usd": chosen.estimated_cost_usd if chosen else None,
        "cost_usd": None,
        "error": None if chosen else selection.selection_reason,
        "outputs": None,
        "finished_at": None if chosen else created_at,
        "idempotency_key": idempotency_key,
    }


def insert_job(db: Database, values: dict[str, Any], *, if_absent: bool = False) -> None:
    """Insert a `jobs` row; `if_absent` makes a replay of the same row a no-op (ids are
    client-generated UUIDs, so an existing id is this very row)."""
    with db.session() as s:
        if if_absent and s.get(Job, values["id"]) is not None:
            return
        s.add(Job(**values))


def get_job(db: Database, job_id: str) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)
