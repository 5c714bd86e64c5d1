"""`python update_models_config.py`: refresh the catalog from model files and from real runs.

Exit codes: 0 nothing to change, 1 the catalog changed (or would change, with --dry-run),
2 an error (the message names the file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from router.catalog.loader import CatalogError, parse_catalog
from router.catalog.update.inventory import Inventory, query_comfyui, scan_models_dir
from router.catalog.update.jsonlayout import dump, read_layout
from router.catalog.update.merge import Changes, merge_inventory, unified_diff
from router.catalog.update.writer import write_atomically

log = logging.getLogger("update_models_config")

EXIT_UNCHANGED, EXIT_CHANGED, EXIT_ERROR = 0, 1, 2


class UpdateError(Exception):
    """A failure the operator can fix; the message names the file or the service."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="update_models_config.py",
        description="Add new model files to models_config.json, disable entries whose files are gone, "
        "and calibrate times and quality from the router's logs. Prints the diff; exit 0 no change, "
        "1 changed, 2 error.",
    )
    p.add_argument(
        "--config", type=Path, help="catalog file (default: $COMFY_ROUTER_CONFIG or models_config.json)"
    )
    p.add_argument(
        "--models-dir", type=Path, help="ComfyUI models directory (checkpoints/, diffusion_models/...)"
    )
    p.add_argument(
        "--comfyui-url", help="a running ComfyUI to ask for its model files (/models, /object_info)"
    )
    p.add_argument("--enable-new", action="store_true", help="add new models enabled (default: disabled)")
    p.add_argument("--calibrate", action="store_true", help="fit times and blend ratings from the database")
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $DATABASE_URL or sqlite:///comfy_router.db)"
    )
    p.add_argument("--min-samples", type=int, default=20, help="ok runs needed per model x backend (20)")
    p.add_argument(
        "--rating-weight", type=float, default=20.0, help="pseudo-votes of the catalog's quality (20)"
    )
    p.add_argument(
        "--benchmark",
        action="store_true",
        help="with --comfyui-url: time each enabled model at a few step counts there and fit its times",
    )
    p.add_argument("--benchmark-steps", default="4,8,16", help="step counts to time (4,8,16)")
    p.add_argument("--benchmark-runs", type=int, default=2, help="timed runs per step count (2)")
    p.add_argument(
        "--backend-id", help="catalog backend the benchmark measures (default: the one at the URL)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    p.add_argument("--no-backup", action="store_true", help="do not keep the previous file as <name>.bak")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    return Path(os.environ.get("COMFY_ROUTER_CONFIG") or "models_config.json")


def collect_inventory(models_dir: Path | None, comfyui_url: str | None) -> Inventory:
    inv = Inventory()
    if models_dir is not None:
        try:
            scan_models_dir(models_dir, inv)
        except FileNotFoundError as exc:
            raise UpdateError(str(exc)) from exc
    if comfyui_url:
        from router.comfyui.client import ComfyUIClient

        client = ComfyUIClient(comfyui_url)
        try:
            before = set(inv.scanned_folders)
            answered = query_comfyui(client.models, client.object_info, Inventory())
            if not answered.scanned_folders:
                raise UpdateError(f"ComfyUI at {comfyui_url} listed no model folder: {answered.problems[:1]}")
            for f in answered.files.values():
                inv.add(f)
            inv.scanned_folders = before | answered.scanned_folders
            inv.problems += answered.problems
        finally:
            client.close()
    return inv


def run(args: argparse.Namespace, out: TextIO) -> int:
    path = config_path(args.config)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UpdateError(f"cannot read catalog {path}: {exc.strerror or exc}") from exc
    try:
        parse_catalog(text, path)
    except CatalogError as exc:
        raise UpdateError(str(exc)) from exc
    doc: dict[str, Any] = json.loads(text)
    changes = Changes()

    if args.models_dir is not None or (args.comfyui_url and not args.benchmark):
        inventory = collect_inventory(args.models_dir, args.comfyui_url)
        for problem in inventory.problems:
            log.warning("%s", problem)
        doc, changes = merge_inventory(doc, inventory, enable_new=args.enable_new)
    if args.calibrate:
        from router.catalog.update.calibrate import calibrate_document, read_observations

        url = args.database_url or os.environ.get("DATABASE_URL") or "sqlite:///comfy_router.db"
        observations = read_observations(url)
        doc = calibrate_document(
            doc, observations, changes, min_samples=args.min_samples, rating_weight=args.rating_weight
        )

    if args.benchmark:
        doc = _benchmark(args, text, path, doc, changes)

    new_text = dump(doc, read_layout(text))
    if new_text == text:
        print(f"{path}: no change", file=out)
        if changes.notes:
            print(changes.summary(), file=out)
        return EXIT_UNCHANGED
    try:
        parse_catalog(new_text, path)
    except CatalogError as exc:
        raise UpdateError(f"the updated catalog would be invalid, {path} left as it was: {exc}") from exc
    print(unified_diff(text, new_text, str(path)), end="", file=out)
    print(changes.summary(), file=out)
    if args.dry_run:
        print(f"{path}: dry run, nothing written", file=out)
        return EXIT_CHANGED
    try:
        previous = write_atomically(path, new_text, backup=not args.no_backup)
    except OSError as exc:
        raise UpdateError(f"cannot write catalog {path}: {exc.strerror or exc}") from exc
    print(f"{path}: written" + (f", previous version kept as {previous}" if previous else ""), file=out)
    return EXIT_CHANGED


def _benchmark(
    args: argparse.Namespace, text: str, path: Path, doc: dict[str, Any], changes: Changes
) -> dict[str, Any]:
    from router.catalog.update.benchmark import benchmark
    from router.catalog.update.calibrate import Observations, calibrate_document
    from router.comfyui import ComfyUIClient

    catalog = parse_catalog(text, path)
    url = str(args.comfyui_url).rstrip("/")
    backend_id = args.backend_id or next(
        (b.id for b in catalog.backends if b.url is not None and str(b.url).rstrip("/") == url), "comfyui"
    )
    try:
        steps = [int(x) for x in str(args.benchmark_steps).split(",") if x.strip()]
    except ValueError as exc:
        raise UpdateError(f"--benchmark-steps must be integers separated by commas: {exc}") from exc
    if len(set(steps)) < 2 or min(steps) < 1:
        raise UpdateError("--benchmark-steps needs at least two different positive step counts")
    rows = benchmark(catalog, ComfyUIClient(url), backend_id, steps=steps, runs=max(1, args.benchmark_runs))
    if not rows:
        raise UpdateError(f"no benchmark run succeeded on {url}")
    per_model = min(len(steps) * max(1, args.benchmark_runs), args.min_samples)
    return calibrate_document(
        doc, Observations(runs=rows), changes, min_samples=per_model, rating_weight=args.rating_weight
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.models_dir is None and not args.comfyui_url and not args.calibrate:
        print("error: give --models-dir, --comfyui-url and/or --calibrate", file=sys.stderr)
        return EXIT_ERROR
    if args.benchmark and not args.comfyui_url:
        print("error: --benchmark needs --comfyui-url (the backend to time)", file=sys.stderr)
        return EXIT_ERROR
    if args.min_samples < 1 or args.rating_weight < 0:
        print("error: --min-samples must be >= 1 and --rating-weight >= 0", file=sys.stderr)
        return EXIT_ERROR
    try:
        return run(args, out if out is not None else sys.stdout)
    except UpdateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
