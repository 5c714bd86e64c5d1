"""Predict, from ComfyUI's per-step progress, whether a running rung will miss its budget.

Pure arithmetic on the progress reports: no clock of its own (times are the reports' seconds
since submission), no I/O. The runner asks it at each report and interrupts on a predicted miss
when a faster rung can still make it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepWatch:
    budget_s: float  # seconds after submission by which the attempt must be done
    expected_step_s: float  # the time model's seconds per step for this rung on this backend
    after_sampling_s: float  # expected seconds from the last step to the saved image (decode, save)
    min_steps: int = 2  # steps seen before a rate is trusted (the first step carries warm-up)
    _node: str | None = field(default=None, init=False)
    _first: tuple[int, float] | None = field(default=None, init=False)
    step_s: float | None = field(default=None, init=False)  # observed seconds per step
    predicted_finish_s: float | None = field(default=None, init=False)

    def observe(self, node: str | None, value: int, max_steps: int, elapsed_s: float) -> bool:
        """Record one progress report; True when the attempt is predicted to finish after the budget."""
        if max_steps <= 0:
            return False
        if node != self._node or self._first is None or value < self._first[0]:
            self._node, self._first = node, (value, elapsed_s)  # a new sampler (or a restart): new rate
            return False
        steps_done = value - self._first[0]
        if steps_done < self.min_steps - 1 or value < self.min_steps:
            return False
        self.step_s = (elapsed_s - self._first[1]) / steps_done
        self.predicted_finish_s = elapsed_s + (max_steps - value) * self.step_s + self.after_sampling_s
        return self.predicted_finish_s > self.budget_s

    @property
    def slowness(self) -> float | None:
        """Observed over expected seconds per step (3.0 = the GPU runs three times slower than believed)."""
        if self.step_s is None or self.expected_step_s <= 0:
            return None
        return self.step_s / self.expected_step_s
