"""The pilot gates and the verdict.

| verdict | when                                                                               |
|---------|------------------------------------------------------------------------------------|
| ABORT   | error rate > 2 x --max-error-rate, or projected monthly savings < 0                |
| STOP    | not ABORT, and any gate with data misses (error rate, FLUX p95, face swap p95,     |
|         | worst backend uptime, projected monthly savings >= --min-savings-usd-month)        |
| GO      | every gate with data passes                                                        |

A gate without data (no FLUX requests, no uptime samples) is shown as NO DATA and not judged; a
window without any request is STOP (nothing to judge).
Comparisons: error rate <= limit, p95 <= target, uptime >= minimum, savings >= minimum. (The
pilot-gates dashboard passes error rate and p95 only strictly under the target, and savings above 0.)
"""

from __future__ import annotations

from dataclasses import dataclass

from router.report.metrics import WindowStats

GATES_HELP = __doc__ or ""


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.05
    p95_flux_s: float = 60.0
    p95_faceswap_s: float = 300.0
    min_savings_usd_month: float = 300.0  # the seed's R$1,500 a month
    min_uptime: float = 0.99


@dataclass(frozen=True)
class Gate:
    name: str
    observed: float | None
    target: float
    op: str  # "<=" or ">="
    status: str  # PASS | MISS | NO DATA


@dataclass(frozen=True)
class Verdict:
    verdict: str  # GO | STOP | ABORT
    reason: str
    gates: list[Gate]


def _gate(name: str, observed: float | None, target: float, op: str) -> Gate:
    if observed is None:
        return Gate(name, None, target, op, "NO DATA")
    ok = observed <= target if op == "<=" else observed >= target
    return Gate(name, observed, target, op, "PASS" if ok else "MISS")


def judge(stats: WindowStats, t: Thresholds) -> Verdict:
    gates = [
        _gate("error rate", stats.error_rate, t.max_error_rate, "<="),
        _gate("FLUX p95 latency (s)", stats.p95("FLUX"), t.p95_flux_s, "<="),
        _gate("face swap p95 latency (s)", stats.p95("Face swap"), t.p95_faceswap_s, "<="),
        _gate("worst backend uptime", stats.worst_uptime, t.min_uptime, ">="),
        _gate(
            "projected savings (USD/month)",
            stats.projected_monthly_savings_usd if stats.requests else None,
            t.min_savings_usd_month,
            ">=",
        ),
    ]
    if stats.error_rate is not None and stats.error_rate > 2 * t.max_error_rate:
        return Verdict(
            "ABORT",
            f"error rate {stats.error_rate:.1%} is over twice the limit {t.max_error_rate:.1%}",
            gates,
        )
    if stats.requests and stats.projected_monthly_savings_usd < 0:
        return Verdict(
            "ABORT",
            f"projected savings are negative ({stats.projected_monthly_savings_usd:.2f} USD/month)",
            gates,
        )
    if not stats.requests:
        return Verdict("STOP", "no requests in the window: nothing to judge", gates)
    missed = [g for g in gates if g.status == "MISS"]
    if missed:
        return Verdict(
            "STOP",
            "missed: " + "; ".join(f"{g.name} {g.observed:.4g} (target {g.op} {g.target:g})" for g in missed),
            gates,
        )
    judged = sum(1 for g in gates if g.status == "PASS")
    return Verdict("GO", f"all {judged} gates with data pass", gates)
