"""Scenario fixtures for the real `pynvml` module: its functions are monkeypatched to answer from
plain data (the way gpustat's tests do it), while its error classes, ctypes structures and
constants stay the real ones.

Any reading of a `FakeGpu` may be an NVMLError subclass instead of a value: that call raises it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pynvml
import pytest

MIB = 1024 * 1024

Reading = Any  # a value, or an NVMLError subclass to raise


@dataclass
class FakeGpu:
    name: Reading = "NVIDIA A100 80GB PCIe"
    uuid: Reading = "GPU-00000000-0000-0000-0000-000000000000"
    total_mib: int = 81920
    used_mib: int = 1024
    memory: Reading = None  # None: from total/used; else an error class
    util_pct: Reading = 50
    temperature_c: Reading = 45
    power_mw: Reading = 200_000
    processes: Reading = field(default_factory=list)  # [(pid, used_mib or None)] or an error class
    handle_error: Reading = None  # nvmlDeviceGetHandleByIndex raises this
    mig_mode: Reading = pynvml.NVMLError_NotSupported  # [current, pending] or an error class
    mig_slots: list[FakeGpu | None] = field(default_factory=list)  # None = an empty slot


@dataclass
class NvmlScenario:
    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: Reading = None
    init_calls: int = 0
    shutdown_calls: int = 0


def _answer(value: Reading) -> Any:
    if isinstance(value, type) and issubclass(value, pynvml.NVMLError):
        raise value()
    return value


def install(monkeypatch: pytest.MonkeyPatch, scenario: NvmlScenario) -> NvmlScenario:
    """Patch pynvml so every call the monitor makes answers from `scenario`."""

    def init() -> None:
        scenario.init_calls += 1
        _answer(scenario.init_error)

    def shutdown() -> None:
        scenario.shutdown_calls += 1

    def handle_by_index(index: int) -> FakeGpu:
        gpu = scenario.gpus[index]
        _answer(gpu.handle_error)
        return gpu

    def memory(gpu: FakeGpu) -> Any:
        _answer(gpu.memory)
        total, used = gpu.total_mib * MIB, gpu.used_mib * MIB
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def utilisation(gpu: FakeGpu) -> Any:
        return pynvml.c_nvmlUtilization_t(gpu=_answer(gpu.util_pct), memory=0)

    def temperature(gpu: FakeGpu, sensor: int) -> Any:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return _answer(gpu.temperature_c)

    def processes(gpu: FakeGpu) -> list[Any]:
        listed = _answer(gpu.processes)
        return [
            pynvml.nvmlFriendlyObject({"pid": pid, "usedGpuMemory": None if mib is None else mib * MIB})
            for pid, mib in listed
        ]

    def mig_handle(gpu: FakeGpu, slot: int) -> FakeGpu:
        found = gpu.mig_slots[slot]
        if found is None:
            raise pynvml.NVMLError_NotFound()
        _answer(found.handle_error)
        return found

    patches: dict[str, Any] = {
        "nvmlInit": init,
        "nvmlShutdown": shutdown,
        "nvmlDeviceGetCount": lambda: len(scenario.gpus),
        "nvmlDeviceGetHandleByIndex": handle_by_index,
        "nvmlDeviceGetName": lambda gpu: _answer(gpu.name),
        "nvmlDeviceGetUUID": lambda gpu: _answer(gpu.uuid),
        "nvmlDeviceGetMemoryInfo": memory,
        "nvmlDeviceGetUtilizationRates": utilisation,
        "nvmlDeviceGetTemperature": temperature,
        "nvmlDeviceGetPowerUsage": lambda gpu: _answer(gpu.power_mw),
        "nvmlDeviceGetComputeRunningProcesses": processes,
        "nvmlDeviceGetMigMode": lambda gpu: _answer(gpu.mig_mode),
        "nvmlDeviceGetMaxMigDeviceCount": lambda gpu: len(gpu.mig_slots),
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
        "nvmlDeviceGetAttributes": lambda gpu: _answer(pynvml.NVMLError_NotSupported),
    }
    for name, fn in patches.items():
        assert hasattr(pynvml, name), f"pynvml has no {name}: the fixture is out of date"
        monkeypatch.setattr(pynvml, name, fn)
    return scenario
