"""Selection (pure values) -> the Decision answered by the API."""

from __future__ import annotations

from router.api.schemas import CandidateOut, Decision, EstimateOut, RejectionOut, RungOut, ScoreOut
from router.selection.types import Candidate, Estimate, Selection


def estimate_out(e: Estimate) -> EstimateOut:
    return EstimateOut(
        queue_s=round(e.queue_s, 3),
        load_s=round(e.load_s, 3),
        run_s=round(e.run_s, 3),
        total_s=round(e.total_s, 3),
    )


def rung_out(c: Candidate) -> RungOut:
    return RungOut(
        model=c.model.id,
        tier=c.tier,
        backend=c.view.backend.id,
        steps=c.steps,
        cfg=c.cfg,
        width=c.width,
        height=c.height,
        quality_score=c.quality,
        estimate=estimate_out(c.estimate),
        estimated_cost_usd=round(c.estimated_cost_usd, 6),
    )


def to_decision(sel: Selection, job_id: str | None) -> Decision:
    candidates = []
    for v in sel.verdicts:
        cand = v.candidate
        s = sel.scores.get(cand.key)
        candidates.append(
            CandidateOut(
                **rung_out(cand).model_dump(),
                feasible=v.feasible,
                vram_needed_mb=cand.vram_needed_mb,
                vram_available_mb=cand.vram_available_mb,
                rejections=[
                    RejectionOut(code=r.code, message=r.message, numbers=dict(r.numbers))
                    for r in v.rejections
                ],
                score=ScoreOut(
                    total=round(s.score, 3), band=s.band, parts={k: round(x, 3) for k, x in s.parts.items()}
                )
                if s
                else None,
            )
        )
    chosen = sel.chosen
    return _decision(sel, chosen, job_id, candidates)


def _decision(
    sel: Selection, c: Candidate | None, job_id: str | None, candidates: list[CandidateOut]
) -> Decision:
    return Decision(
        job_id=job_id,
        model=c.model.id if c else None,
        tier=c.tier if c else None,
        backend=c.view.backend.id if c else None,
        steps=c.steps if c else None,
        cfg=c.cfg if c else None,
        width=c.width if c else None,
        height=c.height if c else None,
        quality_score=c.quality if c else None,
        estimate=estimate_out(c.estimate) if c else None,
        estimated_cost_usd=round(c.estimated_cost_usd, 6) if c else None,
        hosted_usd_per_image=c.model.hosted_usd_per_image if c else None,
        deadline_s=sel.deadline_s,
        best_effort=sel.best_effort,
        selection_reason=sel.selection_reason,
        reason_code=sel.reason_code,
        candidates=candidates,
        ladder=[rung_out(r) for r in sel.ladder],
    )
