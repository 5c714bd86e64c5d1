"""An upper bound no policy can pass: every request alone on an idle fleet, its model warm.

A request's true duration on an idle GPU with its model already loaded is the least time any
policy can give it (queueing and loads only add), so the share of requests some rung of which
finishes within the deadline that way bounds every policy's deadline hit rate, and the best
quality among those rungs bounds the quality of an on-time image. The `oracle` policy is a
realistic clairvoyant target; this is the ceiling (loose under load: it ignores queueing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from router.catalog.schema import Catalog
from router.replay.engine import EventLoop
from router.replay.fleet import Fleet
from router.replay.policies import serves
from router.replay.trace import TraceRequest
from router.replay.world import need_for
from router.selection.candidates import enumerate_candidates


def idle_fleet_bound(
    catalog: Catalog,
    requests: Sequence[TraceRequest],
    *,
    seed: int,
    slowdown: float,
    vram_mb: int | None,
    noise_sigma: float,
) -> dict[str, Any]:
    fleet = Fleet(
        catalog, EventLoop(), seed=seed, slowdown=slowdown, vram_mb=vram_mb, noise_sigma=noise_sigma
    )
    views = fleet.estimated_views()  # idle: no queue
    on_time: list[float] = []  # per request that some rung can make: the best such quality
    for index, req in enumerate(requests):
        need = need_for(catalog, req)
        best: float | None = None
        for c in enumerate_candidates(catalog, need, views):
            backend_id = c.view.backend.id
            if not serves(catalog, need, c) or not fleet.fits(backend_id, c.model):
                continue
            true_s = fleet.timing_of(
                index, 1, c.model, c.tier, c.steps, c.width, c.height, need.batch_size, backend_id, True
            ).total_s
            if true_s <= need.deadline_s and (best is None or c.quality > best):
                best = c.quality
        if best is not None:
            on_time.append(best)
    n = len(requests)
    return {
        "deadline_hit_rate": round(len(on_time) / n, 6) if n else None,
        "on_time_quality_mean": round(sum(on_time) / len(on_time), 4) if on_time else None,
        "unreachable_requests": n - len(on_time),
    }
