"""The pure decisions of degrading within one deadline budget, shared by the live runner
(router/runs/runner.py) and trace replay (router/replay): no I/O, no clock, no logging.

- `deadline_window`: when the budget ends, and the hard stop after which an attempt is abandoned.
- `reselect_need`: the Need to re-select with after a failed attempt (time left, rungs tried).
- `watch_for`: the StepWatch of one attempt (expected step time from the catalog's own speed).
- `alternative_need` + `faster_rung`: on a predicted miss, whether a rung not yet tried still fits
  the time left (interrupt and switch) or not (finishing late beats not finishing).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import replace

from router.catalog.schema import Catalog
from router.runs.watch import StepWatch
from router.selection.estimate import pixel_scale, time_model_and_speed
from router.selection.types import Candidate, Need, Selection

MAX_ATTEMPTS = 6
# A rung with no faster alternative may overrun its deadline; past this it is abandoned.
HARD_STOP_FACTOR = 2.0
HARD_STOP_GRACE_S = 30.0
# The smallest deadline a re-selection asks for (0 would make every candidate infeasible at once).
MIN_RESELECT_DEADLINE_S = 0.001

Key = tuple[str, str, str]


def deadline_window(t0: float, deadline_s: float) -> tuple[float, float]:
    """(deadline_at, hard_stop_at) for a job started at monotonic time t0."""
    return t0 + deadline_s, t0 + HARD_STOP_FACTOR * deadline_s + HARD_STOP_GRACE_S


def past_hard_stop(now: float, hard_stop_at: float) -> str | None:
    """Why no further attempt may start, or None. An attempt started past the hard stop would be
    given no time at all (it could only time out), so the job ends with the last reason instead."""
    if now < hard_stop_at:
        return None
    return "past the job's hard stop (twice the deadline plus 30 s): no further attempt"


def reselect_need(need: Need, tried: Set[Key], remaining_s: float) -> Need | None:
    """The Need of the next rung after a failed attempt; None when no rung should be tried.

    Past the deadline a job that may degrade still gets a best-effort rung (the selector's
    fastest runnable one); one that may not degrade ends.
    """
    if remaining_s <= 0 and not need.allow_degrade:
        return None
    return replace(need, deadline_s=max(remaining_s, MIN_RESELECT_DEADLINE_S), exclude=frozenset(tried))


def watch_for(catalog: Catalog, need: Need, rung: Candidate, budget_s: float) -> StepWatch:
    """The StepWatch of one attempt of `rung` with `budget_s` seconds left after submission."""
    # Expected step time from the catalog's own speed, not the view's corrected one, so the
    # observed ratio is absolute slowness (what LiveBackendState keeps), not relative to it.
    declared = next((b for b in catalog.backends if b.id == rung.view.backend.id), rung.view.backend)
    tm, speed = time_model_and_speed(rung.model, declared)
    scale = pixel_scale(tm, rung.width, rung.height) * need.batch_size / speed
    # base_s covers text encoding before sampling and decoding/saving after it: half after.
    return StepWatch(
        budget_s=budget_s, expected_step_s=tm.per_step_s * scale, after_sampling_s=0.5 * tm.base_s * scale
    )


def alternative_need(need: Need, tried: Set[Key], running: Key, remaining_s: float) -> Need | None:
    """The Need to look for a faster rung with while `running` is predicted to miss; None when
    the deadline has already passed (nothing can make it any more: let the rung finish)."""
    if remaining_s <= 0:
        return None
    return replace(need, deadline_s=remaining_s, exclude=frozenset(set(tried) | {running}))


def faster_rung(alternative: Selection) -> Candidate | None:
    """The rung to switch to, or None: only a rung the selector expects to finish in time is worth
    interrupting for (a best-effort answer would be late too)."""
    if alternative.chosen is None or alternative.best_effort:
        return None
    return alternative.chosen
