"""`model_usage_log` rows (one per attempt) and the job's progress through its life."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from router.db.database import Database
from router.db.models import Job, ModelUsageLog

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "selected"})


@dataclass(frozen=True)
class AttemptStart:
    job_id: str
    attempt: int
    prompt_id: str
    started_at: datetime
    backend: str
    model_name: str
    tier: str
    purpose: str
    steps: int
    width: int
    height: int
    estimated_s: float
    queue_s: float
    load_s: float
    estimated_cost_usd: float
    quality_score: float
    selection_reason: str
    degraded: bool
    runner: str | None = None


def start_attempt(db: Database, a: AttemptStart, *, if_absent: bool = False) -> int:
    """Insert the attempt as `running` first, so a router that dies mid-run leaves a trace to re-attach to.

    (job_id, attempt) names an attempt of the router; `if_absent` makes a replay of the same
    insert return the existing row instead of a duplicate."""
    with db.session() as s:
        if if_absent:
            existing = s.scalar(
                select(ModelUsageLog.id).where(
                    ModelUsageLog.job_id == a.job_id,
                    ModelUsageLog.attempt == a.attempt,
                    ModelUsageLog.source == "router",
                )
            )
            if existing is not None:
                return int(existing)
        row = ModelUsageLog(**a.__dict__, outcome="running", source="router")
        s.add(row)
        s.flush()
        return row.id


def finish_attempt(
    db: Database,
    job_id: str,
    attempt: int,
    *,
    finished_at: datetime,
    actual_s: float | None,
    outcome: str,
    error: str | None,
    cost_usd: float | None,
    hosted_usd: float | None,
) -> None:
    """Record how attempt number `attempt` of `job_id` ended (idempotent: an UPDATE by key)."""
    with db.session() as s:
        s.execute(
            update(ModelUsageLog)
            .where(
                ModelUsageLog.job_id == job_id,
                ModelUsageLog.attempt == attempt,
                ModelUsageLog.source == "router",
            )
            .values(
                finished_at=finished_at,
                actual_s=actual_s,
                outcome=outcome,
                error=error,
                cost_usd=cost_usd,
                hosted_usd=hosted_usd,
            )
        )


def update_job(db: Database, job_id: str, **values: Any) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def attempts_of(db: Database, job_id: str) -> list[ModelUsageLog]:
    with db.session() as s:
        return list(
            s.scalars(
                select(ModelUsageLog).where(ModelUsageLog.job_id == job_id).order_by(ModelUsageLog.attempt)
            )
        )


def job_with_attempts(db: Database, job_id: str) -> tuple[Job, list[ModelUsageLog]] | None:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        rows = list(
            s.scalars(
                select(ModelUsageLog).where(ModelUsageLog.job_id == job_id).order_by(ModelUsageLog.attempt)
            )
        )
        return job, rows


def job_by_idempotency_key(db: Database, key: str) -> Job | None:
    with db.session() as s:
        return s.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()


def unfinished_attempts(db: Database) -> list[ModelUsageLog]:
    """Attempts a previous router process left running (for re-attaching on start)."""
    with db.session() as s:
        return list(s.scalars(select(ModelUsageLog).where(ModelUsageLog.outcome == "running")))
