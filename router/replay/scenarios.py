"""Named request mixes for generated traces: what is asked (purposes, tiers, sizes) and how urgently.

The urgency mixes are the seed's scenarios: `urgent` (people waiting at screens), `flexible` (mostly
queued work that can wait) and `mixed` (a hub's ordinary day). Every share is a probability; each
table sums to 1 (checked in the unit tests).
"""

from __future__ import annotations

from types import MappingProxyType

from router.catalog.schema import TierName

Shares = MappingProxyType[str, float]

URGENCY_MIXES: MappingProxyType[str, Shares] = MappingProxyType(
    {
        "urgent": MappingProxyType({"realtime": 0.4, "high": 0.4, "normal": 0.2}),
        "flexible": MappingProxyType({"high": 0.1, "normal": 0.4, "batch": 0.5}),
        "mixed": MappingProxyType({"realtime": 0.15, "high": 0.25, "normal": 0.4, "batch": 0.2}),
    }
)

# What a hub's requests are for (text-to-image dominates; face swap and inpaint are the costly tail).
PURPOSE_MIX: Shares = MappingProxyType(
    {
        "text-to-image": 0.35,
        "portrait": 0.15,
        "product": 0.15,
        "illustration": 0.1,
        "text-rendering": 0.08,
        "img2img": 0.07,
        "inpaint": 0.05,
        "face-swap": 0.05,
    }
)

TIER_MIX: MappingProxyType[TierName, float] = MappingProxyType(
    {"high": 0.7, "standard": 0.15, "max": 0.1, "draft": 0.05}
)

SIZE_MIX: MappingProxyType[tuple[int, int], float] = MappingProxyType(
    {(1024, 1024): 0.7, (832, 1216): 0.15, (1216, 832): 0.15}
)
