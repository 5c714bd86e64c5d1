"""`report plan`: a one-model, one-backend catalog whose times and prices are easy to add up by hand.

faceswap-reactor with run time = 1 s per step at every tier (base 0, full resolution) on one backend
of speed 1 costing 3.6 USD/h (0.001 USD per second):

    tier      seconds  USD     quality
    draft     8        0.008   60
    standard  16       0.016   72
    high      24       0.024   80
    max       40       0.040   84
"""

from __future__ import annotations

import pytest

from router.catalog import Catalog, TierSpec, TimeModel
from router.report.plan import make_plan, plan_text


@pytest.fixture(scope="module")
def small(catalog: Catalog) -> Catalog:
    model = catalog.model("faceswap-reactor")
    assert model is not None
    tiers = {
        "draft": TierSpec(steps=8, cfg=5.0, quality=60),
        "standard": TierSpec(steps=16, cfg=6.0, quality=72),
        "high": TierSpec(steps=24, cfg=6.0, quality=80),
        "max": TierSpec(steps=40, cfg=6.0, quality=84),
    }
    model = model.model_copy(
        update={"time": TimeModel(base_s=0, per_step_s=1.0), "tiers": tiers, "calibration": None}
    )
    backend = catalog.backends[0].model_copy(update={"speed_factor": 1.0, "usd_per_hour": 3.6})
    return catalog.model_copy(update={"models": (model,), "backends": (backend,)})


FEASIBLE = [
    # 10 jobs, 200 s: all draft (80 s); draft->standard (12 q / 8 s) for all 10 (160 s);
    # standard->high (8 q / 8 s) for the 5 that the last 40 s allow. Mean (5x72 + 5x80) / 10 = 76.
    pytest.param(
        10,
        200.0,
        None,
        {"faceswap-reactor/standard": 5, "faceswap-reactor/high": 5},
        76.0,
        200.0,
        id="time-bound-mix",
    ),
    # 10 jobs, plenty of time, 0.10 USD: draft costs 0.08; the 0.02 left moves 2 jobs to standard.
    pytest.param(
        10,
        1000.0,
        0.10,
        {"faceswap-reactor/draft": 8, "faceswap-reactor/standard": 2},
        62.4,
        96.0,
        id="budget-bound-mix",
    ),
    # Time for everyone at max (10 x 40 = 400 s).
    pytest.param(10, 400.0, None, {"faceswap-reactor/max": 10}, 84.0, 400.0, id="everyone-at-max"),
    # Exactly the draft floor.
    pytest.param(10, 80.0, None, {"faceswap-reactor/draft": 10}, 60.0, 80.0, id="exactly-draft-floor"),
]


@pytest.mark.parametrize(("jobs", "deadline_s", "budget", "mix", "quality", "seconds"), FEASIBLE)
def test_feasible_plans_match_the_hand_greedy(
    small: Catalog,
    jobs: int,
    deadline_s: float,
    budget: float | None,
    mix: dict[str, int],
    quality: float,
    seconds: float,
) -> None:
    plan = make_plan(small, jobs, "face-swap", deadline_s, budget)
    assert plan.feasible, plan.reason
    assert plan.mix == mix
    assert plan.mean_quality == pytest.approx(quality)
    assert plan.gpu_seconds == pytest.approx(seconds)
    assert plan.gpu_seconds <= plan.capacity_s + 1e-9
    if budget is not None:
        assert plan.cost_usd <= budget + 1e-9


INFEASIBLE = [
    # 30 drafts need 240 s; 200 s hold 25.
    pytest.param(30, 200.0, None, {"deadline_s": 240.0, "max_jobs": 25.0}, id="not-enough-time"),
    # 10 drafts cost 0.08 USD; 0.05 buys 6.
    pytest.param(10, 1000.0, 0.05, {"budget_usd": 0.08, "max_jobs": 6.0}, id="not-enough-budget"),
    # Both short: 30 drafts need 240 s and 0.24 USD; 200 s hold 25, 0.10 USD buys 12.
    pytest.param(
        30, 200.0, 0.10, {"deadline_s": 240.0, "budget_usd": 0.24, "max_jobs": 12.0}, id="both-short"
    ),
]


@pytest.mark.parametrize(("jobs", "deadline_s", "budget", "needs"), INFEASIBLE)
def test_infeasible_plans_say_what_would_fit(
    small: Catalog, jobs: int, deadline_s: float, budget: float | None, needs: dict[str, float]
) -> None:
    plan = make_plan(small, jobs, "face-swap", deadline_s, budget)
    assert not plan.feasible
    assert plan.needs == pytest.approx(needs)
    assert "INFEASIBLE" in plan_text(plan)
    # What it suggests is enough: the suggested job count fits as it is.
    assert make_plan(small, int(needs["max_jobs"]), "face-swap", deadline_s, budget).feasible
    # And the suggested time and money make the full job count fit.
    fixed = make_plan(
        small, jobs, "face-swap", needs.get("deadline_s", deadline_s), needs.get("budget_usd", budget)
    )
    assert fixed.feasible, fixed.reason


def test_a_deadline_shorter_than_one_image_is_infeasible(small: Catalog) -> None:
    plan = make_plan(small, 1, "face-swap", 5.0)
    assert not plan.feasible
    assert "finishes within the deadline" in plan.reason


def test_unknown_purpose_is_infeasible(small: Catalog) -> None:
    assert not make_plan(small, 1, "no-such-purpose", 3600.0).feasible


def test_the_real_catalog_prefers_better_models_when_time_allows(catalog: Catalog) -> None:
    tight = make_plan(catalog, 200, "portrait", 600.0)
    loose = make_plan(catalog, 200, "portrait", 7200.0)
    assert tight.feasible
    assert loose.feasible
    assert tight.mean_quality is not None
    assert loose.mean_quality is not None
    assert loose.mean_quality > tight.mean_quality
    assert sum(loose.mix.values()) == sum(tight.mix.values()) == 200
