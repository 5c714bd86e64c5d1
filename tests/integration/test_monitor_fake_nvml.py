"""`python -m monitor --once` with the real pynvml reading a fake libnvidia-ml.so.1 built with gcc
(tests/support/fake_nvml): the whole path from the C ABI to the rows in SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from monitor.rows import usage_log_table
from router.db.database import Database
from tests.support import fake_nvml

ROOT = Path(__file__).resolve().parents[2]
LOST = "NVMLError_GpuIsLost: GPU is lost"


@pytest.fixture(scope="module")
def fake_nvml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if fake_nvml.gcc() is None:
        pytest.skip("gcc is needed to build the fake NVML library")
    return fake_nvml.build(tmp_path_factory.mktemp("fake-nvml"))


def run_once(
    tmp_path: Path, lib_dir: Path, **fake: str | int
) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    env = fake_nvml.env_with(lib_dir, **fake)
    for name in ("DATABASE_URL", "COMFYUI_URL"):
        env.pop(name, None)
    env["COMFY_ROUTER_CONFIG"] = str(tmp_path / "no-catalog.json")
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--database-url", url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    db = Database(url)
    try:
        log = usage_log_table()
        with db.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(log).order_by(log.c.id)).mappings()]
    finally:
        db.dispose()
    return done, rows


def nvml_rows(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    return [{c: r[c] for c in columns} for r in rows if r["source"] == "nvml"]


@pytest.mark.parametrize("gpu_count", [1, 2, 8], ids=["one-gpu", "two-gpus", "eight-gpus"])
def test_once_writes_what_the_library_reports(tmp_path: Path, fake_nvml_dir: Path, gpu_count: int) -> None:
    done, rows = run_once(tmp_path, fake_nvml_dir, gpu_count=gpu_count)
    assert done.returncode == 0, done.stderr
    expected = [fake_nvml.expected_gpu(i) for i in range(gpu_count)]
    assert nvml_rows(rows, list(expected[0])) == expected
    assert [r["source"] for r in rows].count("host") == 1
    assert "nvml: initialised" in done.stderr


def test_a_lost_gpu_is_marked_and_the_others_are_read(tmp_path: Path, fake_nvml_dir: Path) -> None:
    done, rows = run_once(tmp_path, fake_nvml_dir, gpu_count=3, lost_gpu=1)
    assert done.returncode == 0, done.stderr
    got = nvml_rows(rows, ["gpu_index", "gpu_uuid", "vram_used_mb", "up", "error"])
    assert got == [
        {"gpu_index": 0, "gpu_uuid": "GPU-fake-0000-0000", "vram_used_mb": 4096.0, "up": True, "error": None},
        # --once has no earlier sample to know the lost card's uuid from
        {
            "gpu_index": 1,
            "gpu_uuid": None,
            "vram_used_mb": None,
            "up": False,
            "error": "NVMLError_GpuIsLost: GPU is lost",
        },
        {"gpu_index": 2, "gpu_uuid": "GPU-fake-0000-0002", "vram_used_mb": 6144.0, "up": True, "error": None},
    ]
    assert "nvml gpu 1: marked failed: NVMLError_GpuIsLost" in done.stderr


def test_driver_not_loaded_means_no_gpu_rows_and_one_line(tmp_path: Path, fake_nvml_dir: Path) -> None:
    done, rows = run_once(tmp_path, fake_nvml_dir, init_error=9)  # NVML_ERROR_DRIVER_NOT_LOADED
    assert done.returncode == 0, done.stderr
    assert [r["source"] for r in rows] == ["host"]
    assert done.stderr.count("nvml: not available (NVMLError_DriverNotLoaded") == 1


def test_the_fake_is_what_pynvml_loads(fake_nvml_dir: Path) -> None:
    """Guards the other tests: without LD_LIBRARY_PATH honoured they would test nothing."""
    code = "import pynvml; pynvml.nvmlInit(); print(pynvml.nvmlDeviceGetCount(), pynvml.nvmlLib._name)"
    env = fake_nvml.env_with(fake_nvml_dir, gpu_count=5)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.split() == ["5", fake_nvml.LIBRARY_NAME]
    assert os.path.exists(fake_nvml_dir / fake_nvml.LIBRARY_NAME)
