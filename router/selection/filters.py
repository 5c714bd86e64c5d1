"""Feasibility filters. Each returns a Rejection (code, message, numbers) or None to pass.

Filters are split in two: HARD filters decide whether a candidate can run at all; the
DEADLINE filter decides whether it can run in time. A best-effort answer and the degrade
ladder use candidates that pass the hard filters only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from router.catalog.schema import TIER_ORDER, Catalog
from router.selection.types import Candidate, Need, Rejection, Verdict

Filter = Callable[[Catalog, Need, Candidate], Rejection | None]

make = tuple.__new__  # a NamedTuple from a ready tuple, without its Python-level __new__ (hot loop)


def purpose(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    if need.purpose in c.model.purposes:
        return None
    return Rejection(
        "purpose_mismatch",
        f"{c.model.id} does not serve purpose {need.purpose!r}",
        {"purpose": need.purpose, "model_purposes": ",".join(c.model.purposes)},
    )


def forced_model(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    if need.model is None or need.model == c.model.id:
        return None
    return Rejection("not_requested_model", f"the request forces model {need.model}", {"model": need.model})


def model_enabled(_: Catalog, __: Need, c: Candidate) -> Rejection | None:
    if c.model.enabled:
        return None
    return Rejection("model_disabled", f"{c.model.id} is disabled in the catalog", {})


def backend_available(_: Catalog, __: Need, c: Candidate) -> Rejection | None:
    backend = c.view.backend
    if not backend.enabled:
        return Rejection("backend_disabled", f"backend {backend.id} is disabled in the catalog", {})
    if c.view.healthy:
        return None
    reason = c.view.unhealthy_reason or "unhealthy"
    return Rejection("backend_unhealthy", f"backend {backend.id} is down: {reason}", {"backend": backend.id})


def workflow_supported(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    workflow = c.model.workflows_by_purpose.get(need.purpose, c.model.workflow)
    missing = c.view.missing.get((c.model.id, workflow))
    if not missing:
        return None
    return Rejection(
        "workflow_unsupported",
        f"backend {c.view.backend.id} lacks what workflow {workflow} needs: {', '.join(missing)}",
        {"workflow": workflow, "missing": ",".join(missing)},
    )


def inputs_present(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    lacking = [i for i in c.model.needs_inputs if i not in need.inputs]
    if not lacking:
        return None
    return Rejection(
        "inputs_missing", f"{c.model.id} needs input(s) {', '.join(lacking)}", {"needs": ",".join(lacking)}
    )


def size_in_range(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    low, high = c.model.min_side_px, c.model.max_side_px
    short, long_ = min(c.width, c.height), max(c.width, c.height)
    if (low is None or short >= low) and (high is None or long_ <= high):
        return None
    return Rejection(
        "size_out_of_range",
        f"{c.model.id} renders sides between {low or 0} and {high or 'any'} px",
        {"width": c.width, "height": c.height, "min_side_px": low, "max_side_px": high},
    )


def within_target_tier(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    if TIER_ORDER.index(c.tier) <= TIER_ORDER.index(need.target_tier):
        return None
    return Rejection(
        "above_quality_target",
        f"tier {c.tier} is above the requested {need.target_tier}",
        {"tier": c.tier, "target": need.target_tier},
    )


def quality_floor(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    if need.min_quality is None or c.quality >= need.min_quality:
        return None
    return Rejection(
        "below_quality_floor",
        f"quality {c.quality:g} is below the floor {need.min_quality:g}",
        {"quality": c.quality, "min_quality": need.min_quality},
    )


def vram_fits(_: Catalog, __: Need, c: Candidate) -> Rejection | None:
    if c.vram_needed_mb <= c.vram_available_mb:
        return None
    return Rejection(
        "vram_insufficient",
        f"{c.model.id} needs {c.vram_needed_mb} MB (with headroom) but {c.view.backend.id} "
        f"has {c.vram_available_mb} MB available",
        {"needed_mb": c.vram_needed_mb, "free_mb": c.vram_available_mb},
    )


def cost_cap(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    if need.max_cost_usd is None or c.estimated_cost_usd <= need.max_cost_usd:
        return None
    return Rejection(
        "over_cost_cap",
        f"estimated ${c.estimated_cost_usd:.5f} is over the cap ${need.max_cost_usd:.5f}",
        {"cost_usd": round(c.estimated_cost_usd, 6), "max_cost_usd": need.max_cost_usd},
    )


def not_tried(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    if c.key not in need.exclude:
        return None
    return Rejection("already_tried", "this job already ran this rung and it did not succeed", {})


def deadline(_: Catalog, need: Need, c: Candidate) -> Rejection | None:
    e = c.estimate
    if e.total_s <= need.deadline_s:
        return None
    return Rejection(
        "deadline_infeasible",
        f"queue {e.queue_s:.1f} s + load {e.load_s:.1f} s + run {e.run_s:.1f} s = {e.total_s:.1f} s "
        f"exceeds the {need.deadline_s:g} s deadline",
        {
            "queue_s": round(e.queue_s, 3),
            "load_s": round(e.load_s, 3),
            "run_s": round(e.run_s, 3),
            "total_s": round(e.total_s, 3),
            "deadline_s": need.deadline_s,
        },
    )


# What a filter's verdict depends on. A verdict is computed once per scope key and reused
# for every candidate sharing it (a purpose mismatch is decided once per model, not per tier
# and backend), which keeps selection near a millisecond at hundreds of candidates.
MODEL_LEVEL: tuple[Filter, ...] = (purpose, forced_model, model_enabled, inputs_present)
PLACEMENT_LEVEL: tuple[Filter, ...] = (backend_available, workflow_supported, vram_fits)  # model x backend
TIER_LEVEL: tuple[Filter, ...] = (size_in_range, quality_floor, within_target_tier)  # model x tier
CANDIDATE_LEVEL: tuple[Filter, ...] = (not_tried, cost_cap, deadline)
ALL: tuple[Filter, ...] = (*MODEL_LEVEL, *PLACEMENT_LEVEL, *TIER_LEVEL, *CANDIDATE_LEVEL)


def _inert(need: Need) -> set[Filter]:
    """Filters that pass every candidate for this request (no cap, no floor): skipped for speed."""
    inert: set[Filter] = set()
    if need.max_cost_usd is None:
        inert.add(cost_cap)
    if need.min_quality is None:
        inert.add(quality_floor)
    if need.model is None:
        inert.add(forced_model)
    if not need.exclude:
        inert.add(not_tried)
    return inert


class FilterRun:
    """Runs the filters over many candidates of one request, memoising verdicts by scope.

    Model-level filters run first: a model that cannot serve the request at all (wrong purpose,
    disabled, inputs missing) is rejected for those reasons only, as the Kubernetes scheduler
    stops at the first failing plugin; the other filters all run, to list every reason.
    """

    def __init__(self, catalog: Catalog, need: Need) -> None:
        self.catalog = catalog
        self.need = need
        inert = _inert(need)
        self._levels = tuple(
            tuple(f for f in level if f not in inert)
            for level in (MODEL_LEVEL, PLACEMENT_LEVEL, TIER_LEVEL, CANDIDATE_LEVEL)
        )

    def _run(self, filters: tuple[Filter, ...], c: Candidate) -> tuple[Rejection, ...]:
        return tuple(r for f in filters if (r := f(self.catalog, self.need, c)) is not None)

    def verdicts(self, cands: Sequence[Candidate]) -> list[Verdict]:
        """One Verdict per candidate, in order. Verdicts of a wider scope are reused while the
        candidates share it; enumeration yields model -> backend -> tier, so each model- and
        placement-level filter runs once per group (any order stays correct, only slower)."""
        model_level, placement_level, tier_level, candidate_level = self._levels
        catalog, need = self.catalog, self.need
        out: list[Verdict] = []
        last_model: object = None
        last_view: object = None
        by_model: tuple[Rejection, ...] = ()
        placed: tuple[Rejection, ...] = ()
        by_tier: dict[str, tuple[Rejection, ...]] = {}
        for c in cands:
            if c.model is not last_model:
                last_model, last_view, by_tier = c.model, None, {}
                by_model = self._run(model_level, c)
            if by_model:
                out.append(make(Verdict, (c, by_model)))
                continue
            if c.view is not last_view:
                last_view = c.view
                placed = self._run(placement_level, c)
            tiered = by_tier.get(c.tier)
            if tiered is None:
                tiered = by_tier[c.tier] = self._run(tier_level, c)
            own: tuple[Rejection, ...]
            if len(candidate_level) == 1:  # the usual request: only the deadline filter applies
                r = candidate_level[0](catalog, need, c)
                own = () if r is None else (r,)
            else:
                own = tuple(r for f in candidate_level if (r := f(catalog, need, c)) is not None)
            out.append(make(Verdict, (c, placed + tiered + own if (placed or tiered) else own)))
        return out
