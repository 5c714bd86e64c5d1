"""The systemd units in deploy/: what the issue asks of them, and systemd's own verdict when available."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted(p.name for p in DEPLOY.glob("*.service")) + sorted(p.name for p in DEPLOY.glob("*.timer"))


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(DEPLOY / name)
    return parser


def test_long_running_service() -> None:
    service = unit("comfy-router-monitor.service")["Service"]
    assert service["ExecStart"].endswith("comfy-router monitor --interval-s 5")
    assert service["Restart"] == "always"
    assert service["EnvironmentFile"] == "/etc/comfy-router/env"


def test_timer_variant_runs_the_oneshot_once_service() -> None:
    timer = unit("comfy-router-monitor.timer")["Timer"]
    once = unit(timer["Unit"])["Service"]
    assert once["Type"] == "oneshot"
    assert once["ExecStart"].endswith("comfy-router monitor --once")
    assert once["EnvironmentFile"] == "/etc/comfy-router/env"
    prune = unit(unit("comfy-router-prune.timer")["Timer"]["Unit"])["Service"]
    assert " monitor --prune" in prune["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists: point it at a stand-in.
    fake = tmp_path / "comfy-router"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/opt/comfy-router/.venv/bin/comfy-router", str(fake))
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
