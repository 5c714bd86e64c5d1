"""`python -m router.simulator serve ...` (also `comfy-router simulate serve ...`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from router.catalog import CatalogError, load_catalog
from router.simulator.gpu import PRESETS
from router.simulator.runner import build_config, start_site
from router.simulator.server import SimulatorConfig

log = logging.getLogger("router.simulator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfy-router simulate", description="A simulated ComfyUI backend (no GPU; for tests and demos)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the ComfyUI API with a simulated GPU")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument(
        "--gpu",
        default=None,
        help=f"a catalog backend id or a preset ({', '.join(PRESETS)}); default: the catalog's first backend",
    )
    serve.add_argument("--vram-mb", type=int, default=None, help="override the card's VRAM (MiB)")
    serve.add_argument("--slowdown", type=float, default=1.0, help="multiply every true duration")
    serve.add_argument("--seed", type=int, default=0, help="seed of the duration noise")
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the catalog (default: COMFY_ROUTER_CONFIG or models_config.json)",
    )
    serve.add_argument(
        "--no-custom-nodes", action="store_true", help="without the ReActor and IPAdapter nodes"
    )
    return parser


def default_config_path() -> Path:
    from router.settings import Settings

    return Settings().config_path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config_path = args.config or default_config_path()
    try:
        catalog = load_catalog(config_path)
        config = build_config(
            catalog,
            gpu=args.gpu,
            vram_mb=args.vram_mb,
            slowdown=args.slowdown,
            seed=args.seed,
            custom_nodes=not args.no_custom_nodes,
            argv=tuple(["comfy-router", "simulate", *(argv if argv is not None else sys.argv[1:])]),
        )
    except (CatalogError, ValueError) as exc:
        print(f"comfy-router simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.host, args.port))
    except OSError as exc:
        print(f"comfy-router simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    site = await start_site(config, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("simulator: shutting down")
        await site.runner.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
