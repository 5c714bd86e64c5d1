"""Calibration: a robust fit recovers known times from a noisy, censored log; ratings blend in."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from router.catalog.loader import parse_catalog
from router.catalog.update.calibrate import (
    Observations,
    RatingRow,
    RunRow,
    blended_quality,
    calibrate_document,
    fit_time_model,
    theil_sen,
)
from router.catalog.update.merge import Changes

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def synthetic_log(
    model: str,
    backend: str,
    base_s: float,
    per_step_s: float,
    *,
    n: int = 200,
    ref: tuple[int, int] = (1024, 1024),
    seed: int = 1,
    outlier_share: float = 0.10,
    censored: int = 15,
    steps_choices: tuple[int, ...] = (4, 8, 12, 20, 28, 35, 50),
) -> list[RunRow]:
    """Runs whose true time is (base_s + per_step_s x steps) x pixels/ref, with 5% noise, queue and
    load time on top, `outlier_share` of them 3-6x slower (swapping, a busy GPU), plus `censored`
    timeouts/cancellations whose actual_s is far below the true time."""
    rng = random.Random(seed)
    sizes = [(1024, 1024), (768, 768), (1024, 768), (1280, 1024), (512, 512)]
    rows = []
    for i in range(n):
        steps = rng.choice(steps_choices)
        w, h = rng.choice(sizes)
        run = (base_s + per_step_s * steps) * (w * h) / (ref[0] * ref[1]) * rng.gauss(1.0, 0.05)
        if rng.random() < outlier_share:
            run *= rng.uniform(3, 6)
        queue, load = rng.uniform(0, 8), rng.choice([None, 0.0, 20.0])
        outcome = "degraded" if i % 7 == 0 else "ok"
        rows.append(RunRow(model, backend, outcome, steps, w, h, run + queue + (load or 0), queue, load))
    for i in range(censored):
        rows.append(
            RunRow(model, backend, "timeout" if i % 2 else "cancelled", 50, 1024, 1024, 1.0, 0.2, None)
        )
    rng.shuffle(rows)
    return rows


FIT_CASES = [
    pytest.param(1.5, 0.4, (1024, 1024), 1, id="flux-like"),
    pytest.param(0.6, 0.1, (1024, 1024), 2, id="sdxl-like"),
    pytest.param(0.25, 0.041, (512, 512), 3, id="sd15-like"),
    pytest.param(3.0, 0.75, (1024, 1024), 4, id="qwen-like"),
]


@pytest.mark.parametrize(("base_s", "per_step_s", "ref", "seed"), FIT_CASES)
def test_fit_recovers_known_times_within_10_percent(
    base_s: float, per_step_s: float, ref: tuple[int, int], seed: int
) -> None:
    rows = synthetic_log("m", "b", base_s, per_step_s, ref=ref, seed=seed)

    fit = fit_time_model(rows, ref[0], ref[1], prior_base_s=10.0, prior_per_step_s=10.0)

    assert fit is not None
    assert fit.base_s == pytest.approx(base_s, rel=0.10)
    assert fit.per_step_s == pytest.approx(per_step_s, rel=0.10)
    assert fit.used == 200
    assert fit.censored == 15


def test_least_squares_would_fail_where_theil_sen_does_not() -> None:
    """The outliers are large enough that a plain mean fit misses by more than 10%."""
    rows = [r for r in synthetic_log("m", "b", 1.5, 0.4, seed=1) if r.outcome in ("ok", "degraded")]
    xs = [float(r.steps or 0) for r in rows]
    ys = [(r.run_s or 0) / ((r.width or 1) * (r.height or 1) / 1024**2) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    ols_slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    assert abs(ols_slope - 0.4) / 0.4 > 0.10
    _, ts_slope = theil_sen(xs, ys)
    assert ts_slope == pytest.approx(0.4, rel=0.10)


def test_one_step_count_keeps_the_catalog_split_scaled_to_observations() -> None:
    rows = synthetic_log("m", "b", 1.2, 0.42, steps_choices=(4,), outlier_share=0.0, censored=0)
    fit = fit_time_model(rows, 1024, 1024, prior_base_s=0.6, prior_per_step_s=0.21)  # half the truth
    assert fit is not None
    assert fit.base_s == pytest.approx(1.2, rel=0.10)
    assert fit.per_step_s == pytest.approx(0.42, rel=0.10)


def test_only_censored_or_failed_rows_give_no_fit() -> None:
    rows = [RunRow("m", "b", "timeout", 20, 1024, 1024, 60.0), RunRow("m", "b", "oom", 20, 1024, 1024, 3.0)]
    assert fit_time_model(rows, 1024, 1024, 1.0, 0.1) is None


@pytest.fixture
def doc() -> dict[str, Any]:
    return json.loads((ROOT / "models_config.json").read_text())


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in doc["models"]}


def test_calibrate_document_writes_fit_percentiles_and_flags(doc: dict[str, Any]) -> None:
    rows = synthetic_log("flux1-dev-fp16", "rtx4090", 2.0, 0.6, seed=7)
    rows += synthetic_log("flux1-dev-fp16", "a100", 1.0, 0.3, n=10, seed=8)  # too few
    changes = Changes()

    new = calibrate_document(doc, Observations(runs=rows), changes, min_samples=20, now=NOW)

    entry = by_id(new)["flux1-dev-fp16"]
    cal = entry["calibration"]
    assert entry["calibrated"] is True
    assert list(cal) == ["samples", "p50_s", "p95_s", "last_calibrated", "backend_time_models"]
    assert set(cal["backend_time_models"]) == {"rtx4090"}
    fitted = cal["backend_time_models"]["rtx4090"]
    assert fitted["base_s"] == pytest.approx(2.0, rel=0.10)
    assert fitted["per_step_s"] == pytest.approx(0.6, rel=0.10)
    assert (fitted["ref_width"], fitted["ref_height"]) == (1024, 1024)
    assert cal["samples"] == 200
    assert 0 < cal["p50_s"] < cal["p95_s"]
    assert cal["last_calibrated"] == "2025-06-01T12:00:00+00:00"
    assert entry["time"] == by_id(doc)["flux1-dev-fp16"]["time"]  # the reference model is untouched
    assert len(changes.recalibrated) == 1
    assert "15 censored" in changes.recalibrated[0]
    assert any("flux1-dev-fp16 on a100: 10 usable runs" in n for n in changes.notes)
    for other in doc["models"]:
        if other["id"] != "flux1-dev-fp16":
            assert by_id(new)[other["id"]] == other
    parse_catalog(json.dumps(new))


@pytest.mark.parametrize(
    ("usable", "min_samples", "calibrated"),
    [
        pytest.param(19, 20, False, id="one-below-min"),
        pytest.param(20, 20, True, id="exactly-min"),
        pytest.param(5, 5, True, id="custom-min"),
    ],
)
def test_min_samples(doc: dict[str, Any], usable: int, min_samples: int, calibrated: bool) -> None:
    rows = synthetic_log("sdxl-base", "a100", 0.6, 0.1, n=usable, censored=30, outlier_share=0.0)
    new = calibrate_document(doc, Observations(runs=rows), Changes(), min_samples=min_samples, now=NOW)
    assert (new != doc) is calibrated
    assert by_id(new)["sdxl-base"].get("calibrated", False) is calibrated


def test_other_backends_fits_are_kept(doc: dict[str, Any]) -> None:
    edited = copy.deepcopy(doc)
    old_fit = {"base_s": 9.0, "per_step_s": 0.9, "ref_width": 1024, "ref_height": 1024}
    by_id(edited)["sdxl-base"]["calibration"] = {"samples": 50, "backend_time_models": {"a100": old_fit}}
    rows = synthetic_log("sdxl-base", "rtx4090", 0.7, 0.12)
    new = calibrate_document(edited, Observations(runs=rows), Changes(), now=NOW)
    assert by_id(new)["sdxl-base"]["calibration"]["backend_time_models"]["a100"] == old_fit


@pytest.mark.parametrize(
    ("prior", "ratings", "weight", "expected"),
    [
        pytest.param(80.0, [5] * 20, 20.0, 90.0, id="as-many-fives-as-pseudo-votes"),
        pytest.param(50.0, [1] * 5, 20.0, 40.0, id="few-ones-move-a-little"),
        pytest.param(70.0, [], 20.0, 70.0, id="no-votes"),
        pytest.param(70.0, [3, 3], 0.0, 50.0, id="no-prior-weight"),
        pytest.param(60.0, [9, -1], 2.0, 55.0, id="out-of-range-clamped"),
    ],
)
def test_blended_quality(prior: float, ratings: list[int], weight: float, expected: float) -> None:
    assert blended_quality(prior, ratings, weight) == pytest.approx(expected)


def test_ratings_blend_per_tier_and_are_not_counted_twice(doc: dict[str, Any]) -> None:
    ratings = [RatingRow("flux1-dev-fp16", "standard", 1, NOW - timedelta(hours=1)) for _ in range(20)]
    changes = Changes()
    new = calibrate_document(doc, Observations(ratings=ratings), changes, rating_weight=20, now=NOW)

    tiers = by_id(new)["flux1-dev-fp16"]["tiers"]
    assert tiers["standard"]["quality"] == pytest.approx((20 * 83 + 0) / 40)
    assert tiers["high"]["quality"] == 90
    assert changes.quality == ["flux1-dev-fp16 standard: quality 83 -> 41.5 (20 ratings)"]
    assert by_id(new)["flux1-dev-fp16"]["calibration"]["last_calibrated"] == NOW.isoformat()
    parse_catalog(json.dumps(new))

    again = calibrate_document(new, Observations(ratings=ratings), Changes(), now=NOW + timedelta(days=1))
    assert by_id(again)["flux1-dev-fp16"]["tiers"] == tiers
