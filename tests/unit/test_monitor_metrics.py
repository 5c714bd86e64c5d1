"""The monitor's Prometheus metrics on an injected registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from monitor.metrics import MonitorMetrics
from monitor.rows import blank_row

TS = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
GPU0 = {"gpu": "0", "UUID": "GPU-a", "modelName": "NVIDIA A100 80GB PCIe"}
GPU1 = {"gpu": "1", "UUID": "GPU-b", "modelName": "NVIDIA GeForce RTX 4090"}


def row(source: str, **fields: Any) -> dict[str, Any]:
    r = blank_row(TS, "h", source)
    r.update(fields)
    return r


def gpu(index: int, uuid: str, name: str, **fields: Any) -> dict[str, Any]:
    return row("nvml", gpu_index=index, gpu_uuid=uuid, gpu_name=name, up=True, **fields)


def test_gpu_and_backend_gauges() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    rows = [
        gpu(0, "GPU-a", "NVIDIA A100 80GB PCIe", vram_used_mb=1024.0, vram_free_mb=2048.0, gpu_util_pct=37.0,
            temperature_c=51.0, power_w=212.5),
        gpu(1, "GPU-b", "NVIDIA GeForce RTX 4090", vram_used_mb=0.0, power_w=None),
        row("host", cpu_pct=3.0),
        row("comfyui", backend="a100", up=True, queue_pending=2, queue_running=1, vram_free_mb=10.0),
        row("comfyui", backend="dead", up=False, error="refused"),
    ]  # fmt: skip
    metrics.observe_sample(rows, 0.012, nvml_available=True)
    value = registry.get_sample_value
    assert value("comfy_router_gpu_memory_used_bytes", GPU0) == 1024 * 1024 * 1024
    assert value("comfy_router_gpu_memory_free_bytes", GPU0) == 2048 * 1024 * 1024
    assert value("comfy_router_gpu_utilization_ratio", GPU0) == 0.37
    assert value("comfy_router_gpu_temperature_celsius", GPU0) == 51.0
    assert value("comfy_router_gpu_power_watts", GPU0) == 212.5
    assert value("comfy_router_gpu_memory_used_bytes", GPU1) == 0.0  # a real zero is exported
    assert value("comfy_router_gpu_power_watts", GPU1) is None  # an unknown reading is absent, not 0
    assert value("comfy_router_gpu_up", GPU1) == 1.0
    assert value("comfy_router_backend_up", {"backend": "a100"}) == 1.0
    assert value("comfy_router_backend_up", {"backend": "dead"}) == 0.0
    assert value("comfy_router_backend_queue_pending", {"backend": "a100"}) == 2.0
    assert value("comfy_router_backend_queue_pending", {"backend": "dead"}) is None
    assert value("comfy_router_monitor_samples_total") == 1.0
    assert value("comfy_router_monitor_sample_duration_seconds_count") == 1.0
    assert value("comfy_router_monitor_nvml_available") == 1.0
    assert b"comfy_router_gpu_memory_used_bytes{UUID=" in generate_latest(registry)


def test_series_of_a_gpu_that_disappears_are_removed() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    metrics.observe_sample(
        [gpu(0, "GPU-a", "NVIDIA A100 80GB PCIe", power_w=100.0)], 0.01, nvml_available=True
    )
    metrics.observe_sample([], 0.01, nvml_available=False)
    assert registry.get_sample_value("comfy_router_gpu_power_watts", GPU0) is None
    assert registry.get_sample_value("comfy_router_gpu_up", GPU0) is None
    assert registry.get_sample_value("comfy_router_monitor_nvml_available") == 0.0
    assert registry.get_sample_value("comfy_router_monitor_samples_total") == 2.0


def test_a_failed_gpu_is_up_zero_with_no_readings() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    lost = row(
        "nvml", gpu_index=1, gpu_uuid="GPU-b", gpu_name="NVIDIA GeForce RTX 4090", up=False, error="lost"
    )
    metrics.observe_sample([lost], 0.01, nvml_available=True)
    assert registry.get_sample_value("comfy_router_gpu_up", GPU1) == 0.0
    assert registry.get_sample_value("comfy_router_gpu_memory_used_bytes", GPU1) is None
