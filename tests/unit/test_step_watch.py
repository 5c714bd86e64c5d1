from __future__ import annotations

import pytest

from router.runs.watch import StepWatch


def feed(w: StepWatch, steps: list[tuple[int, float]], max_steps: int, node: str = "3") -> list[bool]:
    return [w.observe(node, v, max_steps, t) for v, t in steps]


@pytest.mark.parametrize(
    ("step_s", "budget_s", "expect_miss"),
    [(0.1, 10.0, False), (0.5, 10.0, True), (0.28, 10.0, False), (0.3, 10.0, True)],
    ids=["fast", "3x-slow", "just-fits", "just-misses"],
)
def test_predicts_a_miss_from_the_step_rate(step_s: float, budget_s: float, expect_miss: bool) -> None:
    w = StepWatch(budget_s=budget_s, expected_step_s=0.1, after_sampling_s=1.0)
    # 28 steps starting 1 s after submission: finish = 1 + 28 x step_s + 1
    seen = feed(w, [(v, 1.0 + v * step_s) for v in range(1, 6)], 28)
    assert seen[-1] is expect_miss
    assert w.predicted_finish_s == pytest.approx(2.0 + 28 * step_s)
    assert w.slowness == pytest.approx(step_s / 0.1)


def test_no_prediction_before_two_steps() -> None:
    w = StepWatch(budget_s=1.0, expected_step_s=0.1, after_sampling_s=0.0)
    assert feed(w, [(1, 5.0)], 28) == [False]
    assert w.predicted_finish_s is None


def test_a_new_sampler_node_restarts_the_rate() -> None:
    w = StepWatch(budget_s=100.0, expected_step_s=0.1, after_sampling_s=0.0)
    feed(w, [(1, 1.0), (2, 2.0), (3, 3.0)], 10, node="a")
    assert w.step_s == pytest.approx(1.0)
    feed(w, [(1, 3.1), (2, 3.2), (3, 3.3)], 10, node="b")
    assert w.step_s == pytest.approx(0.1)


def test_reports_without_steps_are_ignored() -> None:
    w = StepWatch(budget_s=1.0, expected_step_s=0.1, after_sampling_s=0.0)
    assert w.observe("9", 0, 0, 50.0) is False
