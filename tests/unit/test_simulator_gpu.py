"""The simulated GPU: presets and catalog backends, VRAM bookkeeping, torch's OOM message."""

from __future__ import annotations

import re

import pytest

from router.catalog import Catalog
from router.simulator.gpu import (
    CUDA_CONTEXT_MB,
    PRESETS,
    GpuMemory,
    OutOfMemoryError,
    format_size,
    lognormal_factor,
    resolve_gpu,
)


def test_backend_id_wins_and_none_means_first_backend(catalog: Catalog) -> None:
    spec = resolve_gpu(catalog, "rtx4090")
    assert (spec.name, spec.vram_mb, spec.speed_factor) == ("NVIDIA GeForce RTX 4090", 24564, 0.9)
    assert resolve_gpu(catalog, None).key == catalog.backends[0].id


def test_presets_and_vram_override(catalog: Catalog) -> None:
    assert resolve_gpu(catalog, "H100-80GB") == PRESETS["h100-80gb"]
    small = resolve_gpu(catalog, "a100-80gb", vram_mb=8000)
    assert small.vram_mb == 8000
    assert small.name == PRESETS["a100-80gb"].name


def test_unknown_gpu_lists_the_choices(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match=r"unknown GPU 'nope'.*a100-80gb"):
        resolve_gpu(catalog, "nope")


def test_place_evicts_least_recently_used() -> None:
    memory = GpuMemory(20_000)
    memory.place("a", 8_000)
    memory.place("b", 8_000)
    memory.place("a", 8_000)  # touch: b is now the oldest
    placement = memory.place("c", 8_000)
    assert placement.evicted == ("b",)
    assert list(memory.loaded) == ["a", "c"]
    assert memory.free_mb == 20_000 - CUDA_CONTEXT_MB - 16_000


def test_oom_when_the_model_cannot_fit_even_alone() -> None:
    memory = GpuMemory(8_000)
    memory.place("small", 4_500)
    with pytest.raises(OutOfMemoryError) as info:
        memory.place("flux", 27_000)
    message = str(info.value)
    assert message.startswith("CUDA out of memory. Tried to allocate ")
    assert re.search(
        r"Tried to allocate [\d.]+ GiB\. GPU 0 has a total capacity of 7\.81 GiB of which [\d.]+ MiB is free",
        message,
    )
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in message
    assert OutOfMemoryError.exception_type == "torch.OutOfMemoryError"


def test_format_size_like_torch() -> None:
    assert format_size(512) == "512 bytes"
    assert format_size(20 * 1024 * 1024) == "20.00 MiB"
    assert format_size(8000 * 1024 * 1024) == "7.81 GiB"


def test_lognormal_noise_has_unit_median_scale() -> None:
    assert lognormal_factor(0.0, 0.05) == pytest.approx(0.99875, rel=1e-4)
    assert lognormal_factor(2.0, 0.05) > 1.0 > lognormal_factor(-2.0, 0.05)
