"""The world's randomness, the same for every policy.

A duration's noise is a pure function of (seed, request index, attempt, model, tier): two policies
that run the same model x tier for the same request and attempt see exactly the same true duration,
whatever happened before, so the comparison measures decisions and not luck. Factors are lognormal
with mean 1 and the simulator's sigma (router.simulator.timing.NOISE_SIGMA).
"""

from __future__ import annotations

import hashlib
import math

from router.simulator.gpu import lognormal_factor
from router.simulator.timing import NOISE_SIGMA

_TWO_64 = float(2**64)


def unit_gauss(*parts: object) -> float:
    """A standard normal draw determined by `parts` (Box-Muller on two 64-bit hash words)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 1.0) / (_TWO_64 + 1.0)  # in (0, 1]: log is finite
    u2 = int.from_bytes(digest[8:], "big") / _TWO_64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def noise_factors(
    seed: int, request_index: int, attempt: int, model_id: str, tier: str, sigma: float = NOISE_SIGMA
) -> tuple[float, float]:
    """(run factor, load factor) of one attempt."""
    key = (seed, request_index, attempt, model_id, tier)
    return (
        lognormal_factor(unit_gauss(*key, "run"), sigma),
        lognormal_factor(unit_gauss(*key, "load"), sigma),
    )
