"""Generated traces: arrivals at a load relative to the fleet's capacity, requests from a named mix.

Arrival processes (rate lambda = load x capacity, see router.replay.capacity):
- `poisson`: exponential gaps at lambda.
- `bursty`: on/off modulated Poisson: "on" phases (mean 60 s) at 3 x lambda, "off" phases (mean
  180 s) at lambda / 3; phase lengths are exponential, so the long-run rate is lambda.
- `diurnal`: lambda x (1 - 0.6 cos(2 pi t / 1 day)): a trough at t = 0, a peak at noon, mean lambda;
  drawn by thinning a Poisson process at the peak rate.
Only the seeded `random.Random` is used, so a seed always gives the same trace.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from router.catalog.schema import Catalog
from router.replay.capacity import fleet_capacity_per_s
from router.replay.scenarios import PURPOSE_MIX, SIZE_MIX, TIER_MIX, URGENCY_MIXES
from router.replay.trace import TraceRequest

ARRIVALS = ("poisson", "bursty", "diurnal")
BURST_ON_MEAN_S = 60.0
BURST_OFF_MEAN_S = 180.0
BURST_ON_FACTOR = 3.0  # on-rate / mean rate; off-rate = mean rate / 3 keeps the mean (60x3 + 180/3 = 240)
DIURNAL_PERIOD_S = 86_400.0
DIURNAL_AMPLITUDE = 0.6


@dataclass(frozen=True)
class TraceSpec:
    arrivals: str = "poisson"
    load: float = 0.8
    mix: str = "mixed"
    seed: int = 0
    requests: int | None = 1000
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.arrivals not in ARRIVALS:
            raise ValueError(f"unknown arrivals {self.arrivals!r}; one of: {', '.join(ARRIVALS)}")
        if self.mix not in URGENCY_MIXES:
            raise ValueError(f"unknown mix {self.mix!r}; one of: {', '.join(URGENCY_MIXES)}")
        if not self.load > 0:
            raise ValueError(f"load must be > 0, got {self.load}")
        if (self.requests is None) == (self.duration_s is None):
            raise ValueError("give exactly one of requests and duration_s")
        if self.requests is not None and self.requests <= 0:
            raise ValueError(f"requests must be > 0, got {self.requests}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")


def arrival_times(
    arrivals: str, rate_per_s: float, rng: random.Random, requests: int | None, duration_s: float | None
) -> list[float]:
    """Arrival seconds until `requests` arrivals or `duration_s` seconds, whichever is given."""
    out: list[float] = []
    for t in _process(arrivals, rate_per_s, rng):
        if duration_s is not None and t > duration_s:
            break
        out.append(t)
        if requests is not None and len(out) >= requests:
            break
    return out


def _process(arrivals: str, rate: float, rng: random.Random) -> Iterator[float]:
    if arrivals == "poisson":
        t = 0.0
        while True:
            t += rng.expovariate(rate)
            yield t
    elif arrivals == "bursty":
        yield from _bursty(rate, rng)
    elif arrivals == "diurnal":
        peak = rate * (1 + DIURNAL_AMPLITUDE)
        t = 0.0
        while True:
            t += rng.expovariate(peak)
            wanted = rate * (1 - DIURNAL_AMPLITUDE * math.cos(2 * math.pi * t / DIURNAL_PERIOD_S))
            if rng.random() * peak < wanted:
                yield t
    else:
        raise ValueError(f"unknown arrivals {arrivals!r}")


def _bursty(rate: float, rng: random.Random) -> Iterator[float]:
    t = 0.0
    on = True
    phase_end = rng.expovariate(1 / BURST_ON_MEAN_S)
    while True:
        phase_rate = rate * BURST_ON_FACTOR if on else rate / BURST_ON_FACTOR
        gap = rng.expovariate(phase_rate)
        if t + gap <= phase_end:
            t += gap
            yield t
            continue
        # Exponential gaps are memoryless: restarting the draw at the phase change is exact.
        t, on = phase_end, not on
        phase_end = t + rng.expovariate(1 / (BURST_ON_MEAN_S if on else BURST_OFF_MEAN_S))


def generate_trace(catalog: Catalog, spec: TraceSpec) -> list[TraceRequest]:
    rng = random.Random(spec.seed)
    rate = spec.load * fleet_capacity_per_s(catalog)
    times = arrival_times(spec.arrivals, rate, rng, spec.requests, spec.duration_s)
    purposes = [p for p in PURPOSE_MIX if p in catalog.purposes()]
    purpose_w = [PURPOSE_MIX[p] for p in purposes]
    urgency_mix = URGENCY_MIXES[spec.mix]
    urgencies = [u for u in urgency_mix if u in catalog.urgencies]
    if not purposes or not urgencies:
        raise ValueError("the catalog serves none of the mix's purposes or urgencies")
    urgency_w = [urgency_mix[u] for u in urgencies]
    tiers, tier_w = list(TIER_MIX), list(TIER_MIX.values())
    sizes, size_w = list(SIZE_MIX), list(SIZE_MIX.values())
    out = []
    for t in times:
        width, height = rng.choices(sizes, size_w)[0]
        out.append(
            TraceRequest(
                t=round(t, 3),
                purpose=rng.choices(purposes, purpose_w)[0],
                urgency=rng.choices(urgencies, urgency_w)[0],
                quality=rng.choices(tiers, tier_w)[0],
                width=width,
                height=height,
            )
        )
    return out
