"""Re-attach to prompts a dead router process left running on ComfyUI, instead of losing them.

An attempt row is written as `running` with its prompt_id and its owner ("host:pid:boot id")
before the prompt is submitted. On start, a router claims (one atomic UPDATE) the running
attempts whose owner is provably dead: same host and the pid is gone. Attempts of a live
replica are never touched. A claimed prompt is followed on its backend's /history (polling is
fine here: recovery is off the request path, bounded in time) and its job is finished.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psutil
from sqlalchemy import select, update

from router.catalog.schema import Backend, Catalog
from router.clock import Clock
from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from router.runs.outputs import OutputStore

log = logging.getLogger(__name__)

HOST = socket.gethostname()


def runner_identity() -> str:
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str | None) -> bool:
    """True only when we can tell: an owner on this host whose process is gone."""
    if not owner:
        return True  # written before owners were recorded
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid_text))


def _is_zombie(pid: int) -> bool:
    """A killed process whose parent died too lingers as a zombie until init reaps it (slowly in
    some containers): it still answers kill(pid, 0) but will never finish its attempts."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True  # gone in the meantime


def claim_orphans(db: Database, me: str) -> list[ModelUsageLog]:
    with db.session() as s:
        rows = list(s.scalars(select(ModelUsageLog).where(ModelUsageLog.outcome == "running")))
    claimed = []
    for row in rows:
        if row.runner == me or not owner_is_dead(row.runner):
            continue
        with db.session() as s:
            won = s.execute(
                update(ModelUsageLog)
                .where(ModelUsageLog.id == row.id, ModelUsageLog.runner.is_not_distinct_from(row.runner))
                .where(ModelUsageLog.outcome == "running")
                .values(runner=me)
            ).rowcount  # type: ignore[attr-defined]
        if won:
            claimed.append(row)
    return claimed


def follow(
    db: Database,
    attempt: ModelUsageLog,
    catalog: Catalog,
    client_for: Callable[[Backend], Any],
    clock: Clock,
    outputs: OutputStore,
    sleep: Callable[[float], None],
    max_wait_s: float,
) -> str:
    """Wait (bounded) for the orphaned prompt and record how it ended. Returns the outcome."""
    backend = next((b for b in catalog.backends if b.id == attempt.backend), None)
    if backend is None or not attempt.prompt_id:
        return _close(
            db, attempt, clock, "backend_error", "router restarted; the attempt cannot be found again"
        )
    client = client_for(backend)
    waited = 0.0
    while waited <= max_wait_s:
        try:
            entry = client.history(attempt.prompt_id)
            queued = attempt.prompt_id in set(client.queue().running) | set(client.queue().pending)
        except Exception as exc:  # the backend is gone too: nothing left to wait for
            return _close(
                db, attempt, clock, "backend_error", f"router restarted and the backend is unreachable: {exc}"
            )
        if entry is not None:
            return _finish_from_history(db, attempt, entry, client, clock, outputs, backend)
        if not queued:
            return _close(
                db,
                attempt,
                clock,
                "backend_error",
                "router restarted; the backend no longer knows the prompt",
            )
        sleep(1.0)
        waited += 1.0
    return _close(
        db, attempt, clock, "timeout", f"router restarted; prompt still unfinished after {max_wait_s:.0f} s"
    )


def _finish_from_history(
    db: Database,
    attempt: ModelUsageLog,
    entry: Any,
    client: Any,
    clock: Clock,
    outputs: OutputStore,
    backend: Backend,
) -> str:
    if entry.status_str != "success":
        return _close(
            db, attempt, clock, "backend_error", f"finished on the backend with status {entry.status_str}"
        )
    stored = []
    for n, ref in enumerate(entry.images):
        data = client.fetch_image(ref)
        outputs.save(attempt.job_id or "", n, data)
        stored.append({"index": n, "url": f"/jobs/{attempt.job_id}/outputs/{n}", "bytes": len(data)})
    outcome = "degraded" if attempt.degraded else "ok"
    now = clock.now()
    actual_s = (now - attempt.started_at).total_seconds() if attempt.started_at else None
    with db.session() as s:
        row = s.get(ModelUsageLog, attempt.id)
        job = s.get(Job, attempt.job_id) if attempt.job_id else None
        if row is not None:
            row.outcome, row.finished_at, row.actual_s = outcome, now, actual_s
            row.error = "completed while no router watched it (re-attached after a restart)"
        if job is not None:
            deadline_at = job.created_at + timedelta(seconds=job.deadline_s)
            job.status, job.finished_at, job.outputs = "succeeded", now, stored
            job.model_name, job.tier, job.backend, job.degraded = (
                attempt.model_name,
                attempt.tier,
                backend.id,
                attempt.degraded,
            )
            job.deadline_met = _aware(now) <= _aware(deadline_at)
    return outcome


def _close(db: Database, attempt: ModelUsageLog, clock: Clock, outcome: str, error: str) -> str:
    now = clock.now()
    with db.session() as s:
        row = s.get(ModelUsageLog, attempt.id)
        job = s.get(Job, attempt.job_id) if attempt.job_id else None
        if row is not None:
            row.outcome, row.error, row.finished_at = outcome, error, now
        if job is not None and job.status in ("queued", "running"):
            job.status, job.error, job.finished_at, job.deadline_met = "failed", error, now, False
    log.warning("re-attached attempt %s of job %s: %s (%s)", attempt.id, attempt.job_id, outcome, error)
    return outcome


def _aware(t: Any) -> Any:
    from datetime import UTC

    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
