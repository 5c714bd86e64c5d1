"""`python -m monitor` and `comfy-router monitor`: exit 0 on success, 1 when --once could not
write its sample or --prune failed, 2 on a usage or configuration error."""

from __future__ import annotations

import logging
import sys

import psutil
import pynvml
import requests
from apscheduler.schedulers.blocking import BlockingScheduler
from prometheus_client import CollectorRegistry, start_http_server

from monitor.app import SCHEDULER_JOB_DEFAULTS, Runtime, build_runtime, schedule_jobs, stop_on_signals
from monitor.cli import ConfigError, build_config, build_parser
from monitor.clock import SystemClock
from monitor.rollup import RollupJob
from router.settings import Settings

logger = logging.getLogger("monitor")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    configure_logging(args.log_level)
    try:
        config = build_config(args, Settings(), logger)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    runtime = build_runtime(
        config,
        nvml=pynvml,
        psutil=psutil,
        session_factory=requests.Session,
        clock=SystemClock(),
        registry=CollectorRegistry(),
        logger=logger,
    )
    logger.info(
        "sampling every %.3g s into %s; backends: %s",
        config.interval_s,
        runtime.database.engine.url.render_as_string(hide_password=True),
        ", ".join(f"{t.id}={t.url}" for t in config.targets) or "none",
    )
    if config.once:
        return run_once(runtime)
    if config.prune:
        return run_prune(runtime)
    return run_forever(runtime)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every job run at INFO: 17,000 lines a day at a 5 s interval.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Alembic says "Context impl ..." on every start, even with nothing to migrate.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def run_once(runtime: Runtime) -> int:
    try:
        written = runtime.monitor.tick()
        if runtime.direct is not None:
            runtime.direct.run()
        if written:
            # cron and systemd timers run --once: roll up the minutes completed since the last run.
            RollupJob(
                runtime.database.engine, runtime.clock, logger=logging.getLogger("monitor.rollup")
            ).run()
    finally:
        runtime.monitor.sampler.close()
        runtime.database.dispose()
    if not written:
        logger.error("--once: the sample could not be written")
        return 1
    return 0


def run_prune(runtime: Runtime) -> int:
    try:
        result = runtime.retention.run()
    finally:
        runtime.monitor.sampler.close()
        runtime.database.dispose()
    return 0 if result is not None else 1


def run_forever(runtime: Runtime) -> int:
    metrics_server = None
    if runtime.config.metrics_port:
        try:
            metrics_server, _ = start_http_server(
                runtime.config.metrics_port, addr="127.0.0.1", registry=runtime.metrics.registry
            )
        except OSError as exc:  # the port is taken: a configuration error, not a reason to sample blind
            logger.error("cannot serve metrics on 127.0.0.1:%d: %s", runtime.config.metrics_port, exc)
            runtime.close()
            return 2
        logger.info("metrics on http://127.0.0.1:%d/metrics", runtime.config.metrics_port)
    scheduler = BlockingScheduler(timezone="UTC", job_defaults=SCHEDULER_JOB_DEFAULTS)
    schedule_jobs(scheduler, runtime, now=runtime.clock.now())
    stop_on_signals(scheduler, logger)
    try:
        scheduler.start()
    finally:
        runtime.close()
        if metrics_server is not None:
            metrics_server.shutdown()
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
