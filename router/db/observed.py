"""Observed run times per model and tier, from model_usage_log (for GET /models)."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select

from router.db.database import Database
from router.db.models import ModelUsageLog

FAILED = frozenset({"timeout", "oom", "backend_error", "invalid"})
MAX_ROWS = 100_000  # bounded work per call


def _nearest_rank(sorted_s: list[float], q: float) -> float:
    return sorted_s[max(0, math.ceil(q * len(sorted_s)) - 1)]


def observed_by_tier(db: Database, since: datetime) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> tier -> {runs, failures, p50_s, p95_s} over finished attempts since `since`.

    Percentiles are nearest-rank over the seconds of attempts that produced an image; None
    (not 0) when there is none.
    """
    stmt = (
        select(ModelUsageLog.model_name, ModelUsageLog.tier, ModelUsageLog.outcome, ModelUsageLog.actual_s)
        .where(ModelUsageLog.started_at >= since, ModelUsageLog.outcome != "running")
        .order_by(ModelUsageLog.started_at.desc())
        .limit(MAX_ROWS)
    )
    runs: dict[tuple[str, str], int] = defaultdict(int)
    failures: dict[tuple[str, str], int] = defaultdict(int)
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    with db.session() as s:
        for model, tier, outcome, actual_s in s.execute(stmt):
            key = (model, tier or "")
            runs[key] += 1
            if outcome in FAILED:
                failures[key] += 1
            elif outcome in ("ok", "degraded") and actual_s is not None:
                seconds[key].append(actual_s)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for key, n in runs.items():
        done = sorted(seconds[key])
        out[key[0]][key[1]] = {
            "runs": n,
            "failures": failures[key],
            "p50_s": round(_nearest_rank(done, 0.5), 3) if done else None,
            "p95_s": round(_nearest_rank(done, 0.95), 3) if done else None,
        }
    return dict(out)
