"""The `comfy-router` command: serve, monitor, simulate, catalog, bench."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from router.settings import Settings


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, Callable[[list[str]], int]] = {
        "serve": _serve,
        "monitor": _monitor,
        "simulate": _simulate,
        "catalog": _catalog,
        "bench": _bench,
        "report": _report,
        "keys": _keys,
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: comfy-router {" + ",".join(commands) + "} [options]  (each takes --help)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a dozen "setup plugin" lines on every start
    return commands[argv[0]](argv[1:])


def _serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="comfy-router serve", description="Run the router under gunicorn.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="processes (state is shared through the database)")
    p.add_argument("--threads", type=int, default=16, help="threads per process")
    args = p.parse_args(argv)
    if args.workers > 1:
        _prometheus_multiprocess()  # before prometheus-client is imported (router.api.app)
    from router.api.app import catalog_store, create_app
    from router.backends.simulated import start_missing_simulators
    from router.serve import serve

    settings = Settings()
    # The simulators run in the gunicorn master, shared by every worker; the app itself is built
    # in each worker after the fork (database pools and threads do not survive a fork).
    catalogs = catalog_store(settings, None)
    simulated = start_missing_simulators(catalogs)
    serve(
        args.host,
        args.port,
        args.workers,
        args.threads,
        lambda: create_app(settings, catalog=catalogs, simulated=simulated),
    )
    return 0


def _prometheus_multiprocess() -> None:
    """Counters shared by every gunicorn worker through files (prometheus-client's multiprocess
    mode): a directory from PROMETHEUS_MULTIPROC_DIR, emptied, or a new temporary one."""
    import os
    import tempfile

    if "prometheus_client" in sys.modules:
        logging.getLogger(__name__).warning(
            "prometheus-client was imported before serve: /metrics counts each worker apart"
        )
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        for stale in Path(given).glob("*.db"):  # counts of an earlier run would add up
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="comfy-router-metrics-")


def _monitor(argv: list[str]) -> int:
    from monitor.__main__ import main as monitor_main

    return int(monitor_main(argv))


def _simulate(argv: list[str]) -> int:
    if argv[:1] in (["trace"], ["replay"]):
        from router.replay.cli import main as replay_main

        return int(replay_main(argv))
    if argv[:1] in (["-h"], ["--help"]):
        print(
            "usage: comfy-router simulate {serve,trace,replay} [options]  (each takes --help)\n"
            "  serve   a simulated ComfyUI backend\n"
            "  trace   generate a request trace (JSON Lines)\n"
            "  replay  replay a trace through the router and the baselines on a virtual clock"
        )
        return 0
    from router.simulator.__main__ import main as simulate_main

    return int(simulate_main(argv))


def _catalog(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="comfy-router catalog", description="Catalog tools.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("schema", help="print the catalog's JSON Schema (for editors)")
    check = sub.add_parser("check", help="validate a catalog file")
    check.add_argument("path", nargs="?", default=None)
    args = p.parse_args(argv)
    from router.catalog import CatalogError, load_catalog
    from router.catalog.schema import Catalog

    if args.cmd == "schema":
        print(json.dumps(Catalog.model_json_schema(by_alias=True), indent=2))
        return 0
    path = args.path or Settings().config_path
    try:
        catalog = load_catalog(path)
    except CatalogError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{path}: valid, {len(catalog.models)} models, {len(catalog.backends)} backends")
    return 0


def _report(argv: list[str]) -> int:
    from router.report.cli import main as report_main

    return int(report_main(argv))


def _keys(argv: list[str]) -> int:
    from router.limits.keys_cli import main as keys_main

    return keys_main(argv)


def _bench(argv: list[str]) -> int:
    from router.bench import main as bench_main

    return int(bench_main(argv))


if __name__ == "__main__":
    raise SystemExit(main())
