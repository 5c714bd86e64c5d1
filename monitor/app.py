"""Wiring: adapters in, a runnable monitor out; and the scheduler jobs that drive it."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.base import BaseScheduler
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from monitor.cli import MonitorConfig
from monitor.clock import Clock
from monitor.comfyui import ComfyProbe, HttpGetter
from monitor.direct_runs import DirectRunLogger
from monitor.host import HostReader, PsutilLike
from monitor.metrics import MonitorMetrics
from monitor.nvml import NvmlReader
from monitor.retention import RetentionJob
from monitor.rollup import ROLLUP_JOB_ID, RollupJob
from monitor.sampler import Sampler
from monitor.writer import BufferedWriter
from router.db.database import Database, normalise_url

SCHEDULER_JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 5}
SAMPLE_JOB_ID = "sample"
RETENTION_JOB_ID = "retention"
DIRECT_RUNS_JOB_ID = "direct_runs"
# The first retention run waits a little so a restart loop does not hammer the database.
RETENTION_FIRST_DELAY = timedelta(minutes=1)
PG_CONNECT_TIMEOUT_S = 5
# The rollup job's second of every minute (after the connect timeout of a write at :00 or so).
ROLLUP_SECOND = 15


def with_connect_timeout(url: str, timeout_s: int = PG_CONNECT_TIMEOUT_S) -> str:
    """PostgreSQL URLs get libpq's connect_timeout unless they set one.

    Writes happen in the sampling job: a server that drops packets would otherwise hold a sample
    for the kernel's TCP timeout (minutes) instead of letting it go to the buffer.
    """
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
        return url
    return parsed.update_query_dict({"connect_timeout": str(timeout_s)}).render_as_string(hide_password=False)


class Monitor:
    def __init__(self, sampler: Sampler, writer: BufferedWriter, metrics: MonitorMetrics) -> None:
        self.sampler = sampler
        self.writer = writer
        self.metrics = metrics

    def tick(self) -> bool:
        """Take one sample and write it (with anything buffered); True when nothing is left waiting."""
        sample = self.sampler.take()
        self.metrics.observe_sample(sample.rows, sample.duration_s, nvml_available=sample.nvml_available)
        return self.writer.submit(sample)


@dataclass
class Runtime:
    config: MonitorConfig
    database: Database
    monitor: Monitor
    retention: RetentionJob
    metrics: MonitorMetrics
    clock: Clock
    direct: DirectRunLogger | None = None

    def close(self) -> None:
        # One last try for what is still buffered; a database that is down stays down, so no loop.
        if self.monitor.writer.buffered and not self.monitor.writer.flush():
            logging.getLogger(__name__).warning(
                "exiting with %d samples unwritten (the database is unreachable)",
                self.monitor.writer.buffered,
            )
        self.monitor.sampler.close()
        self.database.dispose()


def build_runtime(
    config: MonitorConfig,
    *,
    nvml: Any,
    psutil: PsutilLike,
    session_factory: Callable[[], HttpGetter],
    clock: Clock,
    registry: CollectorRegistry,
    logger: logging.Logger,
) -> Runtime:
    database = Database(with_connect_timeout(config.database_url))
    metrics = MonitorMetrics(registry)
    sampler = Sampler(
        nvml=NvmlReader(nvml, host=config.host, logger=logger, retry_init_every=config.nvml_retry_samples),
        host=HostReader(psutil, host=config.host),
        comfy=ComfyProbe(
            list(config.targets),
            host=config.host,
            logger=logger,
            session_factory=session_factory,
            timeout_s=config.http_timeout_s,
        ),
        clock=clock,
        logger=logger,
    )
    writer = BufferedWriter(
        database.engine,
        max_buffered_samples=config.buffer_samples,
        metrics=metrics,
        logger=logger,
        ensure_schema=database.migrate if config.migrate else None,
    )
    retention = RetentionJob(
        database.engine,
        clock,
        retention_days=config.retention_days,
        aggregate_days=config.aggregate_days,
        logger=logger,
    )
    direct = None
    if config.direct_runs_every_s > 0 and config.targets:
        direct = DirectRunLogger(
            list(config.targets),
            config.catalog,
            database.engine,
            session_factory,
            logger,
            config.http_timeout_s,
        )
    return Runtime(config, database, Monitor(sampler, writer, metrics), retention, metrics, clock, direct)


def schedule_jobs(scheduler: BaseScheduler, runtime: Runtime, *, now: datetime) -> None:
    scheduler.add_job(
        runtime.monitor.tick,
        "interval",
        seconds=runtime.config.interval_s,
        id=SAMPLE_JOB_ID,
        next_run_time=now,  # the first sample at once, not one interval after start
    )
    if runtime.direct is not None:
        scheduler.add_job(
            runtime.direct.run,
            "interval",
            seconds=runtime.config.direct_runs_every_s,
            id=DIRECT_RUNS_JOB_ID,
            next_run_time=now,
        )
    # Rolls up each complete minute a few seconds into the next one, when the last sample of the
    # minute before has been written.
    rollup = RollupJob(runtime.database.engine, runtime.clock, logger=logging.getLogger("monitor.rollup"))
    scheduler.add_job(rollup.run, "cron", second=ROLLUP_SECOND, id=ROLLUP_JOB_ID)
    scheduler.add_job(
        runtime.retention.run,
        "interval",
        days=1,
        id=RETENTION_JOB_ID,
        next_run_time=now + RETENTION_FIRST_DELAY,
    )


def stop_on_signals(scheduler: BaseScheduler, logger: logging.Logger) -> threading.Event:
    """SIGTERM/SIGINT shut the scheduler down, letting a running sample finish.

    The shutdown runs in its own thread: the handler interrupts the scheduler's main loop,
    which may hold the scheduler's locks at that moment.
    """
    stopping = threading.Event()

    def shutdown() -> None:
        deadline_s = time.monotonic() + 10.0
        while not scheduler.running and time.monotonic() < deadline_s:
            time.sleep(0.05)  # a signal that arrived while the scheduler was still starting
        if scheduler.running:
            scheduler.shutdown(wait=True)

    def handle(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        logger.info("%s: stopping after the current sample", signal.Signals(signum).name)
        threading.Thread(target=shutdown, name="monitor-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stopping
