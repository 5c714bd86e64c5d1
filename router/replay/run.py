"""One replay: the same trace, seed and fleet for every policy, each on a fresh fleet and clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from router.catalog.schema import Catalog
from router.replay.bound import idle_fleet_bound
from router.replay.engine import EventLoop
from router.replay.fleet import Fleet
from router.replay.metrics import policy_metrics
from router.replay.policies import (
    ORACLE_PRICES,
    AlwaysBest,
    AlwaysFastest,
    LeastBusy,
    Oracle,
    RoundRobin,
    Static,
)
from router.replay.records import RequestRecord
from router.replay.router_policy import RouterPolicy
from router.replay.trace import TraceRequest, summary
from router.replay.world import World, new_record
from router.simulator.timing import NOISE_SIGMA

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Policy(Protocol):
    name: str

    def arrive(self, index: int, req: TraceRequest, record: RequestRecord) -> None: ...

    def close(self) -> None: ...


POLICIES: dict[str, Callable[[World], Policy]] = {
    "router": RouterPolicy,
    "always-best": AlwaysBest,
    "always-fastest": AlwaysFastest,
    "round-robin": RoundRobin,
    "least-busy": LeastBusy,
    "static": Static,
    "oracle": Oracle,
}
BASELINES = ("always-best", "always-fastest", "round-robin", "least-busy", "static")


@dataclass(frozen=True)
class ReplayOptions:
    seed: int = 0
    slowdown: float = 1.0
    vram_mb: int | None = None
    noise_sigma: float = NOISE_SIGMA  # 0: true durations are exactly the time model's (hand checks)
    start: datetime = EPOCH  # wall time of the trace's second 0 (only for --record)


@dataclass
class PolicyRun:
    name: str
    records: list[RequestRecord]
    swaps: int
    ooms: int
    events: int
    wall_s: float
    oracle_price: float | None = None  # the oracle's price kept in hindsight

    def metrics(self) -> dict[str, Any]:
        m = policy_metrics(self.records, self.swaps, self.ooms)
        if self.oracle_price is not None:
            m["oracle_price_per_gpu_s"] = self.oracle_price
        return m


def replay_policy(
    catalog: Catalog,
    requests: Sequence[TraceRequest],
    name: str,
    options: ReplayOptions = ReplayOptions(),
    on_arrival: Callable[[], object] | None = None,
) -> PolicyRun:
    """One policy over the trace; the oracle is its best price in hindsight (see policies.Oracle)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; one of: {', '.join(POLICIES)}")
    if name != "oracle":
        return _run(catalog, requests, name, POLICIES[name], options, on_arrival)
    runs = [
        _run(catalog, requests, name, partial(Oracle, price=price), options, on_arrival if not i else None)
        for i, price in enumerate(ORACLE_PRICES)
    ]
    best = max(runs, key=lambda r: (r.metrics()["hit_x_quality"] or 0.0, -runs.index(r)))
    best.wall_s = sum(r.wall_s for r in runs)
    return best


def _run(
    catalog: Catalog,
    requests: Sequence[TraceRequest],
    name: str,
    factory: Callable[[World], Policy],
    options: ReplayOptions,
    on_arrival: Callable[[], object] | None,
) -> PolicyRun:
    t0 = time.perf_counter()
    loop = EventLoop()
    fleet = Fleet(
        catalog,
        loop,
        seed=options.seed,
        slowdown=options.slowdown,
        vram_mb=options.vram_mb,
        noise_sigma=options.noise_sigma,
    )
    world = World(catalog, loop, fleet, options.start)
    policy = factory(world)
    records = [new_record(catalog, i, req) for i, req in enumerate(requests)]

    def arrival(i: int) -> Callable[[], None]:
        def act() -> None:
            policy.arrive(i, requests[i], records[i])
            if on_arrival is not None:
                on_arrival()

        return act

    for i, req in enumerate(requests):
        loop.at(req.t, arrival(i))
    try:
        loop.run()
    finally:
        policy.close()
    unfinished = [r.index for r in records if r.status not in ("succeeded", "failed")]
    if unfinished:  # an invariant: every job ends (a bug here must not pass as a figure)
        raise RuntimeError(f"policy {name}: requests {unfinished[:5]} never finished")
    price = policy.price if isinstance(policy, Oracle) else None
    return PolicyRun(name, records, fleet.swaps, fleet.ooms, loop.events, time.perf_counter() - t0, price)


def replay(
    catalog: Catalog,
    requests: Sequence[TraceRequest],
    policies: Sequence[str] = tuple(POLICIES),
    options: ReplayOptions = ReplayOptions(),
    on_arrival: Callable[[], object] | None = None,
) -> dict[str, PolicyRun]:
    for name in policies:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; one of: {', '.join(POLICIES)}")
    return {name: replay_policy(catalog, requests, name, options, on_arrival) for name in policies}


def result_json(
    requests: Sequence[TraceRequest],
    runs: dict[str, PolicyRun],
    options: ReplayOptions,
    source: str,
    catalog: Catalog,
) -> dict[str, Any]:
    """`{"trace": {...}, "policies": {NAME: {...}}}` (no wall-clock figures: equal runs, equal JSON).
    `trace.idle_fleet_bound` is the ceiling no policy can pass (router/replay/bound.py)."""
    bound = idle_fleet_bound(
        catalog,
        requests,
        seed=options.seed,
        slowdown=options.slowdown,
        vram_mb=options.vram_mb,
        noise_sigma=options.noise_sigma,
    )
    return {
        "trace": {
            "source": source,
            **summary(requests),
            "seed": options.seed,
            "slowdown": options.slowdown,
            "vram_mb": options.vram_mb,
            "idle_fleet_bound": bound,
        },
        "policies": {name: run.metrics() for name, run in runs.items()},
    }
