"""Calibration from real runs: per-backend time models and rating-blended quality.

Pure part (`fit_time_model`, `calibrate_document`) plus one reader of the database
(`read_observations`). Times: every `model_usage_log` row of a model on a backend gives the run
seconds (`actual_s - queue_s - load_s`, each subtracted when known), normalised to the model's
reference resolution (the estimate scales linearly with pixels, router/selection/estimate.py);
a Theil-Sen line through (steps, normalised seconds) gives `per_step_s` (median of pairwise slopes)
and `base_s` (median intercept), both robust to up to ~29% outliers. Rows ending `timeout` or
`cancelled` are censored (the run took at least that long, we do not know how much more): they
are left out of the fit and only counted. The usage log has no batch size: rows are taken as
batch 1, which is what the router sends today.

Quality: ratings 1..5 of finished jobs map to 0..100 and are blended into the tier's quality with a
Bayesian average, the catalog's value being worth `rating_weight` pseudo-votes. Only ratings newer
than the model's `calibration.last_calibrated` count, so running the script twice does not count
the same votes twice.
"""

from __future__ import annotations

import copy
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router.catalog.schema import Calibration
from router.catalog.update.merge import MODEL_KEY_ORDER, Changes, set_key

USED_OUTCOMES = frozenset({"ok", "degraded"})
CENSORED_OUTCOMES = frozenset({"timeout", "cancelled"})
MAX_FIT_ROWS = 1500  # Theil-Sen is O(n^2) in pairs: the most recent rows are plenty
CALIBRATION_KEY_ORDER = tuple(Calibration.model_fields)


@dataclass(frozen=True)
class RunRow:
    model: str
    backend: str
    outcome: str
    steps: int | None
    width: int | None
    height: int | None
    actual_s: float | None
    queue_s: float | None = None
    load_s: float | None = None

    @property
    def run_s(self) -> float | None:
        if self.actual_s is None:
            return None
        s = self.actual_s - (self.queue_s or 0.0) - (self.load_s or 0.0)
        return s if s > 0 else None


@dataclass(frozen=True)
class RatingRow:
    model: str
    tier: str
    rating: int
    created_at: datetime


@dataclass
class Observations:
    runs: list[RunRow] = field(default_factory=list)
    ratings: list[RatingRow] = field(default_factory=list)


@dataclass(frozen=True)
class Fit:
    base_s: float
    per_step_s: float
    used: int
    censored: int
    excluded: int
    p50_s: float
    p95_s: float


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float | None]:
    """(intercept, slope) of the Theil-Sen line; slope None when every x is the same."""
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    if not slopes:
        return median(ys), None
    slope = median(slopes)
    return median([y - slope * x for x, y in zip(xs, ys, strict=True)]), slope


def fit_time_model(
    rows: Sequence[RunRow], ref_width: int, ref_height: int, prior_base_s: float, prior_per_step_s: float
) -> Fit | None:
    """The fitted base_s and per_step_s of one model on one backend; None without usable rows."""
    xs: list[float] = []
    ys: list[float] = []
    raw: list[float] = []
    censored = excluded = 0
    for row in rows:
        if row.outcome in CENSORED_OUTCOMES:
            censored += 1
            continue
        run_s = row.run_s
        if row.outcome not in USED_OUTCOMES or run_s is None or row.steps is None or row.steps <= 0:
            excluded += 1
            continue
        scale = 1.0
        if row.width and row.height:
            scale = (row.width * row.height) / (ref_width * ref_height)
        xs.append(float(row.steps))
        ys.append(run_s / scale)
        raw.append(run_s)
    if not xs:
        return None
    fit_xs, fit_ys = xs[-MAX_FIT_ROWS:], ys[-MAX_FIT_ROWS:]
    base, slope = theil_sen(fit_xs, fit_ys)
    if slope is None:
        # One step count only: the split between base and per-step cost is not identifiable, so the
        # catalog's split is kept and scaled to the observed times.
        prior = [prior_base_s + prior_per_step_s * x for x in fit_xs]
        factor = median([y / p for y, p in zip(fit_ys, prior, strict=True) if p > 0] or [1.0])
        base, slope = prior_base_s * factor, prior_per_step_s * factor
    if base < 0:  # a negative intercept is noise around zero: refit through the origin
        base, slope = 0.0, median([y / x for x, y in zip(fit_xs, fit_ys, strict=True)])
    return Fit(
        base_s=max(0.0, base),
        per_step_s=max(0.0, slope),
        used=len(xs),
        censored=censored,
        excluded=excluded,
        p50_s=percentile(raw, 0.5),
        p95_s=percentile(raw, 0.95),
    )


