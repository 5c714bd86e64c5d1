"""Builds the fake `libnvidia-ml.so.1` (fake_nvml.c) with gcc, and says what it reports.

A process started with the returned folder on LD_LIBRARY_PATH runs the real pynvml against it.
`expected_gpu(i)` mirrors the numbers in fake_nvml.c, in the units of `vram_usage_log`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"  # the name pynvml's CDLL asks the dynamic loader for


def gcc() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def build(out_dir: Path) -> Path:
    """Compile into `out_dir`; returns the folder to put on LD_LIBRARY_PATH."""
    compiler = gcc()
    if compiler is None:
        raise RuntimeError("no C compiler (gcc) on PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / LIBRARY_NAME
    subprocess.run(
        [compiler, "-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-O2", "-o", str(target), str(SOURCE)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out_dir


def env_with(lib_dir: Path, **settings: str | int) -> dict[str, str]:
    """The current environment with the fake first on LD_LIBRARY_PATH and FAKE_NVML_* settings."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib_dir), env.get("LD_LIBRARY_PATH")]))
    for key, value in settings.items():
        env[f"FAKE_NVML_{key.upper()}"] = str(value)
    return env


def expected_gpu(index: int) -> dict[str, Any]:
    total_mb = 24564.0 if index % 2 else 81920.0
    used_mb = 4096.0 + 1024.0 * index
    return {
        "source": "nvml",
        "gpu_index": index,
        "gpu_uuid": f"GPU-fake-0000-{index:04d}",
        "gpu_name": "NVIDIA Fake RTX 4090" if index % 2 else "NVIDIA Fake A100 80GB",
        "mig_profile": None,
        "vram_total_mb": total_mb,
        "vram_used_mb": used_mb,
        "vram_free_mb": total_mb - used_mb,
        "gpu_util_pct": float((10 * index + 7) % 101),
        "temperature_c": 40.0 + index,
        "power_w": None if index % 2 else 250.0 + index,
        "processes": [{"pid": 4242, "used_mb": 3072.0}, {"pid": 4343, "used_mb": None}] if index == 0 else [],
        "up": True,
        "error": None,
    }
