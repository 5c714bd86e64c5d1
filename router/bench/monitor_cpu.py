"""CPU share of the vram_monitor at 1 Hz with 8 GPUs and 2 ComfyUI backends, writing to SQLite.

`python -m monitor --interval-s 1` runs as a subprocess with the real pynvml reading the fake
`libnvidia-ml.so.1` of tests/support/fake_nvml (built here with gcc, found through
LD_LIBRARY_PATH, FAKE_NVML_GPU_COUNT=8), probing 2 simulators (`start_simulator`, in this bench
process, so their CPU is not the monitor's) and writing to a SQLite file of its own.

Start-up (imports, NVML init, Alembic migration, the first sample) is excluded: the baseline is the
monitor's CPU time (psutil, user + system) read as soon as its first sample is in the database.
The share is (CPU after - baseline) / wall time between the two readings, in % of one core.
The retention job's first run is one minute after start, so it is not in the window.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from router.bench._support import (
    ROOT,
    Child,
    child_env,
    figure,
    import_test_support,
    scratch_dir,
    verdict,
    wait_until,
)
from router.catalog import load_catalog
from router.simulator import start_simulator

GOAL_CPU_PCT = 1.0
GPUS = 8
BACKENDS = ("a100", "rtx4090")
ROWS_PER_SAMPLE = GPUS + 1 + len(BACKENDS)  # nvml rows, the host row, one comfyui row per backend


def db_stats(db_path: Path) -> tuple[int, int, str | None]:
    """(rows, distinct sample times, latest ts) of vram_usage_log; zeros before the table exists."""
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=5)) as conn:
            rows, samples, latest = conn.execute(
                "SELECT count(*), count(DISTINCT ts), max(ts) FROM vram_usage_log"
            ).fetchone()
            return int(rows), int(samples), latest
    except sqlite3.Error:
        return 0, 0, None


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def run(quick: bool = False) -> dict[str, Any]:
    with scratch_dir("bench-monitor-") as workdir:
        return run_in(workdir, quick)


def run_in(workdir: Path, quick: bool) -> dict[str, Any]:
    duration_s = 10.0 if quick else 30.0
    import_test_support()
    from tests.support import fake_nvml

    if fake_nvml.gcc() is None:
        raise RuntimeError("gcc is needed to build the fake libnvidia-ml.so.1")
    lib_dir = fake_nvml.build(workdir / "fake-nvml")
    fake_env = fake_nvml.env_with(lib_dir, gpu_count=GPUS)
    env = child_env(**{k: v for k, v in fake_env.items() if k.startswith(("LD_", "FAKE_NVML_"))})
    catalog = load_catalog(ROOT / "models_config.json")
    sims = [start_simulator(catalog, gpu=b, port=0) for b in BACKENDS]
    try:
        argv = [sys.executable, "-m", "monitor", "--interval-s", "1"]
        argv += ["--database-url", f"sqlite:///{workdir / 'monitor.db'}"]
        for backend, sim in zip(BACKENDS, sims, strict=True):
            argv += ["--backend", f"{backend}={sim.url}"]
        m = measure(argv, env, workdir, duration_s)
    finally:
        for sim in sims:
            sim.stop()
    return summarise(m)


def measure(argv: list[str], env: dict[str, str], workdir: Path, duration_s: float) -> dict[str, Any]:
    """Start the monitor, take the baseline at its first sample, read its CPU duration_s later."""
    db_path = workdir / "monitor.db"
    with Child(argv, log_path=workdir / "monitor.log", env=env, cwd=workdir) as mon:
        proc = psutil.Process(mon.pid)
        t_start = time.monotonic()
        if not wait_until(lambda: db_stats(db_path)[0] >= ROWS_PER_SAMPLE or not mon.alive(), 60, 0.02):
            raise RuntimeError(f"no first sample within 60 s:\n{mon.log_tail()}")
        if not mon.alive():
            raise RuntimeError(f"the monitor exited:\n{mon.log_tail()}")
        base_cpu, base_wall = cpu_s(proc), time.monotonic()
        _, base_samples, _ = db_stats(db_path)
        deadline = base_wall + duration_s
        while time.monotonic() < deadline and mon.alive():
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if not mon.alive():
            raise RuntimeError(f"the monitor died during the measurement:\n{mon.log_tail()}")
        end_cpu, end_wall = cpu_s(proc), time.monotonic()
        _, end_samples, _ = db_stats(db_path)
        rss_mb = proc.memory_info().rss / 2**20
    return {
        "base_cpu": base_cpu,
        "startup_wall": base_wall - t_start,
        "wall": end_wall - base_wall,
        "used": end_cpu - base_cpu,
        "window_samples": max(0, end_samples - base_samples),
        "rows": db_stats(db_path)[0],
        "rss_mb": rss_mb,
    }


def summarise(m: dict[str, Any]) -> dict[str, Any]:
    base_cpu, startup_wall, rows, rss_mb = m["base_cpu"], m["startup_wall"], m["rows"], m["rss_mb"]
    wall, used, window_samples = m["wall"], m["used"], m["window_samples"]
    pct = round(100.0 * used / wall, 3)
    per_sample_ms = round(1000.0 * used / window_samples, 2) if window_samples else None
    met = pct <= GOAL_CPU_PCT
    out: dict[str, Any] = {
        "setup": {
            "command": "python -m monitor --interval-s 1 --database-url sqlite:///... --backend x2",
            "gpus": f"{GPUS} fake GPUs (tests/support/fake_nvml built with gcc, LD_LIBRARY_PATH)",
            "backends": f"{len(BACKENDS)} simulators (in the bench process)",
            "database": "SQLite",
            "window_s": round(wall, 2),
        },
        "startup_cpu_s": round(base_cpu, 3),
        "startup_wall_s": round(startup_wall, 2),
        "window_cpu_s": round(used, 3),
        "cpu_pct_of_one_core": pct,
        "samples_in_window": window_samples,
        "cpu_ms_per_sample": per_sample_ms,
        "rows_written": rows,
        "rows_per_sample": ROWS_PER_SAMPLE,
        "rss_mb": round(rss_mb, 1),
        "cpu_time_resolution_ms": round(1000.0 / os.sysconf("SC_CLK_TCK"), 1),
        "goal": f"<= {GOAL_CPU_PCT:g} % of one core",
        "goal_met": met,
    }
    out["figures"] = [
        figure("monitor CPU at 1 Hz (8 GPUs, 2 backends)", pct, "% of one core", f"<= {GOAL_CPU_PCT:g}", met),
        figure("CPU per sample", per_sample_ms, "ms"),
        figure("samples in window", window_samples, f"in {wall:.1f} s"),
        figure("start-up CPU (excluded)", round(base_cpu, 3), "s"),
        figure("RSS", round(rss_mb, 1), "MiB"),
    ]
    print(f"  {out['setup']['gpus']}; {out['setup']['backends']}; SQLite")
    print(
        f"  start-up (to the first sample): {base_cpu:.2f} s CPU in {startup_wall:.2f} s (excluded);"
        f" window {wall:.1f} s: {used * 1000:.0f} ms CPU, {window_samples} samples"
        f" ({per_sample_ms} ms CPU/sample), {rows} rows in all, RSS {rss_mb:.0f} MiB"
    )
    tick = out["cpu_time_resolution_ms"]
    print(
        f"  monitor CPU: {pct:.3f} % of one core (CPU times in {tick:g} ms ticks);"
        f" goal <= {GOAL_CPU_PCT:g} %: {verdict(met)}"
    )
    return out