def blended_quality(prior: float, ratings: Sequence[int], weight: float) -> float:
    """Bayesian average: the prior counts as `weight` votes; rating r in 1..5 is (r - 1) x 25."""
    mapped = [(min(5, max(1, r)) - 1) * 25.0 for r in ratings]
    if weight + len(mapped) == 0:
        return prior
    return (weight * prior + sum(mapped)) / (weight + len(mapped))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def calibrate_document(
    doc: dict[str, Any],
    observations: Observations,
    changes: Changes,
    *,
    min_samples: int = 20,
    rating_weight: float = 20.0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A new document with fitted times and blended qualities; `changes` records what moved."""
    out = copy.deepcopy(doc)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0).isoformat()
    runs: dict[str, dict[str, list[RunRow]]] = defaultdict(lambda: defaultdict(list))
    for run in observations.runs:
        runs[run.model][run.backend].append(run)
    for entry in out.get("models", []):
        model_id = str(entry.get("id"))
        previous = entry.get("calibration") or {}
        since = _parse_time(previous.get("last_calibrated"))
        timed = _calibrate_times(entry, runs.get(model_id, {}), changes, min_samples, stamp)
        rated = _blend_ratings(entry, observations.ratings, since, changes, rating_weight)
        if rated and not timed:
            # Remember when the votes were counted, so that the next run does not count them again.
            cal = entry.get("calibration")
            if cal is None:
                cal = {"samples": 0}
                set_key(entry, "calibration", cal, MODEL_KEY_ORDER)
            set_key(cal, "last_calibrated", stamp, CALIBRATION_KEY_ORDER)
    return out


def _calibrate_times(
    entry: dict[str, Any], by_backend: dict[str, list[RunRow]], changes: Changes, min_samples: int, stamp: str
) -> bool:
    model_id = entry.get("id")
    time = entry.get("time") or {}
    ref_w, ref_h = int(time.get("ref_width", 1024)), int(time.get("ref_height", 1024))
    fits: dict[str, Fit] = {}
    raw_runs: list[float] = []
    for backend, rows in sorted(by_backend.items()):
        ok = sum(1 for r in rows if r.outcome in USED_OUTCOMES and r.run_s is not None and r.steps)
        if ok < min_samples:
            censored = sum(1 for r in rows if r.outcome in CENSORED_OUTCOMES)
            changes.notes.append(
                f"{model_id} on {backend}: {ok} usable runs, fewer than {min_samples} "
                f"({censored} censored): not calibrated"
            )
            continue
        fit = fit_time_model(
            rows, ref_w, ref_h, float(time.get("base_s", 0)), float(time.get("per_step_s", 0))
        )
        if fit is None:
            continue
        fits[backend] = fit
        raw_runs += [r.run_s for r in rows if r.outcome in USED_OUTCOMES and r.run_s is not None and r.steps]
    if not fits:
        return False
    cal = copy.deepcopy(entry.get("calibration") or {})
    models = dict(cal.get("backend_time_models") or {})
    for backend, fit in fits.items():
        old = models.get(backend) or time
        models[backend] = {
            "base_s": round(fit.base_s, 3),
            "per_step_s": round(fit.per_step_s, 4),
            "ref_width": ref_w,
            "ref_height": ref_h,
        }
        changes.recalibrated.append(
            f"{model_id} on {backend}: base_s {old.get('base_s')} -> {models[backend]['base_s']}, "
            f"per_step_s {old.get('per_step_s')} -> {models[backend]['per_step_s']} "
            f"({fit.used} runs, {fit.censored} censored timeout/cancelled left out, {fit.excluded} other)"
        )
    for key, value in (
        ("samples", sum(f.used for f in fits.values())),
        ("p50_s", round(percentile(raw_runs, 0.5), 3)),
        ("p95_s", round(percentile(raw_runs, 0.95), 3)),
        ("last_calibrated", stamp),
        ("backend_time_models", models),
    ):
        set_key(cal, key, value, CALIBRATION_KEY_ORDER)
    set_key(entry, "calibrated", True, MODEL_KEY_ORDER)
    set_key(entry, "calibration", cal, MODEL_KEY_ORDER)
    return True


def _blend_ratings(
    entry: dict[str, Any],
    ratings: Sequence[RatingRow],
    since: datetime | None,
    changes: Changes,
    weight: float,
) -> bool:
    model_id = entry.get("id")
    per_tier: dict[str, list[int]] = defaultdict(list)
    for r in ratings:
        if r.model == model_id and (since is None or r.created_at > since):
            per_tier[r.tier].append(r.rating)
    blended = False
    for tier, votes in sorted(per_tier.items()):
        spec = (entry.get("tiers") or {}).get(tier)
        if spec is None:
            continue
        old = float(spec["quality"])
        new = round(blended_quality(old, votes, weight), 1)
        blended = True
        if new != old:
            spec["quality"] = new
            changes.quality.append(f"{model_id} {tier}: quality {old:g} -> {new:g} ({len(votes)} ratings)")
    return blended


def read_observations(database_url: str) -> Observations:
    """Runs and ratings from the router's database (`model_usage_log`, `feedback` joined to `jobs`)."""
    from sqlalchemy import select

    from router.db.database import Database
    from router.db.models import Feedback, Job, ModelUsageLog

    db = Database(database_url)
    try:
        with db.session() as s:
            log = ModelUsageLog
            runs = [
                RunRow(
                    model=row.model_name,
                    backend=row.backend,
                    outcome=row.outcome,
                    steps=row.steps,
                    width=row.width,
                    height=row.height,
                    actual_s=row.actual_s,
                    queue_s=row.queue_s,
                    load_s=row.load_s,
                )
                for row in s.execute(
                    select(
                        log.model_name, log.backend, log.outcome, log.steps, log.width, log.height,
                        log.actual_s, log.queue_s, log.load_s,
                    )
                    .where(log.outcome.in_(USED_OUTCOMES | CENSORED_OUTCOMES))
                    .order_by(log.started_at, log.id)
                )
            ]  # fmt: skip
            ratings = [
                RatingRow(model=model, tier=tier, rating=rating, created_at=created)
                for model, tier, rating, created in s.execute(
                    select(Job.model_name, Job.tier, Feedback.rating, Feedback.created_at)
                    .join(Job, Job.id == Feedback.job_id)
                    .where(Job.model_name.is_not(None), Job.tier.is_not(None))
                )
                if model is not None and tier is not None
            ]
    finally:
        db.dispose()
    return Observations(runs=runs, ratings=ratings)
