"""The baselines and the oracle that trace replay compares the router with.

Every baseline sees the catalog (purposes, tiers, declared VRAM, time models) and what a simple
dispatcher could know of the fleet (queued work by the catalog's estimates, the model ComfyUI holds),
never live VRAM. A baseline picks one model x tier x backend per request and never degrades: the
request runs to the end however late, and a placement the card cannot hold is an OOM (counted in
`ooms`) that fails the request. Candidates a baseline may pick: the model serves the purpose, is
enabled, has the inputs, renders the size, the tier is at most the requested one, the request's cost
cap holds, and the model fits the backend's VRAM as the catalog declares it.

- `always-best`: the highest quality; the backend expected to finish first among equals.
- `always-fastest`: the shortest expected finish (queue, load and run), whatever the quality.
- `round-robin`: the backends in turn; on that backend the highest quality.
- `least-busy`: the backend with the least queued work; on it the highest quality.
- `static`: a fixed purpose -> model map (per purpose, the model with the highest quality at any
  tier, catalog order on ties), each mapped model pinned to one backend (spread over the backends
  its declared VRAM fits, fewest pinned models first, catalog order on ties); the tier is the
  highest the model has at or below the requested one.
- `oracle`: knows every true duration (and the true VRAM of each card). For each request, on
  arrival, it picks among the candidates whose TRUE finish, behind the real queue, meets the
  deadline the one with the highest quality - price x true GPU seconds (the earliest finish when
  none is in time). Price 0 is the plain greedy "best quality that makes it"; a positive price
  spends less GPU time per request and so leaves room for the next ones. Replay runs the oracle at
  each price of ORACLE_PRICES and keeps, in hindsight, the one with the best deadline hit rate x
  mean quality. A per-request greedy with clairvoyance, not a global optimum (it never holds a GPU
  back for a known later request): the router, which keeps slack and favours cached models, beats
  it on hit rate x quality on the bench's traces. It is the reference for "as good as knowing every
  duration, one request at a time"; the true ceiling is router/replay/bound.py (idle fleet).
"""

from __future__ import annotations

from collections.abc import Callable

from router.catalog.schema import TIER_ORDER, Catalog, Model
from router.replay.fleet import Work
from router.replay.records import RequestRecord, attempt_record
from router.replay.trace import TraceRequest
from router.replay.world import World, finish_failed, need_for
from router.selection import filters as flt
from router.selection.candidates import enumerate_candidates
from router.selection.types import Candidate, Need

SERVES: tuple[flt.Filter, ...] = (
    flt.purpose,
    flt.model_enabled,
    flt.inputs_present,
    flt.backend_available,
    flt.size_in_range,
    flt.within_target_tier,
    flt.cost_cap,
)


def serves(catalog: Catalog, need: Need, c: Candidate) -> bool:
    return all(f(catalog, need, c) is None for f in SERVES)


class DispatchJob:
    """One request of a baseline: one attempt, no degrade, no time limit."""

    def __init__(self, world: World, record: RequestRecord, rung: Candidate, front: bool = False) -> None:
        self.world = world
        self.record = record
        self.rung = rung
        self.front = front  # sent to the queue's front (only the oracle does, as the router does)

    def submit(self) -> None:
        rung, world = self.rung, self.world
        work = Work(
            prompt_id=f"{self.record.index}-1",
            request_index=self.record.index,
            attempt=1,
            model=rung.model,
            tier=rung.tier,
            steps=rung.steps,
            width=rung.width,
            height=rung.height,
            batch_size=1,
            backend_id=rung.view.backend.id,
            submitted_at=world.loop.now,
            estimated_busy_s=rung.estimate.load_s + rung.estimate.run_s,
            listener=self,
            front=self.front,
        )
        world.fleet.submit(work)

    def on_start(self, work: Work, t: float) -> None:
        return None

    def on_end(self, work: Work, t: float, outcome: str) -> None:
        label = "ok" if outcome == "ok" else "oom"
        self.record.attempts.append(attempt_record(work, self.rung, label, work.error, degraded=False))
        if outcome == "ok":
            self.record.status = "succeeded"
            self.record.finished_at = t
            self.record.quality = self.rung.quality
        else:
            finish_failed(self.record, t, work.error or outcome)


Chooser = Callable[[int, Need, list[Candidate]], Candidate | None]


class Baseline:
    """A policy that picks one rung per request with `choose` and dispatches it."""

    name = "baseline"
    uses_front = False  # naive dispatchers append to ComfyUI's queue

    def __init__(self, world: World) -> None:
        self.world = world
        self.order: dict[tuple[str, str, str], int] = {}

    def arrive(self, index: int, req: TraceRequest, record: RequestRecord) -> None:
        catalog = self.world.catalog
        need = need_for(catalog, req)
        cands = list(enumerate_candidates(catalog, need, self.world.fleet.estimated_views()))
        if not self.order:
            self.order = {c.key: i for i, c in enumerate(cands)}
        eligible = [c for c in cands if self.allowed(need, c)]
        rung = self.choose(index, need, eligible) if eligible else None
        if rung is None:
            record.reason_code = "no_candidate"
            finish_failed(record, self.world.loop.now, f"{self.name}: no model x tier x backend serves it")
            return
        record.first = rung.key
        record.first_estimated_cost_usd = rung.estimated_cost_usd
        record.reason_code = self.name
        record.selection_reason = f"{self.name}: {rung.model.id}/{rung.tier} on {rung.view.backend.id}"
        DispatchJob(self.world, record, rung, front=self.uses_front and need.front).submit()

    def allowed(self, need: Need, c: Candidate) -> bool:
        return serves(self.world.catalog, need, c) and flt.vram_fits(self.world.catalog, need, c) is None

    def choose(self, index: int, need: Need, eligible: list[Candidate]) -> Candidate | None:
        raise NotImplementedError

    def rank(self, c: Candidate) -> int:
        return self.order.get(c.key, len(self.order))

    def best_quality(self, cands: list[Candidate]) -> Candidate:
        return max(cands, key=lambda c: (c.quality, -c.estimate.total_s, -self.rank(c)))

    def close(self) -> None:
        return None


