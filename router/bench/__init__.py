"""`comfy-router bench` (`make bench`): prints figures, writes a JSON report and a Markdown table.

Sections (each `run(quick) -> dict` with its figures, goal and whether it is met):
  selection      the pure selector's latency at 10, 200 and 1,000 candidates
  http_select    /select throughput and latency under gunicorn, driven by wrk
  run_overhead   what /select-and-run adds over submitting the same graph to ComfyUI directly
  monitor        CPU share of the vram_monitor at 1 Hz (8 fake GPUs, 2 backends, SQLite)
  grafana_query  the GPU and VRAM dashboard's heaviest panel over 30 days on PostgreSQL
  load           500 concurrent /select-and-run jobs through gunicorn on simulators: errors, overhead, RSS
  replay         trace replay: every policy at loads 0.8 and 1.2 and on a low-VRAM fleet; the issue's goals

A section that cannot run (no PostgreSQL, no gcc...) is reported as failed and the others go on;
the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.bench import (
    calibration,
    grafana_query,
    http_select,
    load,
    monitor_cpu,
    replay,
    run_overhead,
    selection,
)
from router.bench.report import markdown

SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "selection": selection.run,
    "http_select": http_select.run,
    "run_overhead": run_overhead.run,
    "monitor": monitor_cpu.run,
    "grafana_query": grafana_query.run,
    "calibration": calibration.run,
    "load": load.run,
    "replay": replay.run,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="comfy-router bench", description="Benchmarks; figures, a JSON report and a Markdown table."
    )
    p.add_argument("--quick", action="store_true", help="fewer repetitions and shorter runs (a few minutes)")
    p.add_argument(
        "--out", type=Path, default=Path("bench-results/bench.json"), help="JSON report (bench.md beside it)"
    )
    p.add_argument(
        "--only", action="append", default=None, choices=list(SECTIONS), help="run only these sections"
    )
    args = p.parse_args(argv)
    sections = dict(SECTIONS)
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "quick": args.quick,
        "results": {},
    }
    failed = []
    for name, fn in sections.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        try:
            report["results"][name] = fn(quick=args.quick)
        except Exception as exc:  # one section's missing tool must not lose the others' figures
            traceback.print_exc()
            print(f"  section {name} FAILED: {exc}", flush=True)
            report["results"][name] = {"error": f"{type(exc).__name__}: {exc}", "goal_met": False}
            failed.append(name)
    report["finished_at"] = datetime.now(UTC).isoformat()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    md_path = args.out.with_suffix(".md")
    md_path.write_text(markdown(report))
    print(f"report written to {args.out} and {md_path}")
    if failed:
        print(f"sections that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
