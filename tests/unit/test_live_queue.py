"""LiveBackendState prices the queue from what this router submitted, and knows what is cached.

ComfyUI keeps models cached on the card after a run and unloads them to load another one, so
torch's allocated memory (torch_vram_total - torch_vram_free) is available to the next model even
though it is not free; before it was read, a card holding several cached models looked full.

A fake StatsClient stands for ComfyUI's /system_stats and /queue; a settable clock drives the TTL.
"""

from __future__ import annotations

from typing import Any

import pytest

from router.backends.live import LiveBackendState
from router.catalog import Catalog
from router.comfyui.protocol import DeviceStats, QueueState, SystemStats
from router.selection import Need, select
from router.selection.estimate import estimate

MIB = 1024**2


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> Any:
        raise AssertionError("unused")


class Comfy:
    def __init__(
        self, cached_mb: int = 30_000, total_mb: int = 81_920, device: DeviceStats | None = None
    ) -> None:
        self.running: tuple[str, ...] = ()
        self.pending: tuple[str, ...] = ()
        self.cached_mb = cached_mb  # torch's allocated memory: models kept loaded
        self.total_mb = total_mb
        self.device = device  # answered as it is, when given

    def system_stats(self) -> SystemStats:
        if self.device is not None:
            return SystemStats("0.8.0", None, 0, 0, (self.device,))
        free_mb = self.total_mb - 1_000 - self.cached_mb
        device = DeviceStats("cuda:0", "cuda", 0, self.total_mb * MIB, free_mb * MIB, self.cached_mb * MIB, 0)
        return SystemStats("0.8.0", None, 0, 0, (device,))

    def queue(self) -> QueueState:
        return QueueState(running=self.running, pending=self.pending)

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return {}


@pytest.fixture
def one(catalog: Catalog) -> Catalog:
    return catalog.model_copy(update={"backends": (catalog.backends[0],)})


def state_for(comfy: Comfy, clock: Clock) -> LiveBackendState:
    return LiveBackendState(lambda _b: comfy, clock, ttl_s=2.0)


def test_prompts_submitted_within_one_ttl_see_each_other(one: Catalog) -> None:
    """A burst decides on one /queue read: each submission must count for the next decision."""
    comfy, clock = Comfy(), Clock()
    state = state_for(comfy, clock)
    (empty,) = state.snapshot(one)
    assert empty.queue_s == 0.0
    state.record_submitted("a100", "p1", "flux1-dev-fp16", 20.0)
    state.record_submitted("a100", "p2", "sdxl-base", 5.0)
    (view,) = state.snapshot(one)  # same instant: no re-read
    assert view.queue_s == pytest.approx(25.0)
    assert view.loaded_model == "sdxl-base"  # the last queued prompt's model is loaded then


def test_the_running_prompt_counts_what_is_left_of_it(one: Catalog) -> None:
    comfy, clock = Comfy(), Clock()
    state = state_for(comfy, clock)
    state.record_submitted("a100", "p1", "flux1-dev-fp16", 20.0)
    comfy.running = ("p1",)
    clock.t += 2.0
    state.snapshot(one)  # read: p1 seen running from now
    clock.t += 1.9  # within the TTL
    (view,) = state.snapshot(one)
    assert view.queue_s == pytest.approx(20.0 - 1.9)


def test_front_prompts_wait_for_the_running_one_only(one: Catalog) -> None:
    comfy, clock = Comfy(), Clock()
    state = state_for(comfy, clock)
    state.record_submitted("a100", "run", "flux1-dev-fp16", 20.0)
    state.record_submitted("a100", "q1", "sdxl-base", 6.0)
    state.record_submitted("a100", "q2", "qwen-image-fp8", 30.0)
    comfy.running, comfy.pending = ("run",), ("q1", "q2")
    clock.t += 2.0
    (view,) = state.snapshot(one)
    assert view.queue_s == pytest.approx(56.0)
    assert view.front_queue_s == pytest.approx(20.0)
    assert view.front_loaded_model == "flux1-dev-fp16"
    need = Need("portrait", 60.0)
    flux = one.model("flux1-dev-fp16")
    assert flux is not None
    back = estimate(flux, view, 28, 1024, 1024, 1)
    front = estimate(flux, view, 28, 1024, 1024, 1, front=True)
    assert (back.queue_s, front.queue_s) == (pytest.approx(56.0), pytest.approx(20.0))
    assert select(one, need, [view]).chosen is not None


def test_other_clients_prompts_are_priced_at_the_mean_run(one: Catalog) -> None:
    comfy, clock = Comfy(), Clock()
    comfy.pending = ("theirs-1", "theirs-2")
    state = state_for(comfy, clock)
    state.record_run("a100", "sdxl-base", 8.0)  # mean_run_s: 0.8 x 10 + 0.2 x 8
    (view,) = state.snapshot(one)
    assert view.queue_s == pytest.approx(2 * 9.6)


def test_finished_prompts_are_forgotten_at_the_next_read(one: Catalog) -> None:
    comfy, clock = Comfy(), Clock()
    state = state_for(comfy, clock)
    state.record_submitted("a100", "gone", "sdxl-base", 6.0)  # finished without record_finished
    clock.t += 2.0
    (view,) = state.snapshot(one)  # /queue no longer lists it, and it was submitted before the read
    assert view.queue_s == 0.0
    state.record_submitted("a100", "new", "sdxl-base", 6.0)
    state.record_finished("a100", "new")
    (view,) = state.snapshot(one)
    assert view.queue_s == 0.0


