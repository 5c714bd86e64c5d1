"""The product on the virtual clock: router.selection.select for every decision, the runner's own
degrade decisions (router.runs.degrade) and the router's own view of the backends
(router.backends.live.LiveBackendState over the simulated /system_stats and /queue, with its TTL,
slowness and OOM learning), one attempt after another as router.runs.runner.JobRunner runs them:

- on arrival: select; the job's budget and hard stop come from degrade.deadline_window;
- each attempt gets degrade.watch_for's StepWatch and sees every sampler step's progress report
  (seconds since submission, as ComfyUI's WebSocket reports reach the runner); on a predicted miss
  the runner's rule decides (degrade.alternative_need + select + degrade.faster_rung) whether to
  interrupt and switch to a faster rung;
- OOM: record_oom, then re-select (degrade.reselect_need) with the rungs tried excluded;
- past the hard stop the attempt is cancelled (a timeout) and the next rung is re-selected;
- at most degrade.MAX_ATTEMPTS attempts.
Steps are walked lazily: the watch is fed step by step and an event is scheduled only at a step
where it predicts a miss, which is exactly when the live runner would act.
"""

from __future__ import annotations

from router.backends.live import LiveBackendState
from router.catalog.schema import Backend
from router.replay.engine import VirtualClock
from router.replay.fleet import FleetStats, Work
from router.replay.records import RequestRecord, attempt_record
from router.replay.trace import TraceRequest
from router.replay.world import World, finish_failed, need_for
from router.runs import degrade
from router.runs.watch import StepWatch
from router.selection import Candidate, Need, select

SAMPLER_NODE = "3"  # the sampler's node id in the progress reports (one sampler per graph)


class RouterPolicy:
    name = "router"

    def __init__(self, world: World) -> None:
        self.world = world
        fleet = world.fleet

        def client_for(backend: Backend) -> FleetStats:
            return fleet.stats_client(backend.id)

        self.state = LiveBackendState(client_for, VirtualClock(world.loop, world.start))

    def arrive(self, index: int, req: TraceRequest, record: RequestRecord) -> None:
        RouterJob(self, record, need_for(self.world.catalog, req), req.urgency).start()

    def close(self) -> None:
        self.state.close()


