"""A live router for integration tests: `python -m router serve` as a subprocess on a free loopback port.

    with LiveRouter(catalog_path, database_url, workdir=tmp_path) as router:
        requests.post(router.url + "/select", json={...})

The router runs as `make run` starts it (gunicorn), with DATABASE_URL, COMFY_ROUTER_CONFIG and
COMFY_ROUTER_DATA_DIR pointing at the test's own database, catalog and folder. A catalog whose
backends have no `url` makes the router start its built-in ComfyUI simulator. Output goes to a
log file (`router.log` in the work dir), quoted in the error when the router does not come up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tests.support.postgres import free_port
from tests.support.process_group import ProcessGroup

ROOT = Path(__file__).resolve().parents[2]


def write_catalog(path: Path, catalog: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(catalog, indent=2))
    return path


class LiveRouter(ProcessGroup):
    def __init__(
        self,
        catalog_path: Path,
        database_url: str,
        *,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 60.0,
        serve_args: Sequence[str] = (),
    ) -> None:
        self.catalog_path = catalog_path
        self.database_url = database_url
        self.workdir = workdir
        self.data_dir = workdir / "router-data"
        self.log_path = workdir / "router.log"
        self.extra_env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self.serve_args = list(serve_args)  # e.g. ["--workers", "2"]
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveRouter:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "COMFY_ROUTER_CONFIG": str(self.catalog_path),
            "COMFY_ROUTER_DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        env.pop("COMFYUI_URL", None)  # the catalog decides the backends
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    *(
                        sys.executable,
                        "-m",
                        "router",
                        "serve",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                    ),
                    *self.serve_args,
                ],
                cwd=self.workdir,
                env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its gunicorn workers can be stopped with it as one group
            )
        finally:
            log.close()
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the router exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"the router did not answer /healthz within {self.start_timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 40.0) -> int | None:
        return super().stop(timeout_s)

    def __enter__(self) -> LiveRouter:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
