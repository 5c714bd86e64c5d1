"""The simulated GPU: which card, how fast, and what its VRAM holds.

VRAM is modelled per loaded catalog model (its `vram_mb`), least recently used first, plus a fixed
CUDA context. A model that does not fit even after evicting every other model raises the same error
torch raises, with a message in torch's format, so clients can be tested against real OOM handling.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType

from router.catalog import Catalog

# What torch and the CUDA context hold before any model is loaded (the catalog's headroom covers it).
CUDA_CONTEXT_MB = 400
# Weights are copied to the GPU in chunks; an OOM happens on the chunk that does not fit.
LOAD_CHUNK_MB = 256
BYTES_PER_MB = 1024 * 1024


@dataclass(frozen=True)
class GpuSpec:
    """One simulated card. `speed_factor` is throughput relative to the catalog's reference GPU."""

    key: str
    name: str
    vram_mb: int
    speed_factor: float


# Rough relative throughputs for bf16 diffusion against an A100 80GB (the catalog's reference GPU).
PRESETS: MappingProxyType[str, GpuSpec] = MappingProxyType(
    {
        spec.key: spec
        for spec in (
            GpuSpec("a100-80gb", "NVIDIA A100 80GB PCIe", 81920, 1.0),
            GpuSpec("a100-40gb", "NVIDIA A100-SXM4-40GB", 40960, 1.0),
            GpuSpec("h100-80gb", "NVIDIA H100 80GB HBM3", 81559, 1.7),
            GpuSpec("l40s", "NVIDIA L40S", 46068, 0.95),
            GpuSpec("rtx4090", "NVIDIA GeForce RTX 4090", 24564, 0.9),
            GpuSpec("rtx3090", "NVIDIA GeForce RTX 3090", 24576, 0.55),
            GpuSpec("a10g", "NVIDIA A10G", 23028, 0.4),
            GpuSpec("l4", "NVIDIA L4", 23034, 0.35),
            GpuSpec("t4", "Tesla T4", 15360, 0.15),
        )
    }
)
DEFAULT_PRESET = "a100-80gb"


def resolve_gpu(catalog: Catalog, gpu: str | None, vram_mb: int | None = None) -> GpuSpec:
    """A catalog backend id wins over a preset name; None means the catalog's first enabled backend.

    Without backends in the catalog, None means the `a100-80gb` preset (the reference GPU).
    """
    spec = _lookup(catalog, gpu)
    if vram_mb is not None:
        if vram_mb <= CUDA_CONTEXT_MB:
            raise ValueError(f"--vram-mb must be more than {CUDA_CONTEXT_MB} MiB, got {vram_mb}")
        spec = GpuSpec(spec.key, spec.name, vram_mb, spec.speed_factor)
    return spec


def _lookup(catalog: Catalog, gpu: str | None) -> GpuSpec:
    if gpu is None:
        backend = next((b for b in catalog.backends if b.enabled), None)
        if backend is None:
            return PRESETS[DEFAULT_PRESET]
        return GpuSpec(backend.id, backend.gpu_name, backend.vram_mb, backend.speed_factor)
    for backend in catalog.backends:
        if backend.id == gpu:
            return GpuSpec(backend.id, backend.gpu_name, backend.vram_mb, backend.speed_factor)
    preset = PRESETS.get(gpu.lower())
    if preset is not None:
        return preset
    choices = sorted({b.id for b in catalog.backends} | set(PRESETS))
    raise ValueError(f"unknown GPU {gpu!r}: use a catalog backend id or a preset ({', '.join(choices)})")


class OutOfMemoryError(Exception):
    """Mirrors torch.OutOfMemoryError: `str()` is torch's message for the failed allocation."""

    exception_type = "torch.OutOfMemoryError"


@dataclass(frozen=True)
class Placement:
    model_id: str
    was_loaded: bool
    evicted: tuple[str, ...]