class RouterJob:
    """One job through the runner's loop; a WorkListener of its current attempt."""

    def __init__(self, policy: RouterPolicy, record: RequestRecord, need: Need, urgency: str) -> None:
        self.policy = policy
        self.world = policy.world
        self.state = policy.state
        self.record = record
        self.need = need
        self.urgency = urgency
        self.tried: set[tuple[str, str, str]] = set()
        self.attempt_no = 0
        self.first: Candidate | None = None
        self.rung: Candidate | None = None
        self.work: Work | None = None
        self.watch: StepWatch | None = None
        self.next_step = 1
        self.next_rung: Candidate | None = None
        self.stopped_by: str | None = None  # "degrade" | "hard_stop"
        self.deadline_at = self.hard_stop_at = 0.0
        self.last_error = "no rung could run"

    @property
    def now(self) -> float:
        return self.world.loop.now

    def _select(self, need: Need) -> Candidate | None:
        catalog = self.world.catalog
        return select(catalog, need, self.state.snapshot(catalog), self.urgency).chosen

    def start(self) -> None:
        catalog = self.world.catalog
        self.deadline_at, self.hard_stop_at = degrade.deadline_window(self.now, self.need.deadline_s)
        selection = select(catalog, self.need, self.state.snapshot(catalog), self.urgency)
        self.record.selection_reason = selection.selection_reason
        self.record.reason_code = selection.reason_code
        if selection.chosen is None:
            finish_failed(self.record, self.now, selection.selection_reason)
            return
        self.first = selection.chosen
        self.record.first = selection.chosen.key
        self.record.first_estimated_cost_usd = selection.chosen.estimated_cost_usd
        self._attempt(selection.chosen)

    # --- one attempt ----------------------------------------------------------------------------

    def _attempt(self, rung: Candidate) -> None:
        self.attempt_no += 1
        self.rung, self.next_rung, self.stopped_by, self.next_step = rung, None, None, 1
        self.watch = degrade.watch_for(self.world.catalog, self.need, rung, self.deadline_at - self.now)
        work = Work(
            prompt_id=f"{self.record.index}-{self.attempt_no}",
            request_index=self.record.index,
            attempt=self.attempt_no,
            model=rung.model,
            tier=rung.tier,
            steps=rung.steps,
            width=rung.width,
            height=rung.height,
            batch_size=self.need.batch_size,
            backend_id=rung.view.backend.id,
            submitted_at=self.now,
            estimated_busy_s=rung.estimate.load_s + rung.estimate.run_s,
            listener=self,
            front=self.need.front,
        )
        self.work = work
        # JobRunner._attempt: counted in the backend's queue before it is submitted.
        self.state.record_submitted(
            work.backend_id, work.prompt_id, rung.model.id, work.estimated_busy_s, front=work.front
        )
        # The runner waits at most until the hard stop (never less than 0.1 s), then cancels.
        self.world.loop.at(max(self.now + 0.1, self.hard_stop_at), lambda: self._hard_stop(work))
        self.world.fleet.submit(work)

    def on_start(self, work: Work, t: float) -> None:
        self._walk(work)

    def _walk(self, work: Work) -> None:
        """Feed the watch the next progress reports until one predicts a miss; act at that step."""
        watch, timing = self.watch, work.timing
        assert watch is not None and timing is not None and work.started_at is not None
        while self.next_step <= timing.steps:
            step = self.next_step
            self.next_step += 1
            elapsed = work.started_at + timing.step_done_s(step) - work.submitted_at
            if watch.observe(SAMPLER_NODE, step, timing.steps, elapsed):
                self.world.loop.at(work.submitted_at + elapsed, lambda: self._predicted_miss(work))
                return

    def _predicted_miss(self, work: Work) -> None:
        if work is not self.work or work.outcome is not None:
            return
        if self._worth_degrading():
            self.stopped_by = "degrade"
            self.world.fleet.interrupt(work)
        else:
            self._walk(work)

    def _worth_degrading(self) -> bool:
        """JobRunner._worth_degrading on the replay's state."""
        rung, watch = self.rung, self.watch
        assert rung is not None and watch is not None
        if watch.slowness is not None:
            self.state.record_slowness(rung.view.backend.id, watch.slowness, smooth=False)
        need = degrade.alternative_need(self.need, self.tried, rung.key, self.deadline_at - self.now)
        if need is None:
            return False
        catalog = self.world.catalog
        assert self.work is not None
        views = self.state.snapshot(catalog, without=self.work.prompt_id)
        chosen = degrade.faster_rung(select(catalog, need, views, self.urgency))
        if chosen is None:
            return False  # nothing faster fits: finishing late beats not finishing
        self.next_rung = chosen
        return True

    def _hard_stop(self, work: Work) -> None:
        if work is self.work and work.outcome is None:
            self.stopped_by = "hard_stop"
            self.world.fleet.interrupt(work)

    # --- the outcome ------------------------------------------------------------------------------

    def on_end(self, work: Work, t: float, outcome: str) -> None:
        rung, watch, first = self.rung, self.watch, self.first
        assert rung is not None and watch is not None and first is not None
        degraded = rung.key != first.key
        backend_id = rung.view.backend.id
        self.state.record_finished(backend_id, work.prompt_id)
        label, error, next_rung = self._classify(work, outcome, degraded)
        if outcome == "ok" or (outcome == "interrupted" and self.stopped_by == "degrade"):
            self.state.record_run(backend_id, rung.model.id, work.gpu_s)  # JobRunner._learn
        if watch.slowness is not None and outcome == "ok":
            self.state.record_slowness(backend_id, watch.slowness)
        self.record.attempts.append(attempt_record(work, rung, label, error, degraded))
        self.tried.add(rung.key)
        if label in ("ok", "degraded"):
            self.record.status = "succeeded"
            self.record.finished_at = t
            self.record.quality = rung.quality
            self.record.degraded = degraded
            return
        self.last_error = f"attempt {self.attempt_no} ({rung.model.id}/{rung.tier} on {backend_id}): {error}"
        if self.attempt_no >= degrade.MAX_ATTEMPTS:
            finish_failed(self.record, t, self.last_error)
            return
        stop = degrade.past_hard_stop(t, self.hard_stop_at)
        if stop is not None:
            finish_failed(self.record, t, f"{self.last_error}; {stop}")
            return
        if next_rung is None:
            need = degrade.reselect_need(self.need, self.tried, self.deadline_at - self.now)
            next_rung = self._select(need) if need is not None else None
        if next_rung is None:
            finish_failed(self.record, t, self.last_error)
            return
        self._attempt(next_rung)

    def _classify(self, work: Work, outcome: str, degraded: bool) -> tuple[str, str | None, Candidate | None]:
        """JobRunner._classify for the replay's outcomes: (outcome, error, next rung)."""
        rung, watch = self.rung, self.watch
        assert rung is not None and watch is not None
        if outcome == "ok":
            return ("degraded" if degraded else "ok"), None, None
        if outcome == "oom":
            self.state.record_oom(rung.view.backend.id, rung.vram_needed_mb)
            return "oom", (work.error or "out of memory")[:2000], None
        if self.stopped_by == "degrade":
            finish = watch.predicted_finish_s or 0.0
            return (
                "timeout",
                f"interrupted early: predicted to finish at {finish:.1f} s, over the "
                f"{watch.budget_s:.1f} s budget (observed {watch.step_s or 0:.3f} s/step "
                f"vs {watch.expected_step_s:.3f} expected)",
                self.next_rung,
            )
        waited = self.hard_stop_at - work.submitted_at
        return "timeout", f"no result within {max(0.1, waited):.1f} s; cancelled on the backend", None
