"""Shared plumbing of the bench sections: figures, percentiles, subprocesses on loopback ports.

Every process a section starts goes through `Child`, which stops it by its own pid (SIGTERM, then
SIGKILL after a bounded wait); every wait here is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[2]  # the source tree (router/, monitor/, tests/)

Figure = dict[str, Any]


def figure(
    name: str, value: float | int | str | None, unit: str = "", goal: str = "", met: bool | None = None
) -> Figure:
    """One line of bench.md: what was measured, its value and unit, the goal and whether it is met."""
    return {"figure": name, "value": value, "unit": unit, "goal": goal, "met": met}


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def import_test_support() -> None:
    """Make `tests.support` importable (a console script does not have the source tree on sys.path)."""
    if not (ROOT / "tests" / "support" / "__init__.py").exists():
        raise RuntimeError(f"tests/support is not in {ROOT}: this section needs the source tree")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step_s)
    return check()


class Child:
    """A subprocess whose output goes to a log file, stopped by pid (never by name)."""

    def __init__(
        self, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None, cwd: Path
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        log: IO[bytes] = log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env if env is not None else os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: gunicorn's workers stop with it
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def wait_http(self, url: str, timeout_s: float = 60.0) -> None:
        """Until `url` answers 200; raises with the log's tail when the process dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.argv[:4]} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc.poll() is not None:
            return self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this Child created, nothing else
            return self.proc.wait(timeout=10)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def child_env(**overrides: str) -> dict[str, str]:
    """The environment for a router/monitor/simulator subprocess: no inherited DATABASE_URL or
    COMFYUI_URL (the bench says which database and backends), unbuffered output."""
    env = dict(os.environ)
    for name in ("DATABASE_URL", "COMFYUI_URL", "COMFY_ROUTER_CONFIG", "COMFY_ROUTER_API_KEYS"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder, removed however the section ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def process_tree_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process and its live children (gunicorn master + workers)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
