"""What happened to each request of a replay, attempt by attempt (the input of the metrics and of
`--record`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from router.replay.fleet import Work
from router.replay.trace import TraceRequest
from router.selection.types import Candidate


@dataclass
class AttemptRecord:
    attempt: int
    backend: str
    model: str
    tier: str
    steps: int
    width: int
    height: int
    quality: float
    submitted_at: float  # virtual seconds
    started_at: float | None  # on the GPU (None: never left the queue)
    ended_at: float
    outcome: str  # ok | degraded | timeout | oom
    error: str | None
    gpu_s: float
    cost_usd: float
    hosted_usd: float | None  # the hosted price of the image it produced
    estimated_s: float
    estimated_queue_s: float
    estimated_load_s: float
    estimated_cost_usd: float
    degraded: bool
    swapped: bool  # the model had to be loaded

    @property
    def produced(self) -> bool:
        return self.outcome in ("ok", "degraded")

    @property
    def actual_s(self) -> float:
        """Seconds from submission to the outcome (what the live runner logs as actual_s)."""
        return self.ended_at - self.submitted_at


@dataclass
class RequestRecord:
    index: int
    request: TraceRequest
    urgency: str
    deadline_s: float
    arrived_at: float
    attempts: list[AttemptRecord] = field(default_factory=list)
    status: str = "running"  # succeeded | failed
    finished_at: float | None = None
    quality: float | None = None  # of the image delivered
    degraded: bool = False
    selection_reason: str = ""
    reason_code: str = ""
    first: tuple[str, str, str] | None = None  # (model, tier, backend) first chosen
    first_estimated_cost_usd: float | None = None
    error: str | None = None

    @property
    def deadline_met(self) -> bool:
        return (
            self.status == "succeeded"
            and self.finished_at is not None
            and self.finished_at <= self.arrived_at + self.deadline_s + 1e-9
        )

    @property
    def latency_s(self) -> float | None:
        if self.status != "succeeded" or self.finished_at is None:
            return None
        return self.finished_at - self.arrived_at

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)


def attempt_record(
    work: Work, rung: Candidate, outcome: str, error: str | None, degraded: bool
) -> AttemptRecord:
    """The record of a finished Work that ran `rung` (outcome already in the live runner's words)."""
    assert work.ended_at is not None
    produced = outcome in ("ok", "degraded")
    gpu_s = work.gpu_s
    e = rung.estimate
    return AttemptRecord(
        attempt=work.attempt,
        backend=work.backend_id,
        model=work.model.id,
        tier=work.tier,
        steps=work.steps,
        width=work.width,
        height=work.height,
        quality=rung.quality,
        submitted_at=work.submitted_at,
        started_at=work.started_at,
        ended_at=work.ended_at,
        outcome=outcome,
        error=error,
        gpu_s=gpu_s,
        cost_usd=rung.view.backend.usd_per_hour * gpu_s / 3600.0,
        hosted_usd=(work.model.hosted_usd_per_image or 0.0) * work.batch_size if produced else None,
        estimated_s=e.total_s,
        estimated_queue_s=e.queue_s,
        estimated_load_s=e.load_s,
        estimated_cost_usd=rung.estimated_cost_usd,
        degraded=degraded,
        swapped=work.loaded,
    )
