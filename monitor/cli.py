"""Command line of `python -m monitor` / `comfy-router monitor`, and the resolved settings."""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monitor.targets import BackendTarget, resolve_targets
from router.catalog import Catalog, CatalogError, load_catalog
from router.settings import Settings


class ConfigError(Exception):
    """The command line or the catalog cannot be used (exit status 2)."""


@dataclass(frozen=True)
class MonitorConfig:
    database_url: str
    targets: tuple[BackendTarget, ...]
    interval_s: float = 5.0
    once: bool = False
    prune: bool = False
    metrics_port: int = 0
    retention_days: float = 7.0
    aggregate_days: float = 90.0
    buffer_samples: int = 720
    nvml_retry_samples: int = 60
    http_timeout_s: float = 2.0
    host: str = "localhost"
    migrate: bool = True
    catalog: Catalog | None = None  # names models and backend prices of runs that bypassed the router
    direct_runs_every_s: float = 30.0  # 0: do not scan backends' /history for direct runs


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="comfy-router monitor",
        description="Sample NVIDIA GPUs (NVML), host RAM/CPU and each ComfyUI backend into vram_usage_log.",
    )
    p.add_argument("--interval-s", type=_positive(float), default=5.0, help="seconds between samples (5)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="take one sample, write it and exit (cron, timers)")
    mode.add_argument(
        "--prune",
        action="store_true",
        help="aggregate and delete old rows once, then exit (the long-running monitor does it daily)",
    )
    p.add_argument("--database-url", help="SQLAlchemy URL (default: DATABASE_URL)")
    p.add_argument(
        "--direct-runs-every-s",
        type=float,
        default=30.0,
        help="how often to log runs that bypassed the router from each backend's /history (0: never)",
    )
    p.add_argument("--config", type=Path, help="catalog file (default: COMFY_ROUTER_CONFIG)")
    p.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="[ID=]URL",
        help="a ComfyUI base URL to probe; repeatable (default: COMFYUI_URL, else the catalog's backends)",
    )
    p.add_argument(
        "--metrics-port", type=_port, default=0, help="serve /metrics on 127.0.0.1 on this port (0 = off)"
    )
    p.add_argument("--retention-days", type=_positive(float), default=7.0, help="keep raw rows this long (7)")
    p.add_argument(
        "--aggregate-days",
        type=_positive(float),
        default=90.0,
        help="keep 1-minute aggregates this long (90)",
    )
    p.add_argument(
        "--buffer-samples",
        type=_positive(int),
        default=720,
        help="samples kept in memory while the database is down (720 = 1 h at 5 s)",
    )
    p.add_argument(
        "--nvml-retry-samples",
        type=_positive(int),
        default=60,
        help="without NVML, retry initialising it every this many samples (60)",
    )
    p.add_argument("--http-timeout-s", type=_positive(float), default=2.0, help="per-request timeout (2)")
    p.add_argument("--host-name", default=None, help="the `host` column (default: this machine's name)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def load_optional_catalog(path: Path | None, default_path: Path, logger: logging.Logger) -> Catalog | None:
    """An explicit --config must load; the default file may be absent (the monitor needs no catalog)."""
    if path is not None:
        try:
            return load_catalog(path)
        except CatalogError as exc:
            raise ConfigError(str(exc)) from exc
    if not default_path.exists():
        return None
    try:
        return load_catalog(default_path)
    except CatalogError as exc:
        logger.warning("ignoring the catalog: %s", exc)
        return None


def build_config(args: argparse.Namespace, settings: Settings, logger: logging.Logger) -> MonitorConfig:
    if args.aggregate_days < args.retention_days:
        raise ConfigError("--aggregate-days must be at least --retention-days")
    catalog = load_optional_catalog(args.config, settings.config_path, logger)
    try:
        targets = resolve_targets(args.backend, settings.comfyui_url, catalog)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return MonitorConfig(
        database_url=args.database_url or settings.database_url,
        targets=tuple(targets),
        interval_s=args.interval_s,
        once=args.once,
        prune=args.prune,
        metrics_port=args.metrics_port,
        retention_days=args.retention_days,
        aggregate_days=args.aggregate_days,
        buffer_samples=args.buffer_samples,
        nvml_retry_samples=args.nvml_retry_samples,
        http_timeout_s=args.http_timeout_s,
        host=args.host_name or socket.gethostname(),
        migrate=settings.migrate_on_start,
        catalog=catalog,
        direct_runs_every_s=args.direct_runs_every_s,
    )
