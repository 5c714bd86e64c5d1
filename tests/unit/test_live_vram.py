"""LiveBackendState: what ComfyUI's /system_stats says about cached models reaches the selector.

ComfyUI keeps models cached on the card after a run and unloads them to load another one, so
torch's allocated memory (torch_vram_total - torch_vram_free) is available to the next model even
though it is not free. Before this was read, a card holding several cached models looked full.
"""

from __future__ import annotations

from typing import Any

import pytest

from router.backends.live import LiveBackendState
from router.catalog import Catalog
from router.catalog.schema import Backend
from router.comfyui.protocol import DeviceStats, QueueState, SystemStats
from router.selection import Need, select

MIB = 1024**2


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> Any:  # not read by LiveBackendState's snapshots
        raise AssertionError("unused")


class Card:
    """A StatsClient answering one device reading."""

    def __init__(self, device: DeviceStats) -> None:
        self.device = device

    def system_stats(self) -> SystemStats:
        return SystemStats("0.8.0", None, 64 * 1024 * MIB, 32 * 1024 * MIB, (self.device,))

    def queue(self) -> QueueState:
        return QueueState(running=(), pending=())

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return {}


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
    card = Card(device)
    return LiveBackendState(lambda _b: card, Clock())


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
    backend: Backend = one.backends[0]
    state = state_of(one, cuda(81_920, 3_000, 70_000, 1_000))
    state.snapshot(one)
    state.record_oom(backend.id, vram_needed_mb=30_000)
    (view,) = state.snapshot(one)  # within the TTL: the OOM is what the router knows
    assert (view.vram_reclaimable_mb, view.vram_free_mb) == (0, 3_000)
    need = Need("text-to-image", 600.0, model="flux1-dev-fp16")
    assert select(one, need, [view]).chosen is None
