"""The pure selector: filter, score, choose, build the degrade ladder, explain.

Order of preference (an invariant the property tests check):
1. the best quality band among candidates that pass every filter;
2. inside that band, the highest weighted score;
3. ties broken by quality, then shorter total time, then catalog order (model, tier, backend).
A longer deadline can only add feasible candidates, so it never lowers the chosen band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import mul

from router.catalog.schema import Catalog
from router.selection import filters as flt
from router.selection.candidates import enumerate_candidates
from router.selection.reason import explain
from router.selection.scorers import SCORERS, weights_of
from router.selection.types import BackendView, Candidate, Need, Rejection, Scored, Selection, Verdict


def select(
    catalog: Catalog, need: Need, views: Sequence[BackendView], urgency: str | None = None
) -> Selection:
    cands = list(enumerate_candidates(catalog, need, views))
    order = {c.key: i for i, c in enumerate(cands)}
    verdicts = flt.FilterRun(catalog, need).verdicts(cands)
    feasible = [v.candidate for v in verdicts if v.feasible]
    weights = _weights(catalog, urgency)
    scored = {s.candidate.key: s for s in score(need, feasible, weights, catalog.scoring.quality_band)}

    chosen: Candidate | None = None
    best_effort = False
    if scored:
        top_band = max(s.band for s in scored.values())
        chosen = max(
            (s for s in scored.values() if s.band == top_band), key=lambda s: _rank(s, order)
        ).candidate
    elif need.allow_degrade:
        runnable = [v.candidate for v in verdicts if _only_deadline_failed(v)]
        if runnable:
            chosen = min(runnable, key=lambda c: (c.estimate.total_s, -c.quality, order[c.key]))
            best_effort = True

    ladder = build_ladder(catalog, verdicts, chosen, order) if chosen else ()
    code, reason = explain(need, chosen, verdicts, best_effort, scored.get(chosen.key) if chosen else None)
    return Selection(chosen, code, reason, tuple(verdicts), scored, ladder, need.deadline_s, best_effort)


def score(
    need: Need, feasible: Sequence[Candidate], weights: dict[str, float], band_pts: float
) -> list[Scored]:
    if not feasible:
        return []
    names = tuple(name for name, w in weights.items() if w > 0)
    total_w = sum(weights[name] for name in names)
    shares = [weights[name] / total_w for name in names]
    columns = [SCORERS[name](need, feasible) for name in names]
    rows = zip(*columns, strict=True)  # one tuple of normalised scores per candidate
    make = tuple.__new__  # a NamedTuple from a ready tuple, without its Python-level __new__
    floor = math.floor
    return [
        make(Scored, (c, floor(c.quality / band_pts + 1e-9), sum(map(mul, shares, values)), names, values))
        for c, values in zip(feasible, rows, strict=True)
    ]


def build_ladder(
    catalog: Catalog,
    verdicts: Sequence[Verdict],
    chosen: Candidate,
    order: dict[tuple[str, str, str], int],
) -> tuple[Candidate, ...]:
    """Lower rungs to fall back on, each strictly faster than the one before (a Pareto chain).

    Rungs ignore the deadline (they are for when time runs short) but pass every other filter.
    """
    quality = chosen.quality
    below = [
        c
        for c, rejections in verdicts
        if c.quality <= quality and c is not chosen and _deadline_at_most(rejections)
    ]
    below.sort(key=lambda c: (-c.quality, c.estimate.total_s, order[c.key]))
    ladder: list[Candidate] = []
    fastest = chosen.estimate.total_s
    for c in below:
        if c.estimate.total_s < fastest - 1e-9:
            ladder.append(c)
            fastest = c.estimate.total_s
        if len(ladder) >= catalog.max_ladder_rungs:
            break
    return tuple(ladder)


def _rank(s: Scored, order: dict[tuple[str, str, str], int]) -> tuple[int, float, float, float, int]:
    c = s.candidate
    return (s.band, round(s.score, 9), c.quality, -c.estimate.total_s, -order[c.key])


def _only_deadline_failed(v: Verdict) -> bool:
    return bool(v.rejections) and _deadline_at_most(v.rejections)


def _deadline_at_most(rejections: tuple[Rejection, ...]) -> bool:
    """No rejection but the deadline's (each filter rejects at most once, so at most one)."""
    return not rejections or (len(rejections) == 1 and rejections[0].code == "deadline_infeasible")


def _weights(catalog: Catalog, urgency: str | None) -> dict[str, float]:
    u = catalog.urgencies.get(urgency) if urgency else None
    return weights_of(u.weights if u is not None and u.weights is not None else catalog.scoring)
