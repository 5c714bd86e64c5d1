"""A realistic day of comfy-router data for dashboards, reports and calibration tests.

`seed_day(session_or_engine, start=..., seed=...)` writes one UTC day starting at `start`:

- `jobs` and `model_usage_log`: about 600 requests from a catalog-driven stand-in for the router
  (several models, tiers, backends and purposes; queueing, model swaps, estimate errors per model;
  timeouts, OOMs, backend errors with retries on the next rung, invalid inputs, cancellations,
  degraded runs), a few `/select`-only decisions (status `selected`, no attempts), a few runs that
  bypassed the router (`source = 'direct'`, no job, often no estimate, tier or purpose), and one job
  still in flight at the end of the day (status `running`: a `backend_error` attempt, then an attempt
  with outcome `running` and no `finished_at`, as `router.db.usage.start_attempt` writes it).
- `vram_usage_log`: a sample every 30 s of each backend's GPU (`nvml`), the host (`host`) and each
  ComfyUI backend (`comfyui`), consistent with the runs above. The second backend is down for 30
  minutes from 14:00 (`up = false`, readings NULL); attempts sent to it then fail with
  `backend_error` and are retried on another backend when the model fits there.
- `feedback`: ratings for some succeeded jobs.

The same `seed` always writes the same rows. With an Engine they are committed here; with a Session
or a Connection they join its transaction (the caller commits). The answer counts what was written.
"""

from __future__ import annotations

import math
import random
import uuid
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from router.catalog import Catalog, Model, load_catalog
from router.catalog.schema import TIER_ORDER, Backend
from router.db.models import Feedback, Job, ModelUsageLog, VramUsageLog

CATALOG_PATH = Path(__file__).resolve().parents[2] / "models_config.json"

SAMPLE_S = 30
HOST = "gpu-node-1"
OUTAGE_START = timedelta(hours=14)
OUTAGE_LENGTH = timedelta(minutes=30)
DIRECT_RUNS = 6
BURST_SIZE = 12
SELECT_ONLY_SHARE = 0.03

PURPOSE_WEIGHTS = {
    "text-to-image": 30,
    "portrait": 12,
    "product": 12,
    "illustration": 8,
    "face-swap": 14,
    "text-rendering": 5,
    "img2img": 6,
    "inpaint": 5,
}
URGENCY_WEIGHTS = {"realtime": 15, "high": 25, "normal": 45, "batch": 15}
QUALITY_WEIGHTS = {"draft": 10, "standard": 30, "high": 45, "max": 15}
# How far each family's real durations sit from the catalog's time model (estimate error).
FAMILY_BIAS = {"flux1": 1.04, "sdxl": 1.08, "sd15": 0.95, "qwen-image": 1.12, "faceswap": 1.35}
FAILURE_RATES = {"backend_error": 0.012, "invalid": 0.015, "cancelled": 0.004, "oom": 0.006}
RESOLUTIONS = ((1024, 1024), (1024, 1024), (1024, 1024), (832, 1216), (1216, 832))


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


