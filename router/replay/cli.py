"""`comfy-router simulate trace ...` (generate a trace) and `comfy-router simulate replay ...`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from router.catalog import CatalogError, load_catalog
from router.catalog.schema import Catalog
from router.replay import capacity, generate
from router.replay.generate import ARRIVALS, TraceSpec, generate_trace
from router.replay.run import POLICIES, PolicyRun, ReplayOptions, replay_policy, result_json
from router.replay.scenarios import URGENCY_MIXES
from router.replay.trace import TraceError, read_trace, write_trace

EXIT_ERROR = 2


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return EXIT_ERROR


def _catalog(path: Path | None) -> Catalog:
    if path is None:
        from router.settings import Settings

        path = Settings().config_path
    return load_catalog(path)


def trace_main(argv: list[str]) -> int:
    prog = "comfy-router simulate trace"
    p = argparse.ArgumentParser(
        prog=prog,
        description="Generate a trace (JSON Lines, one request a line) for `simulate replay`.",
        epilog=(capacity.__doc__ or "")
        + "\n"
        + (generate.__doc__ or "")
        + "\nUrgency mixes: "
        + "; ".join(f"{k}: {dict(v)}" for k, v in URGENCY_MIXES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arrivals", choices=ARRIVALS, default="poisson", help="arrival process")
    p.add_argument("--load", type=float, default=0.8, help="mean arrival rate / fleet capacity (see below)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--requests", type=int, default=None, help="number of requests (default 1000)")
    size.add_argument("--duration-s", type=float, default=None, help="or: seconds of arrivals")
    p.add_argument("--mix", choices=list(URGENCY_MIXES), default="mixed", help="urgency mix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="the trace file to write (.jsonl)")
    p.add_argument("--config", type=Path, default=None, help="the catalog (default: COMFY_ROUTER_CONFIG)")
    args = p.parse_args(argv)
    requests = args.requests if args.requests is not None or args.duration_s is not None else 1000
    try:
        catalog = _catalog(args.config)
        spec = TraceSpec(args.arrivals, args.load, args.mix, args.seed, requests, args.duration_s)
        trace = generate_trace(catalog, spec)
        cap = capacity.fleet_capacity_per_s(catalog)
    except (CatalogError, ValueError) as exc:
        return _fail(prog, str(exc))
    if not trace:
        return _fail(prog, "no request arrived in that duration: lengthen --duration-s or raise --load")
    try:
        n = write_trace(args.out, trace)
    except OSError as exc:
        return _fail(prog, f"cannot write {args.out}: {exc}")
    print(
        f"{args.out}: {n} requests over {trace[-1].t:.0f} s ({args.arrivals}, load {args.load:g} of a "
        f"capacity of {cap:.4f} requests/s, mix {args.mix}, seed {args.seed})"
    )
    return 0


def replay_main(argv: list[str]) -> int:
    prog = "comfy-router simulate replay"
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Replay a trace through the real selector and degrade logic and through each baseline, "
            "against a simulated fleet from the catalog on a virtual clock. Prints a table; --json "
            "writes {trace, policies}."
        ),
    )
    p.add_argument("--trace", type=Path, required=True, help="a JSON Lines trace (simulate trace)")
    p.add_argument(
        "--policy", action="append", choices=list(POLICIES), default=None, help="repeat; default: all"
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--seed", type=int, default=0, help="seed of the true durations' noise")
    p.add_argument("--vram-mb", type=int, default=None, help="force every GPU's VRAM (MiB): low-VRAM fleet")
    p.add_argument("--slowdown", type=float, default=1.0, help="multiply every true duration")
    p.add_argument("--config", type=Path, default=None, help="the catalog (default: COMFY_ROUTER_CONFIG)")
    p.add_argument("--record", metavar="DATABASE_URL", default=None, help="write the router's jobs there")
    p.add_argument(
        "--start",
        default=None,
        help="ISO 8601 wall time of the trace's t=0 for --record (default: today 00:00 UTC)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    policies = list(dict.fromkeys(args.policy or POLICIES))
    if args.record and "router" not in policies:
        return _fail(prog, "--record writes the router policy's jobs: include --policy router")
    try:
        start = _start(args.start)
        catalog = _catalog(args.config)
        requests = read_trace(args.trace, catalog)
        options = ReplayOptions(seed=args.seed, slowdown=args.slowdown, vram_mb=args.vram_mb, start=start)
        runs = _run_all(catalog, requests, policies, options, quiet=args.quiet)
    except (CatalogError, TraceError, ValueError) as exc:
        return _fail(prog, str(exc))
    result = result_json(requests, runs, options, str(args.trace), catalog)
    print(table(result))
    wall = sum(r.wall_s for r in runs.values())
    print(
        f"{len(requests)} requests x {len(runs)} policies in {wall:.2f} s "
        f"({len(requests) * len(runs) / wall:,.0f} requests/s)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    if args.record:
        return _record(prog, args.record, runs["router"], start, args.seed)
    return 0


def _start(value: str | None) -> datetime:
    if value is None:
        today = datetime.now(UTC).date()
        return datetime(today.year, today.month, today.day, tzinfo=UTC)
    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"--start {value!r} is not an ISO 8601 time (2026-01-31T00:00:00Z)") from exc
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _run_all(
    catalog: Catalog, requests: list[Any], policies: list[str], options: ReplayOptions, *, quiet: bool
) -> dict[str, PolicyRun]:
    disable = quiet or not sys.stderr.isatty()
    with tqdm(total=len(requests) * len(policies), unit="req", file=sys.stderr, disable=disable) as bar:
        runs = {}
        for name in policies:
            bar.set_description(name)
            runs[name] = replay_policy(catalog, requests, name, options, on_arrival=bar.update)
    return runs


def _record(prog: str, url: str, run: PolicyRun, start: datetime, seed: int) -> int:
    from sqlalchemy.exc import IntegrityError, OperationalError

    from router.db.database import Database
    from router.replay.record import record_replay

    db = Database(url)
    try:
        db.migrate()
        counts = record_replay(db, run.records, start, seed)
    except IntegrityError:
        return _fail(prog, f"this replay (start {start.isoformat()}, seed {seed}) is already recorded there")
    except OperationalError as exc:
        return _fail(prog, f"cannot write to the database: {str(exc).splitlines()[0]}")
    finally:
        db.dispose()
    print(f"recorded {counts['jobs']} jobs and {counts['attempts']} attempts from {start.isoformat()}")
    return 0


COLUMNS = (
    ("policy", 15),
    ("hit%", 6),
    ("realtime", 8),
    ("high", 6),
    ("normal", 6),
    ("batch", 6),
    ("quality", 7),
    ("hit x q", 7),
    ("cost $", 8),
    ("$/image", 8),
    ("degr%", 6),
    ("swaps/100", 9),
    ("ooms", 5),
    ("p50 s", 7),
    ("p95 s", 7),
    ("p99 s", 7),
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(result: dict[str, Any]) -> str:
    lines = [
        "  ".join(name.rjust(width) if i else name.ljust(width) for i, (name, width) in enumerate(COLUMNS))
    ]
    for name, m in result["policies"].items():
        by_u = m["hit_rate_by_urgency"]
        cells = [
            name,
            _pct(m["deadline_hit_rate"]),
            _pct(by_u.get("realtime")),
            _pct(by_u.get("high")),
            _pct(by_u.get("normal")),
            _pct(by_u.get("batch")),
            _num(m["mean_quality"], ".1f"),
            _num(m["hit_x_quality"], ".1f"),
            _num(m["cost_usd"], ".3f"),
            _num(m["cost_per_image_usd"], ".5f"),
            _pct(m["degraded_share"]),
            _num(m["swaps_per_100"], ".1f"),
            str(m["ooms"]),
            _num(m["latency_p50_s"], ".1f"),
            _num(m["latency_p95_s"], ".1f"),
            _num(m["latency_p99_s"], ".1f"),
        ]
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
            )
        )
    trace = result["trace"]
    lines.append(
        f"trace {trace['source']}: {trace['requests']} requests over {trace['duration_s']:.0f} s; seed "
        f"{trace['seed']}, slowdown {trace['slowdown']:g}, VRAM {trace['vram_mb'] or 'as in the catalog'}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Dispatch `trace` and `replay` (called from router.cli's `simulate`)."""
    command, rest = argv[0], argv[1:]
    if command == "trace":
        return trace_main(rest)
    if command == "replay":
        return replay_main(rest)
    raise ValueError(f"not a replay command: {command}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