class GpuMemory:
    """Models resident in VRAM, least recently used first."""

    def __init__(self, total_mb: int, context_mb: int = CUDA_CONTEXT_MB) -> None:
        self.total_mb = total_mb
        self.context_mb = context_mb
        self._loaded: OrderedDict[str, int] = OrderedDict()

    @property
    def loaded(self) -> dict[str, int]:
        return dict(self._loaded)

    @property
    def used_mb(self) -> int:
        return self.context_mb + sum(self._loaded.values())

    @property
    def free_mb(self) -> int:
        return max(0, self.total_mb - self.used_mb)

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    def place(self, model_id: str, vram_mb: int) -> Placement:
        """Make the model resident, evicting least recently used models; raises OutOfMemoryError."""
        if model_id in self._loaded:
            self._loaded.move_to_end(model_id)
            return Placement(model_id, True, ())
        evicted: list[str] = []
        while self.free_mb < vram_mb and self._loaded:
            victim, _ = self._loaded.popitem(last=False)
            evicted.append(victim)
        if self.free_mb < vram_mb:
            raise OutOfMemoryError(self._oom_message(vram_mb))
        self._loaded[model_id] = vram_mb
        return Placement(model_id, False, tuple(evicted))

    def oom_error(self, need_mb: int) -> OutOfMemoryError:
        """The error a placement of `need_mb` raises when the card is full (used by the oom fault)."""
        return OutOfMemoryError(self._oom_message(need_mb))

    def unload_all(self) -> list[str]:
        unloaded = list(self._loaded)
        self._loaded.clear()
        return unloaded

    def _oom_message(self, need_mb: int) -> str:
        """torch's CUDA OOM text for weights copied chunk by chunk until the card is full."""
        available_mb = self.free_mb
        copied_mb = (available_mb // LOAD_CHUNK_MB) * LOAD_CHUNK_MB
        free_mb = available_mb - copied_mb
        allocated_mb = self.used_mb - self.context_mb + copied_mb
        reserved_unallocated_mb = min(free_mb, 20)
        in_use_mb = self.total_mb - free_mb
        return torch_oom_message(
            tried_bytes=max(need_mb - copied_mb, min(need_mb, LOAD_CHUNK_MB)) * BYTES_PER_MB,
            total_bytes=self.total_mb * BYTES_PER_MB,
            free_bytes=free_mb * BYTES_PER_MB,
            in_use_bytes=in_use_mb * BYTES_PER_MB,
            allocated_bytes=allocated_mb * BYTES_PER_MB,
            reserved_unallocated_bytes=reserved_unallocated_mb * BYTES_PER_MB,
        )


def torch_oom_message(
    *,
    tried_bytes: int,
    total_bytes: int,
    free_bytes: int,
    in_use_bytes: int,
    allocated_bytes: int,
    reserved_unallocated_bytes: int,
    device_index: int = 0,
) -> str:
    return (
        f"CUDA out of memory. Tried to allocate {format_size(tried_bytes)}. "
        f"GPU {device_index} has a total capacity of {format_size(total_bytes)} "
        f"of which {format_size(free_bytes)} is free. "
        f"Including non-PyTorch memory, this process has {format_size(in_use_bytes)} memory in use. "
        f"Of the allocated memory {format_size(allocated_bytes)} is allocated by PyTorch, "
        f"and {format_size(reserved_unallocated_bytes)} is reserved by PyTorch but unallocated. "
        "If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  "
        "See documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )


def format_size(size_bytes: int) -> str:
    """Sizes as torch's allocator prints them: two decimals, binary units."""
    if size_bytes <= 1024:
        return f"{size_bytes} bytes"
    if size_bytes <= BYTES_PER_MB:
        return f"{size_bytes / 1024:.2f} KiB"
    if size_bytes <= 1024 * BYTES_PER_MB:
        return f"{size_bytes / BYTES_PER_MB:.2f} MiB"
    return f"{size_bytes / (1024 * BYTES_PER_MB):.2f} GiB"


def lognormal_factor(gauss: float, sigma: float) -> float:
    """exp(sigma * z - sigma^2 / 2): multiplicative noise whose mean is exactly 1."""
    return math.exp(sigma * gauss - sigma * sigma / 2.0)
