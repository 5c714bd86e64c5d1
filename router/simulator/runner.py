"""Starting and stopping a simulator: in the foreground (the CLI) or in a background thread (tests,
`make run`), each server with its own event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from router.catalog import Catalog, load_catalog
from router.simulator.gpu import resolve_gpu
from router.simulator.server import SimulatorConfig, SimulatorServer

JsonDict = dict[str, Any]
log = logging.getLogger("router.simulator")
SHUTDOWN_TIMEOUT_S = 1.0


@dataclass
class RunningSite:
    server: SimulatorServer
    runner: web.AppRunner
    host: str
    port: int


async def start_site(config: SimulatorConfig, host: str, port: int) -> RunningSite:
    server = SimulatorServer(config)
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    gpu = config.gpu
    log.warning(
        "comfy-router ComfyUI SIMULATOR (not a real ComfyUI, no GPU) on http://%s:%d: simulated %s, "
        "%d MiB VRAM, speed factor %.2f, slowdown %.2f, seed %d",
        host,
        bound_port,
        gpu.name,
        gpu.vram_mb,
        gpu.speed_factor,
        config.slowdown,
        config.seed,
    )
    return RunningSite(server, runner, host, bound_port)


def build_config(
    catalog: Catalog,
    *,
    gpu: str | None,
    vram_mb: int | None,
    slowdown: float,
    seed: int,
    custom_nodes: bool,
    argv: tuple[str, ...],
) -> SimulatorConfig:
    if slowdown <= 0:
        raise ValueError(f"slowdown must be > 0, got {slowdown}")
    spec = resolve_gpu(catalog, gpu, vram_mb)
    return SimulatorConfig(catalog, spec, slowdown, seed, custom_nodes, argv)


class SimulatorHandle:
    """A simulator running in a background thread. `stop()` (or leaving the `with`) shuts it down."""

    def __init__(self, site: RunningSite, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._site = site
        self._loop = loop
        self._thread = thread
        self._stopped = False
        self.host = site.host
        self.port = site.port
        self.url = f"http://{site.host}:{site.port}"

    def set_faults(self, **faults: Any) -> JsonDict:
        """Same keys as `POST /sim/faults` (`oom_next`, `hang`, `http_500`, `drop_ws_after_steps`,
        `slowdown`, `reset`); returns the faults now active."""
        return self._call(lambda: self._site.server.set_faults(faults).as_json())

    def state(self) -> JsonDict:
        """What `GET /sim/state` answers (loaded models, VRAM, queue, faults)."""
        return self._call(self._site.server.state_json)

    def _call(self, fn: Any, timeout_s: float = 5.0) -> JsonDict:
        async def run() -> JsonDict:
            result: JsonDict = fn()
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            future = asyncio.run_coroutine_threadsafe(self._site.runner.cleanup(), self._loop)
            future.result(timeout_s)
        except Exception:
            log.exception("simulator: unclean shutdown")
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_simulator(
    catalog: Catalog | str | Path,
    *,
    gpu: str | None = None,
    vram_mb: int | None = None,
    slowdown: float = 1.0,
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 0,
    custom_nodes: bool = True,
    startup_timeout_s: float = 10.0,
) -> SimulatorHandle:
    """Run a simulated ComfyUI in a background thread; port 0 picks a free port (see `.url`)."""
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    argv = ("comfy-router", "simulate", "serve", "--gpu", str(gpu), "--seed", str(seed))
    config = build_config(
        cat, gpu=gpu, vram_mb=vram_mb, slowdown=slowdown, seed=seed, custom_nodes=custom_nodes, argv=argv
    )
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["site"] = loop.run_until_complete(start_site(config, host, port))
        except BaseException as exc:
            started["error"] = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    thread = threading.Thread(target=main, name=f"comfy-sim-{port}", daemon=True)
    thread.start()
    if not ready.wait(startup_timeout_s):
        loop.call_soon_threadsafe(loop.stop)
        raise TimeoutError(f"the simulator did not start within {startup_timeout_s} s")
    if "error" in started:
        thread.join(startup_timeout_s)
        raise started["error"]
    site: RunningSite = started["site"]
    return SimulatorHandle(site, loop, thread)