def test_a_prompt_about_to_be_replaced_is_left_out(one: Catalog) -> None:
    comfy, clock = Comfy(), Clock()
    state = state_for(comfy, clock)
    state.record_submitted("a100", "mine", "flux1-dev-fp16", 20.0)
    comfy.running = ("mine",)
    clock.t += 2.0
    (with_it,) = state.snapshot(one)
    (without,) = state.snapshot(one, without="mine")
    assert with_it.queue_s == pytest.approx(20.0) and without.queue_s == 0.0


def test_models_that_fit_together_stay_cached(one: Catalog) -> None:
    """ComfyUI keeps the most recently used models while they fit: no load for any of them."""
    comfy, clock = Comfy(), Clock()
    state = state_for(comfy, clock)
    for model_id in ("flux1-dev-fp16", "sdxl-base", "sd15"):
        state.record_run("a100", model_id, 5.0)
    (view,) = state.snapshot(one)
    assert view.resident_models == {"flux1-dev-fp16", "sdxl-base", "sd15"}
    sdxl = one.model("sdxl-base")
    assert sdxl is not None
    assert estimate(sdxl, view, 30, 1024, 1024, 1).load_s == 0.0
    state.record_oom("a100", 30_000)  # after an OOM nothing is believed cached
    (view,) = state.snapshot(one)
    assert view.resident_models == frozenset()


def test_a_card_with_nothing_cached_forgets_its_history(one: Catalog) -> None:
    """ComfyUI restarted (or unloaded everything): torch holds nothing, so nothing is resident."""
    comfy, clock = Comfy(cached_mb=0), Clock()
    state = state_for(comfy, clock)
    state.record_run("a100", "sdxl-base", 5.0)
    clock.t += 2.0
    (view,) = state.snapshot(one)
    assert view.resident_models == frozenset()


def test_the_oldest_models_fall_out_when_the_card_is_full(catalog: Catalog) -> None:
    small = catalog.model_copy(update={"backends": (catalog.backends[1],)})  # the 24 GB card
    comfy, clock = Comfy(cached_mb=10_000, total_mb=24_564), Clock()
    state = LiveBackendState(lambda _b: comfy, clock)
    for model_id in ("sdxl-base", "flux1-dev-fp8", "sd15"):
        state.record_run(small.backends[0].id, model_id, 5.0)
    (view,) = state.snapshot(small)
    held = {m: small.model(m).vram_mb for m in view.resident_models}  # type: ignore[union-attr]
    assert "sd15" in view.resident_models  # the newest always
    assert sum(held.values()) <= small.backends[0].vram_mb - small.vram_headroom_mb
    assert "sdxl-base" not in view.resident_models  # the oldest went first


# --- VRAM held by cached models ------------------------------------------------------------


def cuda(total_mb: int, free_mb: int, torch_total_mb: int, torch_free_mb: int) -> DeviceStats:
    return DeviceStats(
        "cuda:0 NVIDIA A100",
        "cuda",
        0,
        total_mb * MIB,
        free_mb * MIB,
        torch_total_mb * MIB,
        torch_free_mb * MIB,
    )


def state_of(catalog: Catalog, device: DeviceStats) -> LiveBackendState:
    comfy = Comfy(device=device)
    return LiveBackendState(lambda _b: comfy, Clock())


@pytest.mark.parametrize(
    ("device", "reclaimable_mb"),
    [
        pytest.param(cuda(81_920, 3_000, 70_000, 1_000), 69_000, id="cached-models-count"),
        pytest.param(cuda(81_920, 80_000, 0, 0), 0, id="empty-card"),
        pytest.param(
            DeviceStats(
                "cpu", "cpu", None, 64 * 1024 * MIB, 32 * 1024 * MIB, 64 * 1024 * MIB, 32 * 1024 * MIB
            ),
            None,
            id="cpu-device-reports-ram-not-vram",
        ),
    ],
)
def test_reclaimable_vram_is_read_from_system_stats(
    catalog: Catalog, device: DeviceStats, reclaimable_mb: int | None
) -> None:
    views = state_of(catalog, device).snapshot(catalog)
    assert {v.vram_reclaimable_mb for v in views} == {reclaimable_mb}


def test_a_card_full_of_cached_models_still_gets_the_big_model(catalog: Catalog) -> None:
    """3 GB free, 69 GB held by cached models: FLUX fp16 fits once ComfyUI evicts them."""
    one = catalog.model_copy(update={"backends": (catalog.backends[0],)})
    state = state_of(one, cuda(81_920, 3_000, 70_000, 1_000))
    need = Need("text-to-image", 600.0, model="flux1-dev-fp16")
    chosen = select(one, need, state.snapshot(one)).chosen
    assert chosen is not None and chosen.model.id == "flux1-dev-fp16"


def test_after_an_oom_nothing_more_is_believed_reclaimable(catalog: Catalog) -> None:
    one = catalog.model_copy(update={"backends": (catalog.backends[0],)})
    backend = one.backends[0]
    state = state_of(one, cuda(81_920, 3_000, 70_000, 1_000))
    state.snapshot(one)
    state.record_oom(backend.id, vram_needed_mb=30_000)
    (view,) = state.snapshot(one)  # within the TTL: the OOM is what the router knows
    assert (view.vram_reclaimable_mb, view.vram_free_mb) == (0, 3_000)
    need = Need("text-to-image", 600.0, model="flux1-dev-fp16")
    assert select(one, need, [view]).chosen is None
