"""`comfy-router report [--since ...] [--until ...] [--json OUT] [--png OUT]` and `report plan ...`."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from router.catalog import load_catalog
from router.db.database import Database
from router.report import metrics
from router.report.gates import GATES_HELP, Thresholds, judge
from router.report.plan import make_plan, plan_text
from router.report.render import document, text, write_json, write_png
from router.settings import Settings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> timedelta | None:
    m = _DURATION.match(value.strip())
    return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)]) if m else None


def parse_time(value: str, now: datetime, *, future: bool = False) -> datetime:
    """A duration (`24h`, `7d`, `90m`) counted back from now (forward with future=True), or an ISO
    time (UTC when it has no offset)."""
    d = parse_duration(value)
    if d is not None:
        return now + d if future else now - d
    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a duration (24h, 7d) nor an ISO time: {value!r}") from exc
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def main(argv: list[str], now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    if argv[:1] == ["plan"]:
        return _plan(argv[1:], now)
    p = argparse.ArgumentParser(
        prog="comfy-router report",
        description="Cost and pilot-gates report over a time window (`report plan --help`: capacity plan).",
        epilog=GATES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--database-url", default=None, help="default: DATABASE_URL")
    p.add_argument("--since", default="24h", help="ISO time or a duration back from now (default 24h)")
    p.add_argument("--until", default=None, help="ISO time or a duration back from now (default now)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT")
    p.add_argument("--png", type=Path, default=None, metavar="OUT")
    d = Thresholds()
    p.add_argument("--max-error-rate", type=float, default=d.max_error_rate)
    p.add_argument("--p95-flux-s", type=float, default=d.p95_flux_s)
    p.add_argument("--p95-faceswap-s", type=float, default=d.p95_faceswap_s)
    p.add_argument(
        "--min-savings-usd-month",
        type=float,
        default=d.min_savings_usd_month,
        help="default 300 (the seed's R$1,500 a month)",
    )
    p.add_argument("--min-uptime", type=float, default=d.min_uptime)
    args = p.parse_args(argv)
    try:
        since = parse_time(args.since, now)
        until = parse_time(args.until, now) if args.until else now
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    if until <= since:
        p.error("--until must be after --since")
    thresholds = Thresholds(
        args.max_error_rate, args.p95_flux_s, args.p95_faceswap_s, args.min_savings_usd_month, args.min_uptime
    )
    db = Database(args.database_url or Settings().database_url)
    try:
        with db.session() as session:
            stats = metrics.compute(session, since, until)
    finally:
        db.dispose()
    verdict = judge(stats, thresholds)
    print(text(stats, verdict))
    if args.json:
        write_json(args.json, document(stats, thresholds, verdict))
    if args.png:
        write_png(args.png, stats, thresholds)
    return 0


def _plan(argv: list[str], now: datetime) -> int:
    p = argparse.ArgumentParser(
        prog="comfy-router report plan",
        description="The mix of models and tiers that maximises mean quality for N images due by a time.",
    )
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--by", required=True, help="deadline: a duration from now (2h) or an ISO time")
    p.add_argument("--purpose", required=True)
    p.add_argument("--budget-usd", type=float, default=None)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--config", type=Path, default=None, help="catalog (default: COMFY_ROUTER_CONFIG)")
    args = p.parse_args(argv)
    try:
        deadline_s = (parse_time(args.by, now, future=True) - now).total_seconds()
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    if deadline_s <= 0:
        p.error("--by is not in the future")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    catalog = load_catalog(args.config or Settings().config_path)
    plan = make_plan(catalog, args.jobs, args.purpose, deadline_s, args.budget_usd, args.width, args.height)
    print(plan_text(plan))
    return 0 if plan.feasible else 1
