"""Driving a real n8n (installed by scripts/install-n8n.sh) from tests: CLI commands and `n8n start`.

Every n8n here runs with its own N8N_USER_FOLDER (its SQLite database, encryption key and settings),
telemetry and calls home switched off, and `$env` readable by expressions (the workflows read
COMFY_ROUTER_URL from the environment). `n8n execute` and `n8n start` may run at once on the same
folder as long as their task brokers use different ports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from tests.support.postgres import free_port
from tests.support.process_group import ProcessGroup

N8N_VERSION = "2.8.4"
ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install-n8n.sh"


def cache_dir() -> Path:
    env = os.environ.get("N8N_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("HOME") or Path.home()) / ".cache" / "comfy-router" / f"n8n-{N8N_VERSION}"


def find_n8n() -> Path | None:
    """N8N_BIN, else the n8n installed by scripts/install-n8n.sh (its stamp proves the install is whole)."""
    explicit = os.environ.get("N8N_BIN")
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    root = cache_dir()
    binary = root / "node_modules" / ".bin" / "n8n"
    if (root / f".installed-n8n-{N8N_VERSION}").exists() and binary.exists():
        return binary
    return None


def parse_raw_output(text: str) -> dict[str, Any]:
    """`n8n execute --rawOutput` prints log lines first: the run is the JSON object from the first `{`."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict) and "data" in value:
            return value
        start = text.find("{", start + 1)
    raise ValueError(f"no execution JSON in n8n's output:\n{text[-3000:]}")


class ExecutionResult:
    """The run data of one `n8n execute --rawOutput`."""

    def __init__(self, raw: dict[str, Any], returncode: int, output: str) -> None:
        self.raw = raw
        self.returncode = returncode
        self.output = output
        self.result = raw["data"]["resultData"]

    @property
    def error(self) -> Any:
        return self.result.get("error")

    @property
    def last_node(self) -> str | None:
        name = self.result.get("lastNodeExecuted")
        return str(name) if name is not None else None

    @property
    def nodes_run(self) -> list[str]:
        return list(self.result["runData"])

    def runs(self, node: str) -> int:
        return len(self.result["runData"].get(node, []))

    def items(self, node: str, *, output: int = 0, run: int = -1) -> list[dict[str, Any]]:
        """The JSON of the items `node` sent out of `output` in its run `run` (the last by default)."""
        data = self.result["runData"][node][run].get("data") or {}
        outputs = data.get("main") or []
        if output >= len(outputs) or outputs[output] is None:
            return []
        return [item["json"] for item in outputs[output]]


class N8n(ProcessGroup):
    def __init__(self, binary: Path, user_folder: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.binary = binary
        self.user_folder = user_folder
        self.user_folder.mkdir(parents=True, exist_ok=True)
        self.cli_broker_port = free_port()
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = user_folder / "n8n-start.log"

    def env(self, **overrides: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("N8N_")}
        base.update(
            {
                "N8N_USER_FOLDER": str(self.user_folder),
                "N8N_DIAGNOSTICS_ENABLED": "false",
                "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
                "N8N_TEMPLATES_ENABLED": "false",
                "N8N_PERSONALIZATION_ENABLED": "false",
                "N8N_HIRING_BANNER_ENABLED": "false",
                "N8N_BLOCK_ENV_ACCESS_IN_NODE": "false",
                "N8N_RUNNERS_BROKER_PORT": str(self.cli_broker_port),
                "N8N_LOG_LEVEL": "info",
            }
        )
        base.update(self.extra_env)
        base.update(overrides)
        return base

    def cli(
        self, *args: str, timeout_s: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args],
            env=self.env(),
            cwd=self.user_folder,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"n8n {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def import_workflows(self, paths: Sequence[Path]) -> None:
        folder = self.user_folder / "import"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for p in paths:
            shutil.copy(p, folder / p.name)
        self.cli("import:workflow", "--separate", f"--input={folder}")

    def import_credentials(self, path: Path) -> None:
        self.cli("import:credentials", f"--input={path}")

    def publish(self, workflow_id: str) -> None:
        self.cli("publish:workflow", f"--id={workflow_id}")

    def execute(self, workflow_id: str, *, timeout_s: float = 120.0) -> ExecutionResult:
        proc = self.cli("execute", f"--id={workflow_id}", "--rawOutput", timeout_s=timeout_s, check=False)
        text = proc.stdout + "\n" + proc.stderr
        return ExecutionResult(parse_raw_output(proc.stdout), proc.returncode, text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> N8n:
        self.port = free_port()
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "start"],
                env=self.env(
                    N8N_LISTEN_ADDRESS="127.0.0.1",
                    N8N_PORT=str(self.port),
                    N8N_SECURE_COOKIE="false",
                    N8N_RUNNERS_BROKER_PORT=str(free_port()),
                ),
                cwd=self.user_folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its task runner too can be stopped as one group
            )
        finally:
            log.close()
        return self

    def wait_for_webhook(self, path: str, body: Any, *, timeout_s: float = 60.0) -> requests.Response:
        """POST to the production webhook until n8n has registered it (404 before), bounded."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"n8n start exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = requests.post(f"{self.url}/webhook/{path}", json=body, timeout=10)
                # 404 until the webhook is registered; "n8n is starting up" (503) before that.
                starting = r.status_code == 503 or "starting up" in r.text
                if r.status_code != 404 and not starting:
                    return r
                last = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise RuntimeError(
            f"webhook {path} did not answer within {timeout_s:.0f} s ({last}):\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 20.0) -> int | None:
        return super().stop(timeout_s)
