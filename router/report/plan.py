"""`report plan`: the mix of models and tiers for N images of one purpose due within a time.

Capacity is the fleet's GPU-seconds: the time left x the number of enabled backends. A rung (model x
tier) costs, per image, the harmonic mean of its run time over the backends it fits on (the fleet
spread evenly over them; `run_seconds` with `time_model_and_speed`) and the throughput-weighted GPU
price of that time. A rung is feasible when it fits some backend and one image finishes before the
deadline there. Model loads and queueing are ignored (an approximation; say so to the reader).

Greedy: every job starts on the cheapest rung (fewest GPU-seconds, then lowest cost); then, while time
and budget last, move jobs to the upgrade with the best quality gained per extra GPU-second (upgrades
that cost no extra time go first), as many jobs at once as capacity and budget allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from router.catalog import TIER_ORDER, Catalog
from router.selection.estimate import run_seconds, tier_size, time_model_and_speed


@dataclass(frozen=True)
class Rung:
    model: str
    tier: str
    quality: float
    seconds: float  # GPU-seconds per image
    usd: float  # GPU cost per image


@dataclass
class Plan:
    jobs: int
    purpose: str
    deadline_s: float
    capacity_s: float
    budget_usd: float | None
    feasible: bool
    mix: dict[str, int] = field(default_factory=dict)  # "model/tier" -> jobs
    mean_quality: float | None = None
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0
    reason: str = ""
    needs: dict[str, float] = field(default_factory=dict)


def rungs(catalog: Catalog, purpose: str, deadline_s: float, width: int, height: int) -> list[Rung]:
    backends = [b for b in catalog.backends if b.enabled]
    out: list[Rung] = []
    for model in catalog.models:
        if not model.enabled or purpose not in model.purposes:
            continue
        fits = [b for b in backends if model.vram_mb + catalog.vram_headroom_mb <= b.vram_mb]
        for tier in TIER_ORDER:
            spec = model.tiers.get(tier)
            if spec is None or not fits:
                continue
            w, h = tier_size(spec, width, height, catalog.limits.side_multiple_px)
            times = []
            for b in fits:
                tm, speed = time_model_and_speed(model, b)
                times.append((run_seconds(tm, spec.steps, w, h, 1, speed), b.usd_per_hour))
            if min(s for s, _ in times) > deadline_s:
                continue
            rate = sum(1 / s for s, _ in times)  # images per second with all fitting backends busy
            seconds = len(times) / rate
            usd = sum(p / 3600 for _, p in times) / rate
            out.append(Rung(model.id, tier, spec.quality, seconds, usd))
    return out


def make_plan(
    catalog: Catalog,
    jobs: int,
    purpose: str,
    deadline_s: float,
    budget_usd: float | None = None,
    width: int = 1024,
    height: int = 1024,
) -> Plan:
    n_backends = sum(1 for b in catalog.backends if b.enabled)
    capacity = deadline_s * n_backends
    budget = math.inf if budget_usd is None else budget_usd
    plan = Plan(jobs, purpose, deadline_s, capacity, budget_usd, feasible=False)
    options = rungs(catalog, purpose, deadline_s, width, height)
    if not options:
        plan.reason = f"no enabled model for {purpose!r} fits a backend and finishes within the deadline"
        return plan
    base = min(options, key=lambda r: (r.seconds, r.usd))
    if jobs * base.seconds > capacity or jobs * base.usd > budget:
        _explain_infeasible(plan, base, n_backends, budget)
        return plan
    counts, used_s, used_usd = _upgrade(options, base, jobs, capacity, budget)
    plan.feasible = True
    plan.mix = {f"{r.model}/{r.tier}": n for r, n in sorted(counts.items(), key=lambda x: -x[1]) if n}
    plan.mean_quality = sum(r.quality * n for r, n in counts.items()) / jobs if jobs else None
    plan.gpu_seconds, plan.cost_usd = used_s, used_usd
    plan.reason = f"{jobs} images fit: {used_s:.0f} of {capacity:.0f} GPU-s, {used_usd:.4f} USD"
    return plan


def _explain_infeasible(plan: Plan, base: Rung, n_backends: int, budget: float) -> None:
    need_s, need_usd = plan.jobs * base.seconds, plan.jobs * base.usd
    fit = min(plan.capacity_s / base.seconds, budget / base.usd if base.usd > 0 else math.inf)
    short = []
    if need_s > plan.capacity_s:
        plan.needs["deadline_s"] = need_s / max(n_backends, 1)
        short.append(f"{need_s:.0f} GPU-s needed, {plan.capacity_s:.0f} available")
    if need_usd > budget:
        plan.needs["budget_usd"] = need_usd
        short.append(f"{need_usd:.2f} USD needed, budget {budget:.2f}")
    plan.needs["max_jobs"] = float(math.floor(fit))
    plan.reason = (
        f"infeasible even on the cheapest rung {base.model}/{base.tier}: "
        + "; ".join(short)
        + ". Feasible with "
        + " and ".join(
            ([f"a deadline of {need_s / max(n_backends, 1):.0f} s"] if need_s > plan.capacity_s else [])
            + ([f"a budget of {need_usd:.2f} USD"] if need_usd > budget else [])
        )
        + f", or with at most {math.floor(fit)} jobs"
    )


def _upgrade(
    options: list[Rung], base: Rung, jobs: int, capacity: float, budget: float
) -> tuple[dict[Rung, int], float, float]:
    """Greedy upgrades from everyone on `base`; answers the counts per rung and the time and money used."""
    counts: dict[Rung, int] = {base: jobs}
    used_s, used_usd = jobs * base.seconds, jobs * base.usd
    while True:
        best: tuple[float, Rung, Rung, int] | None = None
        for cur, n in counts.items():
            for nxt in options:
                if n == 0 or nxt.quality <= cur.quality:
                    continue
                ds, dc = nxt.seconds - cur.seconds, nxt.usd - cur.usd
                k = n
                if ds > 0:
                    k = min(k, math.floor((capacity - used_s) / ds + 1e-9))
                if dc > 0 and math.isfinite(budget):
                    k = min(k, math.floor((budget - used_usd) / dc + 1e-9))
                gain = (nxt.quality - cur.quality) / ds if ds > 0 else math.inf
                if k >= 1 and (best is None or (gain, nxt.quality) > (best[0], best[2].quality)):
                    best = (gain, cur, nxt, k)
        if best is None:
            return counts, used_s, used_usd
        _, cur, nxt, k = best
        counts[cur] -= k
        counts[nxt] = counts.get(nxt, 0) + k
        used_s += k * (nxt.seconds - cur.seconds)
        used_usd += k * (nxt.usd - cur.usd)


def plan_text(plan: Plan) -> str:
    lines = [
        f"plan: {plan.jobs} x {plan.purpose} within {plan.deadline_s:.0f} s "
        f"(fleet {plan.capacity_s:.0f} GPU-s"
        + (f", budget {plan.budget_usd:.2f} USD)" if plan.budget_usd is not None else ")"),
    ]
    if not plan.feasible:
        lines.append("INFEASIBLE: " + plan.reason)
        return "\n".join(lines)
    width = max((len(k) for k in plan.mix), default=0)
    lines += [f"  {k.ljust(width)}  {n:>6}" for k, n in plan.mix.items()]
    lines.append(f"mean quality {plan.mean_quality:.1f}; {plan.reason}")
    return "\n".join(lines)
