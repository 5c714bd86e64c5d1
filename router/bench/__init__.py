"""`comfy-router bench` (`make bench`): prints figures and writes one JSON report."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.bench import selection


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="comfy-router bench", description="Benchmarks; figures and a JSON report."
    )
    p.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    p.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    p.add_argument("--only", action="append", default=None, help="run only these sections")
    args = p.parse_args(argv)
    sections = {"selection": selection.run}
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "quick": args.quick,
        "results": {},
    }
    for name, fn in sections.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        report["results"][name] = fn(quick=args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
