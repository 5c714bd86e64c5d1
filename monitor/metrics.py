"""The monitor's own Prometheus metrics, on an injected registry (tests never touch the global one).

GPU gauges follow the DCGM exporter's labels (`gpu`, `UUID`, `modelName`) so dashboards built for
DCGM need only the metric names changed. Values are in base units (bytes, ratio, watts).
A reading that is None removes its series rather than exporting a made-up 0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.rows import BYTES_PER_MB, SOURCE_COMFYUI, SOURCE_NVML, Row

GPU_LABELS = ("gpu", "UUID", "modelName")
LabelValues = tuple[str, ...]
Convert = Callable[[Any], float | None]  # a row's value (None = not measured) -> the metric's value

_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _mb_to_bytes(value: float | None) -> float | None:
    return None if value is None else value * BYTES_PER_MB


def _pct_to_ratio(value: float | None) -> float | None:
    return None if value is None else value / 100.0


def _as_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _bool(value: Any) -> float | None:
    return None if value is None else float(value)


class _SeriesGauge:
    """A labelled gauge set from one sample's rows; series absent from the sample are removed."""

    def __init__(self, gauge: Gauge, read: Callable[[Row], float | None]) -> None:
        self._gauge = gauge
        self._read = read
        self._live: set[LabelValues] = set()

    def update(self, rows: Sequence[tuple[LabelValues, Row]]) -> None:
        live: set[LabelValues] = set()
        for labels, row in rows:
            value = self._read(row)
            if value is not None:
                self._gauge.labels(*labels).set(value)
                live.add(labels)
        # Set first, remove after: a scrape in between sees old values, never a hole.
        for labels in self._live - live:
            self._gauge.remove(*labels)
        self._live = live


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.samples = Counter("comfy_router_monitor_samples", "Samples taken.", registry=registry)
        self.sample_duration = Histogram(
            "comfy_router_monitor_sample_duration_seconds",
            "Time to read every source for one sample (writing excluded).",
            buckets=_DURATION_BUCKETS_S,
            registry=registry,
        )
        self.rows_written = Counter(
            "comfy_router_monitor_rows_written", "Rows written to vram_usage_log.", registry=registry
        )
        self.write_failures = Counter(
            "comfy_router_monitor_write_failures", "Failed attempts to write a sample.", registry=registry
        )
        self.buffered_samples = Gauge(
            "comfy_router_monitor_buffered_samples", "Samples waiting for the database.", registry=registry
        )
        self.dropped_samples = Counter(
            "comfy_router_monitor_dropped_samples",
            "Samples lost: buffer full during an outage, or rejected by the database.",
            registry=registry,
        )
        self.nvml_available = Gauge(
            "comfy_router_monitor_nvml_available", "1 when NVML is initialised.", registry=registry
        )
        self._gpu = [
            self._gpu_gauge("up", "1 when the GPU was read, 0 when it failed.", "up", _bool),
            self._gpu_gauge("memory_total_bytes", "Framebuffer size.", "vram_total_mb", _mb_to_bytes),
            self._gpu_gauge("memory_used_bytes", "Framebuffer used.", "vram_used_mb", _mb_to_bytes),
            self._gpu_gauge("memory_free_bytes", "Framebuffer free.", "vram_free_mb", _mb_to_bytes),
            self._gpu_gauge("utilization_ratio", "GPU utilisation, 0 to 1.", "gpu_util_pct", _pct_to_ratio),
            self._gpu_gauge("temperature_celsius", "GPU temperature.", "temperature_c", _as_float),
            self._gpu_gauge("power_watts", "Power draw.", "power_w", _as_float),
        ]
        self._backend = [
            self._backend_gauge("up", "1 when the backend answered /system_stats and /queue.", "up", _bool),
            self._backend_gauge("queue_pending", "Prompts waiting in ComfyUI.", "queue_pending", _as_float),
            self._backend_gauge("queue_running", "Prompts running in ComfyUI.", "queue_running", _as_float),
            self._backend_gauge(
                "vram_free_bytes",
                "Free VRAM of the backend's device, as ComfyUI says.",
                "vram_free_mb",
                _mb_to_bytes,
            ),
        ]
        self._lock = threading.Lock()

    def observe_sample(self, rows: list[Row], duration_s: float, *, nvml_available: bool) -> None:
        self.samples.inc()
        self.sample_duration.observe(duration_s)
        self.nvml_available.set(1.0 if nvml_available else 0.0)
        gpu_rows = [(_gpu_labels(r), r) for r in rows if r["source"] == SOURCE_NVML]
        backend_rows = [((str(r["backend"]),), r) for r in rows if r["source"] == SOURCE_COMFYUI]
        with self._lock:
            for gauge in self._gpu:
                gauge.update(gpu_rows)
            for gauge in self._backend:
                gauge.update(backend_rows)

    def _gpu_gauge(self, name: str, doc: str, column: str, convert: Convert) -> _SeriesGauge:
        gauge = Gauge(f"comfy_router_gpu_{name}", doc, GPU_LABELS, registry=self.registry)
        return _SeriesGauge(gauge, lambda r: convert(r[column]))

    def _backend_gauge(self, name: str, doc: str, column: str, convert: Convert) -> _SeriesGauge:
        gauge = Gauge(f"comfy_router_backend_{name}", doc, ("backend",), registry=self.registry)
        return _SeriesGauge(gauge, lambda r: convert(r[column]))


def _gpu_labels(row: Row) -> LabelValues:
    index = row["gpu_index"]
    return ("" if index is None else str(index), row["gpu_uuid"] or "", row["gpu_name"] or "")