@dataclass
class _BackendState:
    spec: Backend
    index: int
    loaded: str | None = None
    busy_until: datetime | None = None
    # (start, end) of GPU work and of queue waits, and which model was resident from when
    runs: list[tuple[datetime, datetime]] = field(default_factory=list)
    waits: list[tuple[datetime, datetime]] = field(default_factory=list)
    residency: list[tuple[datetime, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    model: Model
    tier: str
    backend: str
    estimate_s: float
    degraded: bool


class _Day:
    def __init__(self, catalog: Catalog, start: datetime, seed: int) -> None:
        self.catalog = catalog
        self.start = start
        self.end = start + timedelta(days=1)
        self.rng = random.Random(seed)
        # Ids depend on the day too, so several days can be seeded into one database.
        self.uuid_rng = random.Random(f"{seed}:{start.isoformat()}")
        backends = [b for b in catalog.backends if b.enabled]
        if len(backends) < 2:
            raise ValueError("seed_day needs a catalog with at least two enabled backends")
        self.backends = {b.id: _BackendState(b, i) for i, b in enumerate(backends)}
        self.outage_backend = backends[1].id
        self.outage = (start + OUTAGE_START, start + OUTAGE_START + OUTAGE_LENGTH)
        self.models = [m for m in catalog.models if m.enabled]
        self.jobs: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.feedback: list[dict[str, Any]] = []
        self.vram: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------- helpers

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.uuid_rng.getrandbits(128), version=4))

    def _pick(self, weights: dict[str, int], allowed: set[str]) -> str:
        names = [n for n in weights if n in allowed]
        return self.rng.choices(names, [weights[n] for n in names])[0]

    def _down(self, backend: str, at: datetime) -> bool:
        return backend == self.outage_backend and self.outage[0] <= at < self.outage[1]

    def _known_down(self, backend: str, at: datetime) -> bool:
        """The router notices an outage after its first failures and a health check (about 90 s)."""
        return self._down(backend, at) and at >= self.outage[0] + timedelta(seconds=90)

    def _fits(self, model: Model, backend: _BackendState) -> bool:
        return model.vram_mb + self.catalog.vram_headroom_mb <= backend.spec.vram_mb

    def _run_s(self, model: Model, tier: str, backend: _BackendState, width: int, height: int) -> float:
        spec = model.tiers[tier]  # type: ignore[index]
        scale = spec.resolution_scale**2 * (width * height) / (model.time.ref_width * model.time.ref_height)
        return (model.time.base_s + model.time.per_step_s * spec.steps) * scale / backend.spec.speed_factor

    def _tiers_at_or_below(self, model: Model, wanted: str) -> list[str]:
        rank = TIER_ORDER.index(wanted)  # type: ignore[arg-type]
        return [t for t in reversed(TIER_ORDER[: rank + 1]) if t in model.tiers]

    def _plans(
        self, at: datetime, purpose: str, quality: str, deadline_s: float, width: int, height: int
    ) -> list[_Plan]:
        """Candidate rungs, best first: a rough stand-in for the router's selector and ladder."""
        plans: list[tuple[float, _Plan]] = []
        for model in self.models:
            if purpose not in model.purposes:
                continue
            for backend in self.backends.values():
                if not self._fits(model, backend) or self._known_down(backend.spec.id, at):
                    continue
                tiers = self._tiers_at_or_below(model, quality) or [min(model.tiers, key=TIER_ORDER.index)]
                for rung, tier in enumerate(tiers):
                    wait = max(0.0, ((backend.busy_until or at) - at).total_seconds())
                    load = 0.0 if backend.loaded == model.id else model.load_s
                    run = self._run_s(model, tier, backend, width, height)
                    quality_score = model.tiers[tier].quality  # type: ignore[index]
                    feasible = wait + load + run <= 0.8 * deadline_s
                    score = quality_score + self.rng.uniform(-4, 4) + (0 if feasible else -1000) - rung * 0.5
                    plans.append((score, _Plan(model, tier, backend.spec.id, run, degraded=rung > 0)))
        plans.sort(key=lambda p: -p[0])
        return [p for _, p in plans]

    # ---------------------------------------------------------------------------------- jobs

    def arrivals(self) -> list[tuple[datetime, bool]]:
        """(arrival, part of a batch burst): a busier working day, quiet nights, two n8n batch bursts."""
        times: list[tuple[datetime, bool]] = []
        t = 0.0
        while True:
            hour = (t / 3600) % 24
            rate_per_h = 40.0 if 8 <= hour < 20 else 9.0
            t += self.rng.expovariate(rate_per_h / 3600)
            if t >= 86_400 - 600:
                break
            times.append((self.start + timedelta(seconds=t), False))
        for burst_hour in (10.5, 16.25):
            for _ in range(BURST_SIZE):
                offset = burst_hour * 3600 + self.rng.uniform(0, 60)
                times.append((self.start + timedelta(seconds=offset), True))
        return sorted(times)

    def simulate_jobs(self) -> None:
        purposes = {p for m in self.models for p in m.purposes}
        urgency_names = set(self.catalog.urgencies)
        for created, burst in self.arrivals():
            purpose = self._pick(PURPOSE_WEIGHTS, purposes)
            if burst:
                purpose = "product" if "product" in purposes else purpose
                urgency = self._pick({"batch": 1, "normal": 1}, urgency_names)
            elif purpose == "face-swap":
                urgency = self._pick({"normal": 1, "batch": 3}, urgency_names)
            else:
                urgency = self._pick(URGENCY_WEIGHTS, urgency_names)
            quality = self._pick(QUALITY_WEIGHTS, set(TIER_ORDER))
            deadline_s = self.catalog.urgencies[urgency].deadline_s
            width, height = self.rng.choice(RESOLUTIONS)
            plans = self._plans(created, purpose, quality, deadline_s, width, height)
            if not plans:
                continue
            job = self._new_job(created, purpose, urgency, quality, deadline_s, width, height, plans[0])
            if self.rng.random() < SELECT_ONLY_SHARE:
                job.update(status="selected", finished_at=created + timedelta(milliseconds=4))
                self.jobs.append(job)
                continue
            self._run_job(job, plans, width, height)
            self.jobs.append(job)

    def _new_job(
        self,
        created: datetime,
        purpose: str,
        urgency: str,
        quality: str,
        deadline_s: float,
        width: int,
        height: int,
        plan: _Plan,
    ) -> dict[str, Any]:
        if plan.degraded:
            code = "degraded_deadline"
        elif urgency == "realtime":
            code = "fastest_feasible"
        elif self.backends[plan.backend].loaded == plan.model.id:
            code = "warm_model"
        else:
            code = self.rng.choices(["best_quality_in_deadline", "cheapest_in_band"], [7, 3])[0]
        reason = (
            f"{plan.model.id} {plan.tier} on {plan.backend}: est {plan.estimate_s:.1f}s "
            f"for a {deadline_s:.0f}s deadline ({code.replace('_', ' ')})"
        )
        rate = self.backends[plan.backend].spec.usd_per_hour / 3600
        return {
            "id": self._uuid(),
            "created_at": created,
            "client_id": self.rng.choice(["n8n-marketing", "n8n-catalog", "studio-app", None]),
            "purpose": purpose,
            "urgency": urgency,
            "deadline_s": deadline_s,
            "quality_target": quality,
            "request": {
                "purpose": purpose,
                "urgency": urgency,
                "quality": quality,
                "width": width,
                "height": height,
            },
            "decision": {
                "model": plan.model.id,
                "tier": plan.tier,
                "backend": plan.backend,
                "reason_code": code,
            },
            "status": "queued",
            "model_name": plan.model.id,
            "tier": plan.tier,
            "backend": plan.backend,
            "selection_reason": reason,
            "reason_code": code,
            "degraded": plan.degraded,
            "deadline_met": None,
            "estimated_cost_usd": round(rate * plan.estimate_s, 6),
            "cost_usd": None,
            "error": None,
            "outputs": None,
            "finished_at": None,
            "idempotency_key": None,
        }

    def _run_job(self, job: dict[str, Any], plans: list[_Plan], width: int, height: int) -> None:
        at = job["created_at"] + timedelta(milliseconds=self.rng.uniform(2, 9))
        tried_backends: set[str] = set()
        attempt_no = 0
        final: dict[str, Any] | None = None
        plan_index = 0
        while attempt_no < 3 and plan_index < len(plans):
            plan = plans[plan_index]
            if self._known_down(plan.backend, at):
                plan_index += 1
                continue
            attempt_no += 1
            row = self._attempt(job, plan, plans[0], attempt_no, at, width, height)
            self.attempts.append(row)
            final = row
            at = row["finished_at"] + timedelta(milliseconds=self.rng.uniform(5, 40))
            if row["outcome"] in ("ok", "degraded", "invalid", "cancelled"):
                break
            tried_backends.add(plan.backend)
            # Next rung: same model elsewhere after a backend error, else a lower tier or a faster model.
            plan_index = self._next_rung(plans, plan_index, row["outcome"], tried_backends)
        if final is None:  # every rung was on a backend the router knew to be down
            job.update(
                status="failed", deadline_met=False, cost_usd=0.0, error="no healthy backend", finished_at=at
            )
            return
        produced = final["outcome"] in ("ok", "degraded")
        status = "succeeded" if produced else ("cancelled" if final["outcome"] == "cancelled" else "failed")
        elapsed = (final["finished_at"] - job["created_at"]).total_seconds()
        job_attempts = [a for a in self.attempts if a["job_id"] == job["id"]]
        job.update(
            status=status,
            model_name=final["model_name"],
            tier=final["tier"],
            backend=final["backend"],
            degraded=bool(final["degraded"]),
            deadline_met=(produced and elapsed <= job["deadline_s"]) if status != "cancelled" else None,
            cost_usd=round(sum(a["cost_usd"] or 0.0 for a in job_attempts), 6),
            error=None if produced else final["error"],
            outputs=[f"/jobs/{job['id']}/outputs/0"] if produced else None,
            finished_at=final["finished_at"],
        )
        if produced and self.rng.random() < 0.12:
            base = (final["quality_score"] or 60) / 20
            rating = max(1, min(5, round(base + self.rng.gauss(0, 0.8))))
            self.feedback.append(
                {
                    "job_id": job["id"],
                    "rating": rating,
                    "comment": None,
                    "created_at": final["finished_at"] + timedelta(minutes=self.rng.uniform(1, 30)),
                }
            )

    def _next_rung(self, plans: list[_Plan], index: int, outcome: str, tried: set[str]) -> int:
        current = plans[index]
        for j in range(index + 1, len(plans)):
            cand = plans[j]
            if outcome == "backend_error" and cand.backend not in tried:
                return j
            if outcome != "backend_error" and (
                cand.model.id != current.model.id or cand.tier != current.tier
            ):
                return j
        return len(plans)

    def _attempt(
        self,
        job: dict[str, Any],
        plan: _Plan,
        first: _Plan,
        number: int,
        at: datetime,
        width: int,
        height: int,
    ) -> dict[str, Any]:
        backend = self.backends[plan.backend]
        model, tier = plan.model, plan.tier
        spec = model.tiers[tier]  # type: ignore[index]
        rate = backend.spec.usd_per_hour / 3600
        # A retry of the same model and tier elsewhere (after a backend error) is not a degradation.
        degraded = plan.degraded or (plan.model.id, plan.tier) != (first.model.id, first.tier)
        warm = backend.loaded == model.id
        row: dict[str, Any] = {
            "job_id": job["id"],
            "attempt": number,
            "source": "router",
            "prompt_id": self._uuid(),
            "started_at": at,
            "backend": backend.spec.id,
            "model_name": model.id,
            "tier": tier,
            "purpose": job["purpose"],
            "steps": spec.steps,
            "width": round(width * spec.resolution_scale / 8) * 8,
            "height": round(height * spec.resolution_scale / 8) * 8,
            "estimated_s": round(plan.estimate_s, 3),
            "estimated_cost_usd": round(rate * (plan.estimate_s + (0.0 if warm else model.load_s)), 6),
            "selection_reason": job["selection_reason"] if number == 1 else f"retry on rung {number}",
            "degraded": degraded,
            "hosted_usd": None,
            "quality_score": None,
            "error": None,
        }
        if self._down(backend.spec.id, at):
            row.update(
                finished_at=at + timedelta(milliseconds=self.rng.uniform(3, 40)),
                actual_s=None,
                queue_s=None,
                load_s=None,
                outcome="backend_error",
                error=f"ConnectionRefusedError: {backend.spec.id} refused the connection",
                cost_usd=0.0,
            )
            return row
        queue_s = max(0.0, ((backend.busy_until or at) - at).total_seconds()) + self.rng.uniform(0.02, 0.3)
        run_start = at + timedelta(seconds=queue_s)
        load_s = 0.0 if warm else model.load_s * self.rng.uniform(0.8, 1.3)
        bias = FAMILY_BIAS.get(model.family, 1.0)
        actual_s = plan.estimate_s * bias * math.exp(self.rng.gauss(0, 0.12))
        draw = self.rng.random()
        limit = job["deadline_s"] * 1.5
        outcome, error = "degraded" if degraded else "ok", None
        oom_p = FAILURE_RATES["oom"] + (0.2 if backend.spec.vram_mb < 30_000 and tier == "max" else 0.0)
        if draw < oom_p:
            outcome, error, actual_s = "oom", "torch.OutOfMemoryError: CUDA out of memory", actual_s * 0.3
        elif draw < oom_p + FAILURE_RATES["backend_error"]:
            outcome, error, actual_s = "backend_error", "ComfyUI returned 500 on /prompt", actual_s * 0.1
        elif draw < oom_p + FAILURE_RATES["backend_error"] + FAILURE_RATES["invalid"]:
            outcome, error, actual_s, load_s = "invalid", "input image could not be decoded", 0.0, 0.0
        elif draw < oom_p + sum(FAILURE_RATES.values()) - FAILURE_RATES["oom"]:
            outcome, error, actual_s = "cancelled", "cancelled by the client", actual_s * 0.5
        elif queue_s + load_s + actual_s > limit and job["urgency"] != "batch":
            outcome, error = "timeout", f"no result within {limit:.0f}s"
            actual_s = max(0.0, limit - queue_s - load_s)
        busy = load_s + actual_s
        end = run_start + timedelta(seconds=busy)
        if load_s > 0 or backend.loaded != model.id:
            backend.residency.append((run_start, model.id))
            backend.loaded = model.id
        if queue_s > 0.5:
            backend.waits.append((at, run_start))
        if busy > 0:
            backend.runs.append((run_start, end))
        backend.busy_until = end
        produced = outcome in ("ok", "degraded")
        row.update(
            finished_at=end + timedelta(milliseconds=self.rng.uniform(20, 120)),
            actual_s=round(actual_s, 3) if outcome not in ("invalid",) else None,
            queue_s=round(queue_s, 3),
            load_s=round(load_s, 3),
            outcome=outcome,
            error=error,
            cost_usd=round(rate * busy, 6),
            hosted_usd=model.hosted_usd_per_image if produced else None,
            quality_score=spec.quality if produced else None,
        )
        return row

    def in_flight(self) -> None:
        """A job caught mid-run at the end of the day: its first attempt failed, the retry still runs."""
        created = self.end - timedelta(seconds=50)
        plans = self._plans(created, "text-to-image", "high", 60.0, 1024, 1024)
        first = next(p for p in plans if p.backend == self.outage_backend)
        retry = next(p for p in plans if p.backend != self.outage_backend and p.model.id == first.model.id)
        job = self._new_job(created, "text-to-image", "normal", "high", 60.0, 1024, 1024, first)
        failed = self._attempt(job, first, first, 1, created + timedelta(milliseconds=6), 1024, 1024)
        failed.update(
            finished_at=failed["started_at"] + timedelta(milliseconds=30),
            actual_s=None,
            load_s=None,
            outcome="backend_error",
            error="ComfyUI returned 500 on /prompt",
            cost_usd=0.0,
            hosted_usd=None,
            quality_score=None,
        )
        running = self._attempt(
            job, retry, first, 2, failed["finished_at"] + timedelta(milliseconds=20), 1024, 1024
        )
        running.update(
            finished_at=None, actual_s=None, outcome="running", error=None, cost_usd=None, hosted_usd=None
        )
        running["quality_score"] = retry.model.tiers[retry.tier].quality  # type: ignore[index]
        job.update(status="running", model_name=retry.model.id, backend=retry.backend)
        self.attempts.extend([failed, running])
        self.jobs.append(job)

    def direct_runs(self) -> None:
        """Someone used ComfyUI's own UI: no job, no estimate, sometimes no purpose."""
        candidates = [
            m
            for m in self.models
            if all(self._fits(m, b) for b in self.backends.values()) and "standard" in m.tiers
        ]
        for i in range(DIRECT_RUNS):
            model = candidates[i % len(candidates)]
            backend = self.backends[self.outage_backend if i % 2 else next(iter(self.backends))]
            at = self.start + timedelta(hours=9 + 1.5 * i, minutes=self.rng.uniform(0, 50))
            if self._down(backend.spec.id, at):
                at += OUTAGE_LENGTH
            spec = model.tiers["standard"]
            run = self._run_s(model, "standard", backend, 1024, 1024) * FAMILY_BIAS.get(model.family, 1.0)
            load = 0.0 if backend.loaded == model.id else model.load_s
            failed = i == DIRECT_RUNS - 1
            end = at + timedelta(seconds=load + run)
            backend.runs.append((at, end))
            backend.residency.append((at, model.id))
            backend.loaded = model.id
            self.attempts.append(
                {
                    "job_id": None,
                    "attempt": 1,
                    "source": "direct",
                    "prompt_id": self._uuid(),
                    "started_at": at,
                    "finished_at": end,
                    "backend": backend.spec.id,
                    "model_name": model.id,
                    "tier": None,
                    "purpose": None if i % 3 == 0 else model.purposes[0],
                    "steps": spec.steps,
                    "width": 1024,
                    "height": 1024,
                    "estimated_s": None,
                    "actual_s": None if failed else round(run, 3),
                    "queue_s": 0.0,
                    "load_s": round(load, 3),
                    "outcome": "oom" if failed else "ok",
                    "error": "torch.OutOfMemoryError: CUDA out of memory" if failed else None,
                    "estimated_cost_usd": None,
                    "cost_usd": round(backend.spec.usd_per_hour / 3600 * (load + run), 6),
                    "hosted_usd": None if failed else model.hosted_usd_per_image,
                    "quality_score": None if failed else spec.quality,
                    "selection_reason": None,
                    "degraded": False,
                }
            )

    # ------------------------------------------------------------------------------- monitor

    def monitor(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        models = {m.id: m for m in self.models}
        index = {}
        for b in self.backends.values():
            b.runs.sort()
            b.waits.sort()
            b.residency.sort()
            index[b.spec.id] = (
                [s for s, _ in b.runs],
                [s for s, _ in b.waits],
                [s for s, _ in b.residency],
            )
        ram_total = 257_000.0
        for k in range(86_400 // SAMPLE_S):
            ts = self.start + timedelta(seconds=k * SAMPLE_S)
            busy_any = 0
            for b in self.backends.values():
                run_starts, wait_starts, res_starts = index[b.spec.id]
                i = bisect_right(run_starts, ts) - 1
                running = i >= 0 and b.runs[i][1] > ts
                busy_any += running
                j = bisect_right(wait_starts, ts)
                pending = sum(1 for s, e in b.waits[max(0, j - 20) : j] if e > ts)
                r = bisect_right(res_starts, ts) - 1
                resident = models[b.residency[r][1]] if r >= 0 else None
                down = self._down(b.spec.id, ts)
                if down:
                    resident, running, pending = None, False, 0
                weights = 0.0
                if resident:
                    weights = resident.vram_mb * (1.0 if running else 0.8)
                used = min(b.spec.vram_mb - 200.0, 480.0 + weights + self.rng.uniform(-60, 60))
                util = self.rng.uniform(88, 99) if running else self.rng.uniform(0, 3)
                max_power = 300.0 if b.spec.vram_mb > 40_000 else 450.0
                idle_power = 55.0 if b.spec.vram_mb > 40_000 else 28.0
                power = idle_power + (max_power - idle_power) * util / 100 * self.rng.uniform(0.85, 1.0)
                self.vram.append(
                    {
                        "ts": ts,
                        "host": HOST,
                        "source": "nvml",
                        "backend": b.spec.id,
                        "gpu_index": b.index,
                        "gpu_uuid": f"GPU-{uuid.UUID(int=b.index + 1, version=4)}",
                        "gpu_name": b.spec.gpu_name,
                        "vram_total_mb": float(b.spec.vram_mb),
                        "vram_used_mb": round(used, 1),
                        "vram_free_mb": round(b.spec.vram_mb - used, 1),
                        "gpu_util_pct": round(util, 1),
                        "temperature_c": round(34 + 0.42 * util + self.rng.uniform(-1.5, 1.5), 1),
                        # One dropped power reading per hour: NULL, never 0 (the monitor's rule).
                        "power_w": None if k % 120 == 7 else round(power, 1),
                        "processes": [{"pid": 4242 + b.index, "used_mb": round(used - 450, 1)}]
                        if resident
                        else [],
                    }
                )
                counts["nvml"] += 1
                comfy: dict[str, Any] = {"ts": ts, "host": HOST, "source": "comfyui", "backend": b.spec.id}
                if down:
                    comfy.update(
                        up=False, error=f"ConnectionRefusedError: {b.spec.id} refused the connection"
                    )
                    counts["outage_samples"] += 1
                else:
                    comfy.update(
                        up=True,
                        gpu_name=b.spec.gpu_name,
                        vram_total_mb=float(b.spec.vram_mb),
                        vram_used_mb=round(used - 450, 1),
                        vram_free_mb=round(b.spec.vram_mb - used + 450, 1),
                        queue_pending=pending,
                        queue_running=int(running),
                    )
                self.vram.append(comfy)
                counts["comfyui"] += 1
            hour = (k * SAMPLE_S / 3600) % 24
            self.vram.append(
                {
                    "ts": ts,
                    "host": HOST,
                    "source": "host",
                    "ram_total_mb": ram_total,
                    "ram_used_mb": round(
                        38_000 + 9_000 * busy_any + 4_000 * math.sin(hour / 24 * 2 * math.pi), 1
                    ),
                    # psutil's first cpu_percent() call has no reference point: the monitor writes NULL.
                    "cpu_pct": None if k == 0 else round(4 + 18 * busy_any + self.rng.uniform(0, 6), 1),
                }
            )
            counts["host"] += 1
        return counts


def _with_all_columns(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with the same keys, so one executemany covers them (missing = NULL)."""
    names = [c.name for c in table.columns if c.name != "id" or (rows and "id" in rows[0])]
    return [{name: row.get(name) for name in names} for row in rows]


def seed_day(
    session_or_engine: Session | Engine | Connection,
    *,
    start: datetime,
    seed: int = 0,
    catalog: Catalog | None = None,
) -> dict[str, int]:
    """Write one UTC day of jobs, attempts, monitor samples and feedback from `start`; return counts."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (UTC)")
    start = start.astimezone(UTC)
    day = _Day(catalog or load_catalog(CATALOG_PATH), start, seed)
    day.simulate_jobs()
    day.in_flight()
    day.direct_runs()
    monitor_counts = day.monitor()
    batches = [
        (_table(Job), day.jobs),
        (_table(ModelUsageLog), sorted(day.attempts, key=lambda a: a["started_at"])),
        (_table(Feedback), day.feedback),
        (_table(VramUsageLog), day.vram),
    ]

    def write(conn: Session | Connection) -> None:
        for table, rows in batches:
            if rows:
                conn.execute(insert(table), _with_all_columns(table, rows))

    if isinstance(session_or_engine, Engine):
        with session_or_engine.begin() as conn:
            write(conn)
    else:
        write(session_or_engine)

    outcomes = Counter(a["outcome"] for a in day.attempts)
    statuses = Counter(j["status"] for j in day.jobs)
    return {
        "jobs": len(day.jobs),
        "jobs_selected_only": statuses["selected"],
        "jobs_succeeded": statuses["succeeded"],
        "jobs_failed": statuses["failed"],
        "jobs_cancelled": statuses["cancelled"],
        "jobs_running": statuses["running"],
        "attempts": len(day.attempts),
        "router_attempts": sum(1 for a in day.attempts if a["source"] == "router"),
        "direct_runs": sum(1 for a in day.attempts if a["source"] == "direct"),
        **{f"outcome_{name}": n for name, n in sorted(outcomes.items())},
        "feedback": len(day.feedback),
        "vram_rows": len(day.vram),
        "nvml_rows": monitor_counts["nvml"],
        "host_rows": monitor_counts["host"],
        "comfyui_rows": monitor_counts["comfyui"],
        "outage_samples": monitor_counts["outage_samples"],
    }
