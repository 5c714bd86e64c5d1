"""What load 1.0 means: the fleet's capacity for a request mix, in requests per second.

Definition (also in `comfy-router simulate trace --help`): for each enabled backend, the mean
service time of the mix is the weighted mean, over purpose x requested tier x size, of the run time
(catalog time model at the backend's speed, model already loaded) of the highest-quality model x
tier that serves the purpose at or below the requested tier and fits the backend's catalog VRAM,
over the purposes that backend can serve at all. Capacity = sum over backends of 1 / that mean.

So load 1.0 keeps the fleet exactly busy when every request gets the best quality it asked for and
no time is lost to model loads; below 1 there is slack, above 1 only degrading (faster models or
tiers) can keep up. Queueing, loads and deadlines are not in it: those are what replay measures.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.catalog.schema import TIER_ORDER, Backend, Catalog, TierName
from router.replay.scenarios import PURPOSE_MIX, SIZE_MIX, TIER_MIX
from router.selection.estimate import run_seconds, tier_size, time_model_and_speed


def best_run_s(
    catalog: Catalog, backend: Backend, purpose: str, tier: TierName, width: int, height: int
) -> float | None:
    """Warm run seconds of the best-quality model x tier for the request on that backend (None: none fits)."""
    best: tuple[float, float] | None = None  # (quality, -seconds)
    rank = TIER_ORDER.index(tier)
    for model in catalog.models:
        if not model.enabled or purpose not in model.purposes:
            continue
        if model.vram_mb + catalog.vram_headroom_mb > backend.vram_mb:
            continue
        tm, speed = time_model_and_speed(model, backend)
        for name, spec in model.tiers.items():
            if TIER_ORDER.index(name) > rank:
                continue
            w, h = tier_size(spec, width, height, catalog.limits.side_multiple_px)
            seconds = run_seconds(tm, spec.steps, w, h, 1, speed)
            if best is None or (spec.quality, -seconds) > best:
                best = (spec.quality, -seconds)
    return -best[1] if best is not None else None


def fleet_capacity_per_s(
    catalog: Catalog,
    purposes: Mapping[str, float] = PURPOSE_MIX,
    tiers: Mapping[TierName, float] = TIER_MIX,
    sizes: Mapping[tuple[int, int], float] = SIZE_MIX,
) -> float:
    """Requests per second the enabled backends serve at best quality (see the module docstring)."""
    total = 0.0
    for backend in catalog.backends:
        if not backend.enabled:
            continue
        served = busy = 0.0
        for purpose, wp in purposes.items():
            for tier, wq in tiers.items():
                for (width, height), ws in sizes.items():
                    seconds = best_run_s(catalog, backend, purpose, tier, width, height)
                    if seconds is None or seconds <= 0:
                        continue
                    weight = wp * wq * ws
                    served += weight
                    busy += weight * seconds
        if busy > 0:
            total += served / busy
    if total <= 0:
        raise ValueError("no enabled backend can serve any purpose of the mix: capacity is 0")
    return total
