"""router.runs.degrade: the runner's pure degrade decisions that trace replay shares."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router.catalog import Catalog
from router.runs import degrade
from router.selection import BackendView, Need, select

A = ("flux1-dev-fp16", "high", "a100")
B = ("sdxl-base", "high", "a100")


def test_deadline_window() -> None:
    assert degrade.deadline_window(100.0, 60.0) == (160.0, 100.0 + 2 * 60.0 + 30.0)


@pytest.mark.parametrize(
    ("allow_degrade", "remaining_s", "expected_deadline_s"),
    [(True, 12.5, 12.5), (True, -3.0, 0.001), (False, 12.5, 12.5), (False, -3.0, None), (False, 0.0, None)],
    ids=[
        "time-left",
        "late-may-degrade",
        "time-left-no-degrade",
        "late-no-degrade",
        "at-deadline-no-degrade",
    ],
)
def test_reselect_need(allow_degrade: bool, remaining_s: float, expected_deadline_s: float | None) -> None:
    need = Need("portrait", 60.0, allow_degrade=allow_degrade)
    out = degrade.reselect_need(need, {A}, remaining_s)
    if expected_deadline_s is None:
        assert out is None
    else:
        assert out is not None
        assert out.deadline_s == expected_deadline_s and out.exclude == frozenset({A})
        assert replace(out, deadline_s=60.0, exclude=frozenset()) == need  # nothing else changes


def test_alternative_need_excludes_the_running_rung_and_gives_up_past_the_deadline() -> None:
    need = Need("portrait", 60.0)
    alt = degrade.alternative_need(need, {B}, A, 20.0)
    assert alt is not None and alt.deadline_s == 20.0 and alt.exclude == frozenset({A, B})
    assert degrade.alternative_need(need, set(), A, 0.0) is None


def test_faster_rung_only_when_it_fits_in_time(catalog: Catalog) -> None:
    views = [BackendView(b) for b in catalog.backends]
    in_time = select(catalog, Need("portrait", 30.0), views)
    assert degrade.faster_rung(in_time) is in_time.chosen is not None
    best_effort = select(catalog, Need("portrait", 0.5), views)  # nothing fits half a second
    assert best_effort.best_effort and best_effort.chosen is not None
    assert degrade.faster_rung(best_effort) is None


def test_watch_for_uses_the_declared_speed(catalog: Catalog) -> None:
    """The expected step time comes from the catalog's backend, not the view's corrected speed."""
    rtx = next(b for b in catalog.backends if b.id == "rtx4090")
    slowed = BackendView(rtx.model_copy(update={"speed_factor": rtx.speed_factor / 3}))
    need = Need("portrait", 60.0)
    chosen = select(catalog, replace(need, model="sdxl-base"), [slowed]).chosen
    assert chosen is not None
    watch = degrade.watch_for(catalog, need, chosen, 42.0)
    tm = chosen.model.time
    assert watch.budget_s == 42.0
    assert watch.expected_step_s == pytest.approx(tm.per_step_s / rtx.speed_factor)
    assert watch.after_sampling_s == pytest.approx(0.5 * tm.base_s / rtx.speed_factor)


@pytest.mark.parametrize(
    ("now", "stops"),
    [(129.9, False), (130.0, True), (500.0, True)],
    ids=["before-the-hard-stop", "at-the-hard-stop", "long-after"],
)
def test_no_attempt_starts_past_the_hard_stop(now: float, stops: bool) -> None:
    _, hard_stop_at = degrade.deadline_window(0.0, 50.0)  # 2 x 50 + 30
    reason = degrade.past_hard_stop(now, hard_stop_at)
    assert (reason is not None) == stops
    if reason is not None:
        assert "hard stop" in reason


def test_replay_jobs_past_the_hard_stop_end_instead_of_burning_attempts(catalog: Catalog) -> None:
    """Found by replay at load 1.2: after the hard stop every new attempt got 0.1 s and timed out,
    six times over. A job past its hard stop now ends after the attempt that overran."""
    from router.replay.generate import TraceSpec, generate_trace
    from router.replay.run import ReplayOptions, replay_policy

    trace = generate_trace(catalog, TraceSpec(load=1.2, seed=1, requests=400))
    run = replay_policy(catalog, trace, "router", ReplayOptions(seed=0, slowdown=2.0))
    for r in run.records:
        late = [a for a in r.attempts if a.submitted_at >= r.arrived_at + 2 * r.deadline_s + 30.0]
        assert late == [], (r.index, [(a.model, a.outcome) for a in r.attempts])
    stopped = [r for r in run.records if r.error and "hard stop" in r.error]
    assert stopped, "the trace should drive some jobs past their hard stop"
