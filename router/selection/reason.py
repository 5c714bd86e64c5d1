"""Derive `reason_code` and the one-line `selection_reason` from the filter and score values.

Nothing here is hand-written per case: every number in the sentence comes from a Verdict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from router.selection.types import Candidate, Need, Scored, Verdict


def explain(
    need: Need,
    chosen: Candidate | None,
    verdicts: Sequence[Verdict],
    best_effort: bool,
    scored: Scored | None,
) -> tuple[str, str]:
    rejected = rejection_counts(verdicts)
    tally = ", ".join(f"{code} x{n}" for code, n in rejected.most_common())
    n_feasible = sum(1 for v in verdicts if v.feasible)
    if chosen is None:
        code = _nothing_code(verdicts)
        return code, f"no candidate can serve purpose {need.purpose!r}: {tally or 'no candidates'}"
    head = f"{chosen.model.id}/{chosen.tier} on {chosen.view.backend.id}"
    numbers = _numbers(need, chosen)
    if best_effort:
        return (
            "deadline_best_effort",
            f"{head}: no candidate meets the {need.deadline_s:g} s deadline; fastest runnable ({numbers}); "
            f"rejected: {tally}",
        )
    code = "forced_model" if need.model else ("only_feasible" if n_feasible == 1 else "best_score")
    why = "the forced model" if need.model else f"best of {n_feasible} feasible"
    breakdown = ""
    if scored is not None:
        parts = " ".join(f"{k} {v:.0f}" for k, v in scored.parts.items())
        breakdown = f"; score {scored.score:.1f} ({parts})"
    tail = f"; rejected {sum(rejected.values())}: {tally}" if rejected else ""
    return code, f"{head}: {why} ({numbers}){breakdown}{tail}"


def rejection_counts(verdicts: Sequence[Verdict]) -> Counter[str]:
    """Each rejected candidate counted once, under its first reason (filters run in a fixed order)."""
    counts: Counter[str] = Counter()
    for v in verdicts:
        if v.rejections:
            counts[v.rejections[0].code] += 1
    return counts


def _numbers(need: Need, c: Candidate) -> str:
    e = c.estimate
    return (
        f"quality {c.quality:g}, {c.steps} steps at {c.width}x{c.height}, "
        f"est. {e.total_s:.1f} s of {need.deadline_s:g} s, ${c.estimated_cost_usd:.4f}"
    )


def _nothing_code(verdicts: Sequence[Verdict]) -> str:
    codes = {r.code for v in verdicts for r in v.rejections}
    serving = [v for v in verdicts if not any(r.code == "purpose_mismatch" for r in v.rejections)]
    if serving and all(any(r.code == "backend_unhealthy" for r in v.rejections) for v in serving):
        return "no_backend_available"
    if (
        "deadline_infeasible" in codes
        and serving
        and all(any(r.code == "deadline_infeasible" for r in v.rejections) for v in serving)
    ):
        return "deadline_infeasible"
    return "no_feasible_candidate"
