"""The simulated fleet of trace replay: one GPU per enabled catalog backend, each with VRAM
residency (router.simulator.gpu.GpuMemory: least recently used eviction, torch's OOM), a FIFO
queue like ComfyUI's and true durations.

True durations follow the simulator's time model (router.simulator.timing): the catalog's reference
time model at the backend's declared speed factor, times `slowdown`, times lognormal noise (one
draw for the run, one for the load, from router.replay.noise). A run is: the model's `load_s` when
it is not resident, half of the fixed part (text encoding), the sampler steps, the other half
(decoding, saving). `vram_mb` forces every card smaller (the low-VRAM scenario); the router learns
it from /system_stats as it would from a real card, while the catalog still declares the old size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from router.catalog.schema import Backend, Catalog, Model, TierName
from router.comfyui.protocol import DeviceStats, QueueState, SystemStats
from router.replay.engine import EventLoop
from router.replay.noise import noise_factors
from router.selection.estimate import pixel_scale
from router.selection.types import BackendView
from router.simulator.gpu import CUDA_CONTEXT_MB, GpuMemory, OutOfMemoryError
from router.simulator.timing import NOISE_SIGMA

MB = 1024 * 1024


@dataclass(frozen=True)
class Timing:
    """True seconds of one run on one GPU, from the moment it starts there."""

    load_s: float
    pre_s: float
    step_s: float
    steps: int
    post_s: float

    @property
    def total_s(self) -> float:
        return self.load_s + self.pre_s + self.step_s * self.steps + self.post_s

    def step_done_s(self, step: int) -> float:
        """Seconds after the start at which sampler step `step` (1-based) completes."""
        return self.load_s + self.pre_s + self.step_s * step


class WorkListener(Protocol):
    def on_start(self, work: Work, t: float) -> None: ...

    def on_end(self, work: Work, t: float, outcome: str) -> None:
        """outcome: ok | oom | interrupted (stopped while running) | removed (taken off the queue)."""


@dataclass(eq=False)
class Work:
    """One prompt submitted to one GPU (an attempt)."""

    prompt_id: str
    request_index: int
    attempt: int
    model: Model
    tier: TierName
    steps: int
    width: int
    height: int
    batch_size: int
    backend_id: str
    submitted_at: float
    estimated_busy_s: float  # the catalog's load + run estimate (what a baseline can know)
    listener: WorkListener
    front: bool = False  # sent to the queue's front (ComfyUI's `front`: newest front prompt first)
    started_at: float | None = None
    ended_at: float | None = None
    timing: Timing | None = None
    loaded: bool = False  # the model was not resident: a swap
    outcome: str | None = None
    error: str | None = None

    @property
    def gpu_s(self) -> float:
        """Seconds the prompt held the GPU (queue excluded)."""
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.ended_at - self.started_at)


class SimGpu:
    def __init__(self, backend: Backend, total_mb: int) -> None:
        self.backend = backend
        self.memory = GpuMemory(total_mb)
        self.pending: deque[Work] = deque()
        self.running: Work | None = None


def true_timing(
    model: Model,
    steps: int,
    width: int,
    height: int,
    batch_size: int,
    backend: Backend,
    slowdown: float,
    noise: tuple[float, float],
    resident: bool,
) -> Timing:
    run_noise, load_noise = noise
    tm = model.time
    scale = pixel_scale(tm, width, height) * batch_size / backend.speed_factor * slowdown * run_noise
    half_base = 0.5 * tm.base_s * scale
    load = 0.0 if resident else model.load_s * slowdown * load_noise
    return Timing(load, half_base, tm.per_step_s * scale, steps, half_base)


class Fleet:
    def __init__(
        self,
        catalog: Catalog,
        loop: EventLoop,
        *,
        seed: int = 0,
        slowdown: float = 1.0,
        vram_mb: int | None = None,
        noise_sigma: float = NOISE_SIGMA,
    ) -> None:
        if slowdown <= 0:
            raise ValueError(f"--slowdown must be > 0, got {slowdown}")
        if vram_mb is not None and vram_mb <= CUDA_CONTEXT_MB:
            raise ValueError(f"--vram-mb must be more than {CUDA_CONTEXT_MB} MiB, got {vram_mb}")
        self.catalog = catalog
        self.loop = loop
        self.seed = seed
        self.slowdown = slowdown
        self.noise_sigma = noise_sigma
        self.gpus = {
            b.id: SimGpu(b, vram_mb if vram_mb is not None else b.vram_mb)
            for b in catalog.backends
            if b.enabled
        }
        if not self.gpus:
            raise ValueError("the catalog has no enabled backend: nothing to replay on")
        self.swaps = 0
        self.ooms = 0

    # --- what happens ---------------------------------------------------------------------------

    def timing(self, work: Work, resident: bool) -> Timing:
        return self.timing_of(
            work.request_index,
            work.attempt,
            work.model,
            work.tier,
            work.steps,
            work.width,
            work.height,
            work.batch_size,
            work.backend_id,
            resident,
        )

    def timing_of(
        self,
        request_index: int,
        attempt: int,
        model: Model,
        tier: TierName,
        steps: int,
        width: int,
        height: int,
        batch_size: int,
        backend_id: str,
        resident: bool,
    ) -> Timing:
        noise = noise_factors(self.seed, request_index, attempt, model.id, tier, self.noise_sigma)
        backend = self.gpus[backend_id].backend
        return true_timing(model, steps, width, height, batch_size, backend, self.slowdown, noise, resident)

    def submit(self, work: Work) -> None:
        gpu = self.gpus[work.backend_id]
        if work.front:
            gpu.pending.appendleft(work)  # ComfyUI numbers a front prompt -n: it runs next
        else:
            gpu.pending.append(work)
        self._start_next(gpu)

    def interrupt(self, work: Work) -> None:
        """Stop a running prompt now (ComfyUI's /interrupt) or take a pending one off the queue."""
        if work.outcome is not None:
            return
        gpu = self.gpus[work.backend_id]
        if gpu.running is work:
            gpu.running = None
            self._end(work, "interrupted")
            self._start_next(gpu)
        else:
            gpu.pending.remove(work)
            self._end(work, "removed")

    def _start_next(self, gpu: SimGpu) -> None:
        while gpu.running is None and gpu.pending:
            work = gpu.pending.popleft()
            now = self.loop.now
            work.started_at = now
            try:
                placement = gpu.memory.place(work.model.id, work.model.vram_mb)
            except OutOfMemoryError as exc:
                self.ooms += 1
                work.error = f"{OutOfMemoryError.exception_type}: {exc}"
                self._end(work, "oom")
                continue
            if not placement.was_loaded:
                self.swaps += 1
                work.loaded = True
            work.timing = self.timing(work, resident=placement.was_loaded)
            gpu.running = work
            self.loop.at(now + work.timing.total_s, lambda w=work: self._complete(w))  # type: ignore[misc]
            work.listener.on_start(work, now)

    def _complete(self, work: Work) -> None:
        if work.outcome is not None:  # interrupted before it could finish
            return
        gpu = self.gpus[work.backend_id]
        gpu.running = None
        self._end(work, "ok")
        self._start_next(gpu)

    def _end(self, work: Work, outcome: str) -> None:
        work.outcome = outcome
        work.ended_at = self.loop.now
        work.listener.on_end(work, self.loop.now, outcome)

    # --- what can be known ------------------------------------------------------------------------

    def estimated_views(self) -> list[BackendView]:
        """What a simple dispatcher knows: queued work by the catalog's estimates and the model
        ComfyUI holds (most recently used). No VRAM reading: baselines trust the catalog."""
        now = self.loop.now
        views = []
        for gpu in self.gpus.values():
            queue_s = sum(w.estimated_busy_s for w in gpu.pending)
            running = gpu.running
            if running is not None and running.started_at is not None:
                queue_s += max(0.0, running.started_at + running.estimated_busy_s - now)
            loaded = list(gpu.memory.loaded)
            views.append(
                BackendView(gpu.backend, loaded_model=loaded[-1] if loaded else None, queue_s=queue_s)
            )
        return views

    def projected(self, backend_id: str, front: bool = False) -> tuple[float, GpuMemory]:
        """Clairvoyance for the oracle: when the GPU's current queue will be done and what its VRAM
        will then hold (the true durations of everything queued are already determined). With
        `front`, for a prompt sent to the queue's front: only the running prompt is ahead of it."""
        gpu = self.gpus[backend_id]
        memory = GpuMemory(gpu.memory.total_mb, gpu.memory.context_mb)
        for model_id, mb in gpu.memory.loaded.items():  # in LRU order: placing replays it
            memory.place(model_id, mb)
        t = self.loop.now
        running = gpu.running
        if running is not None and running.started_at is not None and running.timing is not None:
            t = running.started_at + running.timing.total_s
        for work in () if front else gpu.pending:
            try:
                placement = memory.place(work.model.id, work.model.vram_mb)
            except OutOfMemoryError:
                continue  # it will fail at once
            t += self.timing(work, resident=placement.was_loaded).total_s
        return t, memory

    def fits(self, backend_id: str, model: Model) -> bool:
        """Whether the model alone fits the card (GpuMemory.place succeeds on an empty card)."""
        memory = self.gpus[backend_id].memory
        return model.vram_mb <= memory.total_mb - memory.context_mb

    def stats_client(self, backend_id: str) -> FleetStats:
        return FleetStats(self.gpus[backend_id])

    def works(self) -> Iterator[Work]:
        for gpu in self.gpus.values():
            if gpu.running is not None:
                yield gpu.running
            yield from gpu.pending


class FleetStats:
    """ComfyUI's /system_stats and /queue of one simulated GPU, for the router's LiveBackendState."""

    def __init__(self, gpu: SimGpu) -> None:
        self._gpu = gpu

    def system_stats(self) -> SystemStats:
        mem = self._gpu.memory
        device = DeviceStats(
            name=f"{self._gpu.backend.gpu_name} (simulated, trace replay)",
            type="cuda",
            index=0,
            vram_total_bytes=mem.total_mb * MB,
            vram_free_bytes=mem.free_mb * MB,
            torch_vram_total_bytes=(mem.used_mb - mem.context_mb) * MB,
            torch_vram_free_bytes=0,
        )
        return SystemStats(None, None, 0, 0, (device,))

    def queue(self) -> QueueState:
        running = self._gpu.running
        return QueueState(
            running=(running.prompt_id,) if running is not None else (),
            pending=tuple(w.prompt_id for w in self._gpu.pending),
        )

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return {}