class AlwaysBest(Baseline):
    name = "always-best"

    def choose(self, index: int, need: Need, eligible: list[Candidate]) -> Candidate | None:
        return self.best_quality(eligible)


class AlwaysFastest(Baseline):
    name = "always-fastest"

    def choose(self, index: int, need: Need, eligible: list[Candidate]) -> Candidate | None:
        return min(eligible, key=lambda c: (c.estimate.total_s, -c.quality, self.rank(c)))


class RoundRobin(Baseline):
    name = "round-robin"

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.turn = 0

    def choose(self, index: int, need: Need, eligible: list[Candidate]) -> Candidate | None:
        backends = list(self.world.fleet.gpus)
        for step in range(len(backends)):
            backend = backends[(self.turn + step) % len(backends)]
            here = [c for c in eligible if c.view.backend.id == backend]
            if here:
                self.turn = (self.turn + step + 1) % len(backends)
                return self.best_quality(here)
        return None


class LeastBusy(Baseline):
    name = "least-busy"

    def choose(self, index: int, need: Need, eligible: list[Candidate]) -> Candidate | None:
        least = min(eligible, key=lambda c: (c.view.queue_s, self.rank(c))).view.backend.id
        return self.best_quality([c for c in eligible if c.view.backend.id == least])


class Static(Baseline):
    name = "static"

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.model_for, self.backend_for = static_map(world.catalog, list(world.fleet.gpus))

    def choose(self, index: int, need: Need, eligible: list[Candidate]) -> Candidate | None:
        model = self.model_for.get(need.purpose)
        if model is None:
            return None
        pinned = [
            c
            for c in eligible
            if c.model.id == model.id and c.view.backend.id == self.backend_for.get(model.id)
        ]
        if not pinned:
            return None
        return max(pinned, key=lambda c: TIER_ORDER.index(c.tier))


def static_map(catalog: Catalog, backend_ids: list[str]) -> tuple[dict[str, Model], dict[str, str]]:
    """(purpose -> model, model id -> backend id): see the module docstring."""
    backends = [b for b in catalog.backends if b.id in backend_ids]
    model_for: dict[str, Model] = {}
    for purpose in catalog.purposes():
        serving = [
            m
            for m in catalog.models
            if m.enabled
            and purpose in m.purposes
            and any(m.vram_mb + catalog.vram_headroom_mb <= b.vram_mb for b in backends)
        ]
        if serving:
            model_for[purpose] = max(
                serving, key=lambda m: (max(s.quality for s in m.tiers.values()), -catalog.models.index(m))
            )
    pinned: dict[str, int] = {b.id: 0 for b in backends}
    backend_for: dict[str, str] = {}
    for model in catalog.models:
        if model not in model_for.values() or model.id in backend_for:
            continue
        fitting = [b for b in backends if model.vram_mb + catalog.vram_headroom_mb <= b.vram_mb]
        chosen = min(fitting, key=lambda b: (pinned[b.id], backends.index(b)))
        pinned[chosen.id] += 1
        backend_for[model.id] = chosen.id
    return model_for, backend_for


ORACLE_PRICES: tuple[float, ...] = (0.0, 0.25, 1.0, 4.0, 1000.0)  # quality points per GPU second


class Oracle(Baseline):
    name = "oracle"
    uses_front = True  # the same queue priority the router gives its urgent requests

    def __init__(self, world: World, price: float = 0.0) -> None:
        super().__init__(world)
        self.price = price

    def allowed(self, need: Need, c: Candidate) -> bool:
        # It knows the true VRAM of every card: no OOM, and nothing the catalog alone would refuse.
        return serves(self.world.catalog, need, c) and self.world.fleet.fits(c.view.backend.id, c.model)

    def choose(self, index: int, need: Need, eligible: list[Candidate]) -> Candidate | None:
        fleet = self.world.fleet
        now = self.world.loop.now
        due = now + need.deadline_s
        projected = {b: fleet.projected(b, need.front) for b in {c.view.backend.id for c in eligible}}
        options: list[tuple[Candidate, float, float]] = []  # (candidate, true finish, true GPU seconds)
        for c in eligible:
            free_at, memory = projected[c.view.backend.id]
            timing = fleet.timing_of(
                index,
                1,
                c.model,
                c.tier,
                c.steps,
                c.width,
                c.height,
                need.batch_size,
                c.view.backend.id,
                resident=memory.is_loaded(c.model.id),
            )
            options.append((c, max(free_at, now) + timing.total_s, timing.total_s))
        in_time = [o for o in options if o[1] <= due + 1e-9]
        if in_time:
            return max(
                in_time,
                key=lambda o: (o[0].quality - self.price * o[2], o[0].quality, -o[1], -self.rank(o[0])),
            )[0]
        return min(options, key=lambda o: (o[1], -o[0].quality, self.rank(o[0])))[0]
