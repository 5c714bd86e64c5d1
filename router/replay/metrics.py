"""The figures of one policy's replay (DESIGN.md section 6).

- `deadline_hit_rate`: requests that delivered an image by arrival + deadline / all requests
  (failed requests are misses); `hit_rate_by_urgency` the same per urgency.
- `mean_quality`: the catalog's 0-100 quality of the images delivered (late ones included);
  `hit_x_quality` = deadline_hit_rate x mean_quality (the figure the goals compare).
- `cost_usd`: GPU time of every attempt (usd_per_hour x seconds on the GPU, failed attempts
  included); `cost_per_image_usd` = cost_usd / images delivered.
- `degraded_share`: images delivered by a rung other than the first chosen / images delivered.
- `swaps_per_100`: model loads (a model placed on a card that did not hold it) per 100 requests.
- `ooms`: attempts that ran out of VRAM.
- latencies: arrival to delivered image, over the requests that delivered one; percentiles are
  linearly interpolated, as the report's (router.report.metrics.percentile).
Floats are rounded to 9 significant decimals, so equal runs give byte-identical JSON.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from router.replay.records import RequestRecord
from router.report.metrics import percentile


def _r(value: float | None, digits: int = 9) -> float | None:
    return None if value is None else round(value, digits)


def policy_metrics(records: Sequence[RequestRecord], swaps: int, ooms: int) -> dict[str, Any]:
    n = len(records)
    delivered = [r for r in records if r.status == "succeeded"]
    hits = sum(1 for r in records if r.deadline_met)
    by_urgency: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        by_urgency[r.urgency].append(r.deadline_met)
    quality = sum(r.quality or 0.0 for r in delivered) / len(delivered) if delivered else None
    cost = sum(r.cost_usd for r in records)
    latencies = [r.latency_s for r in delivered if r.latency_s is not None]
    hit_rate = hits / n if n else None
    return {
        "requests": n,
        "images": len(delivered),
        "failed": n - len(delivered),
        "deadline_hit_rate": _r(hit_rate),
        "hit_rate_by_urgency": {u: _r(sum(v) / len(v)) for u, v in sorted(by_urgency.items())},
        "mean_quality": _r(quality),
        "hit_x_quality": _r(hit_rate * quality if hit_rate is not None and quality is not None else None),
        "cost_usd": _r(cost),
        "cost_per_image_usd": _r(cost / len(delivered) if delivered else None),
        "degraded_share": _r(sum(1 for r in delivered if r.degraded) / len(delivered) if delivered else None),
        "swaps_per_100": _r(100.0 * swaps / n if n else None),
        "ooms": ooms,
        "latency_p50_s": _r(percentile(latencies, 0.50)),
        "latency_p95_s": _r(percentile(latencies, 0.95)),
        "latency_p99_s": _r(percentile(latencies, 0.99)),
    }
