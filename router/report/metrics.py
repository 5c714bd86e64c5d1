"""The report's numbers, computed in Python from the rows of one time window.

Definitions (kept the same as grafana/dashboards/pilot-gates.json unless said otherwise):

- A *request* is a job's attempts together (`model_usage_log.job_id`); a row without a job (a run
  that bypassed the router, `source = 'direct'`) is a request of its own. Its model and purpose are
  the first attempt's; its latency is last `finished_at` minus first `started_at`.
- A request *produced* an image when any attempt ended `ok` or `degraded`. Requests that produced
  nothing and were cancelled or are still running are left out of the error rate and the latencies.
- *Error rate* = requests that produced nothing / requests counted.
- *Workflow*: purpose `face-swap` or a model named `faceswap*` is "Face swap", a model named `flux*`
  is "FLUX", anything else "Other".
- *p95* is the linearly interpolated percentile (PostgreSQL `percentile_cont`, numpy's default):
  rank = p x (n - 1) on the sorted values, interpolating between the two neighbours.
- *Savings* = hosted price (`hosted_usd`) of the attempts that produced an image minus the GPU cost
  (`cost_usd`) of every attempt, failed ones included. *Projected monthly savings* scales that to
  30 days: savings x 30 d / window length.
- *Uptime* per backend = share of `vram_usage_log` rows with source `comfyui` and `up` true; the gate
  uses the worst backend. Differs from the dashboard: the dashboard also reads the 1-minute rollups
  (`vram_usage_minute`) for minutes whose raw rows retention has already removed; the report reads
  the raw rows only.
- Savings gate: the dashboard passes any positive saving in range; the report asks for a projected
  monthly saving of at least `--min-savings-usd-month`.

Per model and tier (from attempts, i.e. `model_usage_log` rows; `running` and `cancelled` attempts
are left out): runs, success rate (ok or degraded / runs), p50/p95 of `actual_s` of the successful
runs, mean estimate error % = mean of (actual_s - estimated_s) / estimated_s x 100, estimated and
actual GPU cost, GPU cost per image, mean quality_score, cost per quality point (GPU cost per image /
mean quality), degraded share of the images, hosted price of the same images.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from router.db.models import ModelUsageLog, VramUsageLog

PRODUCED = frozenset({"ok", "degraded"})
NOT_COUNTED = frozenset({"running", "cancelled"})
MONTH = timedelta(days=30)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linearly interpolated percentile (`percentile_cont`): rank p x (n - 1). None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = p * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def workflow_of(model_name: str, purpose: str | None) -> str:
    if purpose == "face-swap" or model_name.startswith("faceswap"):
        return "Face swap"
    if model_name.startswith("flux"):
        return "FLUX"
    return "Other"


@dataclass(frozen=True)
class ModelTierStats:
    model_name: str
    tier: str | None
    runs: int
    images: int
    success_rate: float | None
    p50_s: float | None
    p95_s: float | None
    mean_estimate_error_pct: float | None
    estimated_cost_usd: float
    cost_usd: float
    gpu_cost_per_image_usd: float | None
    mean_quality: float | None
    cost_per_quality_point_usd: float | None
    degraded_share: float | None
    hosted_usd: float


@dataclass(frozen=True)
class WorkflowLatency:
    workflow: str
    requests: int
    p95_s: float | None


@dataclass(frozen=True)
class WindowStats:
    since: datetime
    until: datetime
    requests: int
    failed_requests: int
    error_rate: float | None
    workflows: list[WorkflowLatency]
    models: list[ModelTierStats]
    gpu_cost_usd: float
    hosted_usd: float
    savings_usd: float
    projected_monthly_savings_usd: float
    uptime_by_backend: dict[str, float] = field(default_factory=dict)

    @property
    def worst_uptime(self) -> float | None:
        return min(self.uptime_by_backend.values()) if self.uptime_by_backend else None

    def p95(self, workflow: str) -> float | None:
        return next((w.p95_s for w in self.workflows if w.workflow == workflow), None)


@dataclass
class _Request:
    first_start: datetime
    model_name: str
    purpose: str | None
    last_finish: datetime | None = None
    produced: bool = False
    cancelled: bool = False
    running: bool = False


def compute(session: Session, since: datetime, until: datetime) -> WindowStats:
    """Everything the report shows for attempts started in [since, until)."""
    rows = session.scalars(
        select(ModelUsageLog)
        .where(ModelUsageLog.started_at >= since, ModelUsageLog.started_at < until)
        .order_by(ModelUsageLog.started_at, ModelUsageLog.attempt, ModelUsageLog.id)
    ).all()
    requests: dict[str, _Request] = {}
    by_rung: dict[tuple[str, str | None], list[ModelUsageLog]] = defaultdict(list)
    gpu_cost = hosted = 0.0
    for row in rows:
        key = row.job_id or f"direct:{row.id}"
        req = requests.get(key)
        if req is None:  # rows come ordered by start: the first one seen is the first attempt
            req = requests[key] = _Request(row.started_at, row.model_name, row.purpose)
        if row.finished_at is not None and (req.last_finish is None or row.finished_at > req.last_finish):
            req.last_finish = row.finished_at
        req.produced |= row.outcome in PRODUCED
        req.cancelled |= row.outcome == "cancelled"
        req.running |= row.outcome == "running"
        gpu_cost += row.cost_usd or 0.0
        if row.outcome in PRODUCED:
            hosted += row.hosted_usd or 0.0
        if row.outcome not in NOT_COUNTED:
            by_rung[(row.model_name, row.tier)].append(row)

    counted = [r for r in requests.values() if r.produced or not (r.cancelled or r.running)]
    failed = sum(1 for r in counted if not r.produced)
    latencies: dict[str, list[float]] = defaultdict(list)
    per_workflow: dict[str, int] = defaultdict(int)
    for r in counted:
        wf = workflow_of(r.model_name, r.purpose)
        per_workflow[wf] += 1
        if r.last_finish is not None:
            latencies[wf].append((r.last_finish - r.first_start).total_seconds())
    workflows = [
        WorkflowLatency(wf, per_workflow[wf], percentile(latencies[wf], 0.95)) for wf in sorted(per_workflow)
    ]
    savings = hosted - gpu_cost
    window_s = (until - since).total_seconds()
    projected = savings * MONTH.total_seconds() / window_s if window_s > 0 else 0.0
    return WindowStats(
        since=since,
        until=until,
        requests=len(counted),
        failed_requests=failed,
        error_rate=failed / len(counted) if counted else None,
        workflows=workflows,
        models=[_rung_stats(m, t, rs) for (m, t), rs in sorted(by_rung.items(), key=_rung_key)],
        gpu_cost_usd=gpu_cost,
        hosted_usd=hosted,
        savings_usd=savings,
        projected_monthly_savings_usd=projected,
        uptime_by_backend=_uptime(session, since, until),
    )


def _rung_key(item: tuple[tuple[str, str | None], list[ModelUsageLog]]) -> tuple[str, str]:
    return item[0][0], item[0][1] or ""


def _rung_stats(model: str, tier: str | None, rows: list[ModelUsageLog]) -> ModelTierStats:
    ok = [r for r in rows if r.outcome in PRODUCED]
    seconds = [r.actual_s for r in ok if r.actual_s is not None]
    errors = [
        (r.actual_s - r.estimated_s) / r.estimated_s * 100.0
        for r in rows
        if r.actual_s is not None and r.estimated_s
    ]
    cost = sum(r.cost_usd or 0.0 for r in rows)
    quality = _mean([r.quality_score for r in ok if r.quality_score is not None])
    per_image = cost / len(ok) if ok else None
    return ModelTierStats(
        model_name=model,
        tier=tier,
        runs=len(rows),
        images=len(ok),
        success_rate=len(ok) / len(rows) if rows else None,
        p50_s=percentile(seconds, 0.5),
        p95_s=percentile(seconds, 0.95),
        mean_estimate_error_pct=_mean(errors),
        estimated_cost_usd=sum(r.estimated_cost_usd or 0.0 for r in rows),
        cost_usd=cost,
        gpu_cost_per_image_usd=per_image,
        mean_quality=quality,
        cost_per_quality_point_usd=per_image / quality if per_image is not None and quality else None,
        degraded_share=sum(1 for r in ok if r.degraded or r.outcome == "degraded") / len(ok) if ok else None,
        hosted_usd=sum(r.hosted_usd or 0.0 for r in ok),
    )


def _uptime(session: Session, since: datetime, until: datetime) -> dict[str, float]:
    rows = session.execute(
        select(VramUsageLog.backend, VramUsageLog.up).where(
            VramUsageLog.source == "comfyui",
            VramUsageLog.up.is_not(None),
            VramUsageLog.backend.is_not(None),
            VramUsageLog.ts >= since,
            VramUsageLog.ts < until,
        )
    ).all()
    ups: dict[str, list[bool]] = defaultdict(list)
    for backend, up in rows:
        ups[str(backend)].append(bool(up))
    return {b: sum(v) / len(v) for b, v in sorted(ups.items())}
