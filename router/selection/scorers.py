"""Preference scorers. Each maps the feasible candidates to scores normalised to 0-100.

Like the Kubernetes scheduler's Score plugins with DefaultNormalizeScore: a scorer sees the
whole feasible set, so "cheapest" means cheapest among the candidates that can run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from router.catalog.schema import ScoringWeights
from router.selection.estimate import load_needed, queue_position
from router.selection.types import Candidate, Need

Scorer = Callable[[Need, Sequence[Candidate]], list[float]]


def quality(_: Need, cands: Sequence[Candidate]) -> list[float]:
    """The catalog's quality is already on the 0-100 scale."""
    return [min(100.0, max(0.0, c.quality)) for c in cands]


def cost(_: Need, cands: Sequence[Candidate]) -> list[float]:
    """100 for the cheapest; others in proportion (half the price of another = twice its score)."""
    cheapest = min((c.estimated_cost_usd for c in cands), default=0.0)
    # min() guards float rounding: 100 * x / x can come out as 100.00000000000001.
    return [
        100.0 if c.estimated_cost_usd <= 0 else min(100.0, 100.0 * cheapest / c.estimated_cost_usd)
        for c in cands
    ]


def slack(need: Need, cands: Sequence[Candidate]) -> list[float]:
    """Share of the deadline left over: margin against a slower GPU than estimated."""
    return [max(0.0, min(100.0, 100.0 * (1.0 - c.estimate.total_s / need.deadline_s))) for c in cands]


def warm(need: Need, cands: Sequence[Candidate]) -> list[float]:
    """100 when the model will already be in VRAM when the prompt starts there (no load, no
    eviction): keeping a backend on the models it holds saves later requests the loads."""
    return [
        0.0 if load_needed(c.view, queue_position(c.view, need.front)[1], c.model.id) else 100.0
        for c in cands
    ]


SCORERS: dict[str, Scorer] = {"quality": quality, "cost": cost, "slack": slack, "warm": warm}


def weights_of(w: ScoringWeights) -> dict[str, float]:
    return {"quality": w.quality, "cost": w.cost, "slack": w.slack, "warm": w.warm}
