"""Run a decision on ComfyUI within ONE deadline budget, degrading instead of missing it.

For each attempt: render the rung's workflow, submit it, and watch the per-step progress. When
the step rate says the rung will finish after the budget and a faster rung can still make it,
interrupt now (not at the deadline) and start that rung on the time left. OOM -> re-select
knowing the backend cannot hold that much; backend failure -> cooldown and re-select elsewhere.
Each re-selection is the pure selector run again with the time left, the rungs already tried
excluded and what was learned (speed, VRAM, health) folded into the backend views.
Every attempt is a `model_usage_log` row; the job row always ends in a terminal status.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from router.api.metrics import RouterMetrics
from router.backends.live import LiveBackendState
from router.catalog.schema import Backend, Catalog
from router.catalog.store import CatalogStore
from router.clock import Clock
from router.comfyui import (
    ComfyUIClient,
    ComfyUIError,
    ConnectionRefused,
    ExecutionFailed,
    HttpError,
    Interrupted,
    Invalid,
    Outcome,
    OutOfMemory,
    Progress,
    SocketDropped,
    Succeeded,
    TimedOut,
)
from router.db.database import Database
from router.db.spool_writer import DurableWriter
from router.db.usage import AttemptStart
from router.limits.quotas import QuotaGate
from router.runs import degrade
from router.runs.outputs import OutputStore
from router.runs.reattach import claim_orphans, follow, runner_identity
from router.runs.render import render_graph
from router.runs.watch import StepWatch
from router.selection import Candidate, Need, select
from router.workflows.templates import TemplateRegistry

log = logging.getLogger(__name__)

MAX_ATTEMPTS = degrade.MAX_ATTEMPTS


@dataclass
class JobSpec:
    job_id: str
    need: Need
    urgency: str
    first: Candidate
    inputs: dict[str, bytes]  # slot -> image bytes (image, mask, face_image)
    prompt: str
    negative_prompt: str
    seed: int
    output: str  # "url" or "base64"
    front: bool = False
    client_id: str | None = None  # whose quotas and spend caps (router/limits)
    on_done: Callable[[], None] | None = None  # called once when the job ends: gives quota holds back


@dataclass
class RunControl:
    """Shared between the runner thread and POST /jobs/<id>/cancel."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    execution: Any = None  # the ComfyUI Execution in flight, for a targeted interrupt


@dataclass(frozen=True)
class Hung:
    """Why the runner gave up on a backend that stopped moving; `answers`: it still answers HTTP
    (worth sending the interrupt)."""

    reason: str
    answers: bool = False


@dataclass
class AttemptResult:
    outcome: str  # ok | degraded | timeout | oom | backend_error | invalid | cancelled
    error: str | None
    next_rung: Candidate | None = None  # chosen while watching (predicted miss)
    images: list[bytes] = field(default_factory=list)


