"""Prometheus metrics of the router (prometheus-client; a registry per app, no globals).

Under gunicorn with several workers (`comfy-router serve --workers N`), PROMETHEUS_MULTIPROC_DIR
is set before prometheus-client is imported, so counters and histograms of every worker are kept
in files there and /metrics, whichever worker answers it, sums them. What is read live at scrape
time (backend state, spool depth) is the answering worker's own view.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MB = 1024 * 1024
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._live: list[Collector] = []  # read at scrape time in this process
        r = self.registry
        self.requests = Counter(
            "comfy_router_http_requests",
            "HTTP requests by route template",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "comfy_router_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                120,
                300,
                600,
            ),
            registry=r,
        )
        self.selections = Counter(
            "comfy_router_selections",
            "Decisions by chosen model, tier and reason",
            ["model", "tier", "reason_code"],
            registry=r,
        )
        self.attempts = Counter(
            "comfy_router_attempts",
            "Attempts on ComfyUI by outcome",
            ["model", "backend", "outcome"],
            registry=r,
        )
        self.jobs = Counter("comfy_router_jobs", "Finished jobs by status", ["status", "urgency"], registry=r)
        self.degraded = Counter(
            "comfy_router_degraded_jobs", "Jobs served by a lower rung than chosen", registry=r
        )
        self.deadline_misses = Counter(
            "comfy_router_deadline_misses", "Jobs that ended after their deadline", ["urgency"], registry=r
        )

    def add_spool_gauges(self, depth: Callable[[], int], dead: Callable[[], int]) -> None:
        """Writes waiting on local disk for the database, and writes it refused for good."""
        self._add_live(_SpoolCollector(depth, dead))

    def add_backend_collector(self, describe: Callable[[], list[dict[str, Any]]]) -> None:
        self._add_live(_BackendCollector(describe))

    def _add_live(self, collector: Collector) -> None:
        self._live.append(collector)
        self.registry.register(collector)

    def exposition(self) -> bytes:
        """The text format of every metric: all workers' counters when in multiprocess mode."""
        if multiprocess_dir() is None:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in self._live:
            registry.register(collector)
        return bytes(generate_latest(registry))

    def instrument(self, app: Flask) -> None:
        @app.before_request
        def _start() -> None:
            g.metrics_t0 = time.perf_counter()

        @app.after_request
        def _observe(response: Response) -> Response:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            elapsed = time.perf_counter() - g.get("metrics_t0", time.perf_counter())
            self.requests.labels(route, request.method, str(response.status_code)).inc()
            self.latency.labels(route, request.method).observe(elapsed)
            return response

        @app.get("/metrics")
        def _metrics() -> Response:
            return Response(self.exposition(), mimetype=CONTENT_TYPE_LATEST)


class _SpoolCollector(Collector):
    def __init__(self, depth: Callable[[], int], dead: Callable[[], int]) -> None:
        self._depth = depth
        self._dead = dead

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "comfy_router_spool_depth", "Job/usage writes spooled until the database answers", self._depth()
        )
        yield GaugeMetricFamily(
            "comfy_router_spool_dead", "Spooled writes the database refused (kept on disk)", self._dead()
        )


class _BackendCollector(Collector):
    """Backend health, queue and VRAM read from the live state at scrape time (never stale)."""

    def __init__(self, describe: Callable[[], list[dict[str, Any]]]) -> None:
        self._describe = describe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "comfy_router_backend_up", "1 when the backend answers and is not in cooldown", labels=["backend"]
        )
        cooldown = GaugeMetricFamily(
            "comfy_router_backend_cooldown_seconds",
            "Seconds left in the backend's cooldown",
            labels=["backend"],
        )
        pending = GaugeMetricFamily(
            "comfy_router_backend_queue_pending", "Prompts waiting in ComfyUI's queue", labels=["backend"]
        )
        running = GaugeMetricFamily(
            "comfy_router_backend_queue_running", "Prompts running in ComfyUI", labels=["backend"]
        )
        total = GaugeMetricFamily(
            "comfy_router_backend_vram_total_bytes",
            "VRAM of the backend's GPU",
            labels=["backend", "modelName"],
        )
        free = GaugeMetricFamily(
            "comfy_router_backend_vram_free_bytes",
            "Free VRAM the backend reports",
            labels=["backend", "modelName"],
        )
        for b in self._describe():
            bid = b["id"]
            up.add_metric([bid], 1.0 if b["healthy"] else 0.0)
            cooldown.add_metric([bid], float(b.get("cooldown_remaining_s") or 0.0))
            if b.get("queue_pending") is not None:
                pending.add_metric([bid], float(b["queue_pending"]))
            if b.get("queue_running") is not None:
                running.add_metric([bid], float(b["queue_running"]))
            if b.get("vram_total_mb") is not None:
                total.add_metric([bid, b.get("gpu_name") or ""], float(b["vram_total_mb"]) * MB)
            if b.get("vram_free_mb") is not None:
                free.add_metric([bid, b.get("gpu_name") or ""], float(b["vram_free_mb"]) * MB)
        yield from (up, cooldown, pending, running, total, free)