class JobRunner:
    def __init__(
        self,
        *,
        catalogs: CatalogStore,
        database: Database,
        state: LiveBackendState,
        client_for: Callable[[Backend], ComfyUIClient],
        clock: Clock,
        templates: TemplateRegistry,
        outputs: OutputStore,
        metrics: RouterMetrics | None = None,
        max_workers: int = 16,
        quotas: QuotaGate | None = None,
        writes: DurableWriter | None = None,
        stall_min_s: float = 30.0,
    ) -> None:
        self.metrics = metrics
        self.quotas = quotas  # running attempts per backend and spend per day (router/limits)
        # Job and attempt rows go through `writes`: spooled to local disk while the database is down.
        self.writes = writes or DurableWriter(database)
        self.stall_min_s = stall_min_s
        self.catalogs = catalogs
        self.db = database
        self.state = state
        self.client_for = client_for
        self.clock = clock
        self.templates = templates
        self.outputs = outputs
        self.identity = runner_identity()
        self._controls: dict[str, RunControl] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="job")

    # --- entry points -----------------------------------------------------------------------

    def control(self, job_id: str) -> RunControl | None:
        with self._lock:
            return self._controls.get(job_id)

    def submit(self, spec: JobSpec) -> Future[None]:
        control = self._register(spec.job_id)
        return self._pool.submit(self._run_guarded, spec, control)

    def run(self, spec: JobSpec) -> None:
        self._run_guarded(spec, self._register(spec.job_id))

    def cancel(self, job_id: str) -> bool:
        control = self.control(job_id)
        if control is None:
            return False
        control.cancelled.set()
        execution = control.execution
        if execution is not None:
            try:
                execution.cancel()
            except Exception as exc:  # the backend may be gone; the runner still ends the job
                log.warning("interrupting job %s on ComfyUI failed: %s", job_id, exc)
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def reattach_orphans(
        self, sleep: Callable[[float], None] = time.sleep, max_wait_s: float = 1800.0
    ) -> int:
        """Claim the prompts a dead predecessor left running and follow each in the background."""
        orphans = claim_orphans(self.db, self.identity)
        catalog = self.catalogs.current
        for attempt in orphans:
            self._pool.submit(
                follow,
                self.db,
                attempt,
                catalog,
                self.client_for,
                self.clock,
                self.outputs,
                sleep,
                max_wait_s,
            )
        if orphans:
            log.warning(
                "re-attached to %d attempt(s) left running by a previous router process", len(orphans)
            )
        return len(orphans)

    def _register(self, job_id: str) -> RunControl:
        control = RunControl()
        with self._lock:
            self._controls[job_id] = control
        return control

    def _run_guarded(self, spec: JobSpec, control: RunControl) -> None:
        try:
            self._run(spec, control)
        except Exception as exc:  # a bug here must still leave the job in a terminal status
            log.exception("job %s failed in the runner", spec.job_id)
            self._finish(spec.job_id, "failed", urgency=spec.urgency, error=f"internal error: {exc}")
        finally:
            if spec.on_done is not None:
                spec.on_done()
            control.done.set()
            with self._lock:
                self._controls.pop(spec.job_id, None)

    # --- the loop over rungs ----------------------------------------------------------------

    def _run(self, spec: JobSpec, control: RunControl) -> None:
        catalog = self.catalogs.current
        t0 = self.clock.monotonic()
        deadline_at, hard_stop_at = degrade.deadline_window(t0, spec.need.deadline_s)
        self.writes.update_job(spec.job_id, status="running")
        rung: Candidate | None = spec.first
        tried: set[tuple[str, str, str]] = set()
        cost_usd = 0.0
        last_error = "no rung could run"
        for attempt_no in range(1, MAX_ATTEMPTS + 1):
            if rung is None or control.cancelled.is_set():
                break
            with self.quotas.backend_slot(rung.view.backend.id) if self.quotas else nullcontext():
                result, attempt_cost = self._attempt(
                    catalog, spec, control, rung, attempt_no, deadline_at, hard_stop_at, tried
                )
            self._spent(spec, rung, result.outcome, attempt_cost)
            cost_usd += attempt_cost
            tried.add(rung.key)
            if result.outcome in ("ok", "degraded"):
                self._succeed(spec, rung, result, cost_usd, deadline_at)
                return
            if result.outcome == "cancelled" or control.cancelled.is_set():
                break
            where = f"{rung.model.id}/{rung.tier} on {rung.view.backend.id}"
            last_error = f"attempt {attempt_no} ({where}): {result.error}"
            stop = degrade.past_hard_stop(self.clock.monotonic(), hard_stop_at)
            if stop is not None:
                last_error = f"{last_error}; {stop}"
                break
            rung = result.next_rung or self._reselect(catalog, spec, tried, deadline_at)
        if control.cancelled.is_set():
            self._finish(
                spec.job_id,
                "cancelled",
                urgency=spec.urgency,
                error="cancelled by the caller",
                cost_usd=cost_usd,
            )
        else:
            self._finish(
                spec.job_id,
                "failed",
                urgency=spec.urgency,
                error=last_error,
                cost_usd=cost_usd,
                deadline_met=False,
            )

    def _reselect(
        self, catalog: Catalog, spec: JobSpec, tried: set[tuple[str, str, str]], deadline_at: float
    ) -> Candidate | None:
        need = degrade.reselect_need(spec.need, tried, deadline_at - self.clock.monotonic())
        if need is None:
            return None
        return select(catalog, need, self.state.snapshot(catalog), spec.urgency).chosen

    # --- one attempt ------------------------------------------------------------------------

    def _attempt(
        self,
        catalog: Catalog,
        spec: JobSpec,
        control: RunControl,
        rung: Candidate,
        attempt_no: int,
        deadline_at: float,
        hard_stop_at: float,
        tried: set[tuple[str, str, str]],
    ) -> tuple[AttemptResult, float]:
        backend = rung.view.backend
        client = self.client_for(backend)
        degraded = rung.key != spec.first.key
        try:
            graph = render_graph(self.templates, client, rung, spec)
        except Exception as exc:  # a template or upload problem ends this rung, not the job
            return self._log_unsubmitted(
                spec, rung, attempt_no, degraded, f"cannot prepare the workflow: {exc}"
            ), 0.0
        started_at = self.clock.now()
        budget_s = deadline_at - self.clock.monotonic()
        watch = self._watch_for(catalog, spec, rung, budget_s)
        prompt_id = str(uuid.uuid4())
        row = replace(self._attempt_row(spec, rung, attempt_no, started_at, degraded), prompt_id=prompt_id)
        self.writes.start_attempt(row)
        holder: dict[str, Candidate | None] = {"next": None}

        def on_progress(p: Progress) -> bool:
            if control.cancelled.is_set():
                return True
            if p.event != "progress" or not watch.observe(p.node, p.value, p.max, p.elapsed_s):
                return False
            return self._worth_degrading(catalog, spec, rung, watch, tried, deadline_at, holder, prompt_id)

        # Counted in the backend's queue from now on, so that requests deciding meanwhile see it.
        busy_s = rung.estimate.load_s + rung.estimate.run_s
        self.state.record_submitted(backend.id, prompt_id, rung.model.id, busy_s, front=spec.front)
        try:
            execution = client.start(graph, prompt_id=prompt_id, front=spec.front)
            control.execution = execution
            try:
                outcome, hung = self._wait(execution, client, rung, hard_stop_at, on_progress)
                if isinstance(outcome, TimedOut) and (hung is None or hung.answers):
                    _cancel_quietly(execution)
            finally:
                control.execution = None
                execution.close()
                self.state.record_finished(backend.id, prompt_id)
            result = self._classify(outcome, rung, watch, holder["next"], control, degraded, hung)
            if result.outcome in ("ok", "degraded") and isinstance(outcome, Succeeded):
                result = self._fetch_images(client, rung, outcome, result)
            self._learn(rung, outcome, watch)
        except Exception as exc:  # a bug must not leave the attempt row `running` for ever
            self._close_attempt(
                spec, rung, attempt_no, AttemptResult("backend_error", f"internal error: {exc}")
            )
            raise
        gpu_s = _gpu_seconds(outcome)
        cost = backend.usd_per_hour * gpu_s / 3600.0 if gpu_s is not None else 0.0
        self._close_attempt(spec, rung, attempt_no, result, actual_s=_duration(outcome), cost_usd=cost)
        return result, cost

    def _wait(
        self,
        execution: Any,
        client: ComfyUIClient,
        rung: Candidate,
        hard_stop_at: float,
        on_progress: Callable[[Progress], bool],
    ) -> tuple[Outcome, Hung | None]:
        """Wait for the prompt until the hard stop, but give up on a backend that has hung.

        Silence is measured in `stall_s` windows (twice the rung's whole estimate, at least
        `stall_min_s`). Once the prompt runs, a window without any event of it means a hung
        backend (socket open, nothing moving). Before it runs the prompt may just be waiting its
        turn, so a silent window only leads to asking the backend for its queue: no answer means
        hung, an answer means keep waiting."""
        stall_s = max(self.stall_min_s, 2.0 * rung.estimate.total_s)
        last_event = [self.clock.monotonic()]

        def tracked(p: Progress) -> bool:
            last_event[0] = self.clock.monotonic()
            return on_progress(p)

        while True:
            now = self.clock.monotonic()
            until = min(hard_stop_at, last_event[0] + stall_s)
            outcome: Outcome = execution.wait(timeout_s=max(0.1, until - now), on_progress=tracked)
            if not isinstance(outcome, TimedOut):
                return outcome, None
            now = self.clock.monotonic()
            silent_s = now - last_event[0]
            if now >= hard_stop_at - 0.05:
                return outcome, None
            if silent_s < stall_s:
                continue
            if execution.started:
                return outcome, Hung(
                    f"no progress for {silent_s:.1f} s with the prompt running", answers=True
                )
            try:
                client.queue()
            except ComfyUIError as exc:
                return outcome, Hung(f"no event for {silent_s:.1f} s and /queue does not answer: {exc}")
            last_event[0] = now  # it answers: the prompt waits its turn

    def _fetch_images(
        self, client: ComfyUIClient, rung: Candidate, outcome: Succeeded, result: AttemptResult
    ) -> AttemptResult:
        try:
            result.images = [client.fetch_image(ref) for ref in outcome.images]
        except ComfyUIError as exc:  # it ran, but its images cannot be read: not a success
            reason = f"finished but its images could not be fetched: {exc}"
            self.state.record_failure(rung.view.backend.id, reason)
            return AttemptResult("backend_error", reason)
        return result

    def _close_attempt(
        self,
        spec: JobSpec,
        rung: Candidate,
        attempt_no: int,
        result: AttemptResult,
        *,
        actual_s: float | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        """The attempt's row gets its end, and the attempts counter its outcome (one per row)."""
        ok = result.outcome in ("ok", "degraded")
        if self.metrics is not None:
            self.metrics.attempts.labels(rung.model.id, rung.view.backend.id, result.outcome).inc()
        self.writes.finish_attempt(
            spec.job_id,
            attempt_no,
            finished_at=self.clock.now(),
            actual_s=actual_s,
            outcome=result.outcome,
            error=result.error,
            cost_usd=round(cost_usd, 8),
            hosted_usd=(rung.model.hosted_usd_per_image or 0.0) * spec.need.batch_size if ok else None,
        )

    def _watch_for(self, catalog: Catalog, spec: JobSpec, rung: Candidate, budget_s: float) -> StepWatch:
        return degrade.watch_for(catalog, spec.need, rung, budget_s)

    def _worth_degrading(
        self,
        catalog: Catalog,
        spec: JobSpec,
        rung: Candidate,
        watch: StepWatch,
        tried: set[tuple[str, str, str]],
        deadline_at: float,
        holder: dict[str, Candidate | None],
        prompt_id: str,
    ) -> bool:
        """A predicted miss: interrupt only if a rung not yet tried can finish in the time left
        (on backends seen without this prompt: it is the one that would be interrupted)."""
        if watch.slowness is not None:
            self.state.record_slowness(rung.view.backend.id, watch.slowness, smooth=False)
        need = degrade.alternative_need(spec.need, tried, rung.key, deadline_at - self.clock.monotonic())
        if need is None:
            return False
        views = self.state.snapshot(catalog, without=prompt_id)
        chosen = degrade.faster_rung(select(catalog, need, views, spec.urgency))
        if chosen is None:
            return False  # nothing faster fits: finishing late beats not finishing
        holder["next"] = chosen
        log.info(
            "job %s: %s/%s predicted to finish at %.1f s > budget %.1f s; degrading to %s/%s",
            spec.job_id,
            rung.model.id,
            rung.tier,
            watch.predicted_finish_s or 0.0,
            watch.budget_s,
            chosen.model.id,
            chosen.tier,
        )
        return True

    def _classify(
        self,
        outcome: Outcome,
        rung: Candidate,
        watch: StepWatch,
        next_rung: Candidate | None,
        control: RunControl,
        degraded: bool,
        hung: Hung | None = None,
    ) -> AttemptResult:
        if isinstance(outcome, TimedOut) and hung is not None:
            reason = f"backend hung: {hung.reason}"
            self.state.record_failure(rung.view.backend.id, reason)
            return AttemptResult("timeout" if hung.answers else "backend_error", reason)
        if isinstance(outcome, Succeeded):
            return AttemptResult("degraded" if degraded else "ok", None)
        if isinstance(outcome, Interrupted):
            if control.cancelled.is_set():
                return AttemptResult("cancelled", "cancelled by the caller")
            if next_rung is not None:
                finish = watch.predicted_finish_s or 0.0
                return AttemptResult(
                    "timeout",
                    f"interrupted early: predicted to finish at {finish:.1f} s, over the "
                    f"{watch.budget_s:.1f} s budget (observed {watch.step_s or 0:.3f} s/step "
                    f"vs {watch.expected_step_s:.3f} expected)",
                    next_rung,
                )
            return AttemptResult("backend_error", "interrupted on the backend by someone else")
        if isinstance(outcome, OutOfMemory):
            self.state.record_oom(rung.view.backend.id, rung.vram_needed_mb)
            return AttemptResult("oom", f"{outcome.exception_type}: {outcome.exception_message}"[:2000])
        if isinstance(outcome, ExecutionFailed):
            return AttemptResult(
                "backend_error", f"{outcome.exception_type}: {outcome.exception_message}"[:2000]
            )
        if isinstance(outcome, Invalid):
            return AttemptResult("invalid", "; ".join(outcome.problems())[:2000])
        if isinstance(outcome, TimedOut):
            return AttemptResult(
                "timeout", f"no result within {outcome.timeout_s:.1f} s; cancelled on the backend"
            )
        if isinstance(outcome, ConnectionRefused | HttpError | SocketDropped):
            reason = _failure_text(outcome)
            self.state.record_failure(rung.view.backend.id, reason)
            return AttemptResult("backend_error", reason)
        return AttemptResult("backend_error", f"unexpected outcome {outcome.kind}")

    def _learn(self, rung: Candidate, outcome: Outcome, watch: StepWatch) -> None:
        backend_id = rung.view.backend.id
        if isinstance(outcome, Succeeded | Interrupted):
            self.state.record_run(backend_id, rung.model.id, _gpu_seconds(outcome))
        if watch.slowness is not None and isinstance(outcome, Succeeded):
            self.state.record_slowness(backend_id, watch.slowness)

    # --- records ----------------------------------------------------------------------------

    def _attempt_row(
        self, spec: JobSpec, rung: Candidate, attempt_no: int, started_at: Any, degraded: bool
    ) -> AttemptStart:
        e = rung.estimate
        return AttemptStart(
            job_id=spec.job_id,
            attempt=attempt_no,
            prompt_id="",
            started_at=started_at,
            backend=rung.view.backend.id,
            model_name=rung.model.id,
            tier=rung.tier,
            purpose=spec.need.purpose,
            steps=rung.steps,
            width=rung.width,
            height=rung.height,
            estimated_s=round(e.total_s, 4),
            queue_s=round(e.queue_s, 4),
            load_s=round(e.load_s, 4),
            estimated_cost_usd=round(rung.estimated_cost_usd, 8),
            quality_score=rung.quality,
            selection_reason=f"{rung.model.id}/{rung.tier} on {rung.view.backend.id}"
            + (" (degraded)" if degraded else ""),
            degraded=degraded,
            runner=self.identity,
        )

    def _log_unsubmitted(
        self, spec: JobSpec, rung: Candidate, attempt_no: int, degraded: bool, error: str
    ) -> AttemptResult:
        now = self.clock.now()
        self.writes.start_attempt(self._attempt_row(spec, rung, attempt_no, now, degraded))
        result = AttemptResult("invalid", error)
        self._close_attempt(spec, rung, attempt_no, result, actual_s=0.0)
        return result

    def _succeed(
        self, spec: JobSpec, rung: Candidate, result: AttemptResult, cost_usd: float, deadline_at: float
    ) -> None:
        outputs = []
        for n, data in enumerate(result.images):
            self.outputs.save(spec.job_id, n, data)
            item: dict[str, Any] = {"index": n, "url": f"/jobs/{spec.job_id}/outputs/{n}", "bytes": len(data)}
            if spec.output == "base64":
                item["base64"] = base64.b64encode(data).decode()
            outputs.append(item)
        self._finish(
            spec.job_id,
            "succeeded",
            urgency=spec.urgency,
            cost_usd=cost_usd,
            deadline_met=self.clock.monotonic() <= deadline_at,
            outputs=outputs,
            model_name=rung.model.id,
            tier=rung.tier,
            backend=rung.view.backend.id,
            degraded=rung.key != spec.first.key,
        )

    def _spent(self, spec: JobSpec, rung: Candidate, outcome: str, gpu_usd: float) -> None:
        """Quota hook: an attempt's GPU cost (and hosted-equivalent price when it produced the
        image) counts against its client's and the global daily spend caps."""
        if self.quotas is None:
            return
        ok = outcome in ("ok", "degraded")
        hosted_usd = (rung.model.hosted_usd_per_image or 0.0) * spec.need.batch_size if ok else 0.0
        try:
            self.quotas.spent(spec.client_id, gpu_usd, hosted_usd)
        except Exception:  # a lost spend record must not fail the job; the log says so
            log.exception("could not record the spend of job %s", spec.job_id)

    def _finish(self, job_id: str, status: str, *, urgency: str = "", **values: Any) -> None:
        values.setdefault("deadline_met", False if status != "succeeded" else None)
        self.writes.update_job(job_id, status=status, finished_at=self.clock.now(), **values)
        if self.metrics is not None:
            self.metrics.jobs.labels(status, urgency).inc()
            if values.get("degraded"):
                self.metrics.degraded.inc()
            if values.get("deadline_met") is False:
                self.metrics.deadline_misses.labels(urgency).inc()


def _duration(outcome: Outcome) -> float | None:
    value = getattr(outcome, "duration_s", None)
    return round(float(value), 4) if value is not None else None


def _gpu_seconds(outcome: Outcome) -> float | None:
    """Seconds the prompt held the GPU: from ComfyUI starting it to the outcome (queue excluded)."""
    duration = getattr(outcome, "duration_s", None)
    if duration is None:
        return None
    started = getattr(outcome, "started_at_s", None)
    return max(0.0, float(duration) - float(started)) if started is not None else float(duration)


def _failure_text(outcome: ConnectionRefused | HttpError | SocketDropped) -> str:
    if isinstance(outcome, ConnectionRefused):
        return f"connection refused at {outcome.url}: {outcome.message}"
    if isinstance(outcome, HttpError):
        return f"HTTP {outcome.status} from {outcome.url}: {outcome.body_excerpt[:200]}"
    return f"socket dropped after {outcome.duration_s:.1f} s: {outcome.reason}"


def _cancel_quietly(execution: Any) -> None:
    """Stop a timed-out prompt; a backend too far gone to answer is already being given up on."""
    try:
        execution.cancel()
    except ComfyUIError as exc:
        log.warning("cancelling %s failed: %s", execution.prompt_id, exc)
