"""Estimate error before and after `update_models_config.py --calibrate`, on the simulator.

The simulated GPU is slower than the catalog believes (slowdown 1.8). Jobs run through the real
router; their attempts land in model_usage_log; the script fits per-backend times from them; the
router reloads the catalog; the same jobs run again. Error = |actual - estimated| / actual over
warm runs (no model load), the part of the estimate the time model owns.
"""

from __future__ import annotations

import io
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from router.api.app import create_app
from router.bench._support import ROOT, figure
from router.catalog import load_catalog
from router.catalog.store import CatalogStore
from router.catalog.update.cli import main as update_main
from router.db.database import Database
from router.db.models import ModelUsageLog
from router.settings import Settings
from router.simulator import start_simulator
from router.simulator.testing import fast_catalog

MODELS = ("sdxl-base", "sd15")
STEPS = (4, 8, 12, 16, 24)
SLOWDOWN = 1.8
GOAL = "after < before"


def _jobs(client: Any, rounds: int) -> None:
    for _ in range(rounds):
        for model in MODELS:
            for steps in STEPS:
                body = {
                    "purpose": "text-to-image",
                    "urgency": "batch",
                    "prompt": "p",
                    "model": model,
                    "steps": steps,
                    "width": 512,
                    "height": 512,
                }
                r = client.post("/select-and-run", json=body)
                if r.status_code != 200 or r.json["status"] != "succeeded":
                    raise RuntimeError(f"calibration bench job failed: {r.status_code} {r.json}")


def _error_pct(db: Database, after_id: int) -> tuple[float, int]:
    with db.session() as s:
        rows = list(
            s.scalars(
                select(ModelUsageLog).where(
                    ModelUsageLog.id > after_id, ModelUsageLog.outcome == "ok", ModelUsageLog.load_s == 0
                )
            )
        )
    errs = [
        abs(r.actual_s - r.estimated_s) / r.actual_s for r in rows if r.actual_s and r.estimated_s is not None
    ]
    return (100.0 * statistics.mean(errs) if errs else float("nan")), len(errs)


def _last_id(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(ModelUsageLog.id).order_by(ModelUsageLog.id.desc()).limit(1)) or 0


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 2 if quick else 4
    shipped = fast_catalog(
        load_catalog(ROOT / "models_config.json"), per_step_s=0.02, base_s=0.05, load_s=0.05
    )
    catalog = shipped.model_copy(update={"models": tuple(m for m in shipped.models if m.id in MODELS)})
    sim = start_simulator(catalog, gpu="a100", port=0, slowdown=SLOWDOWN)
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp:
        try:
            path = Path(tmp) / "models_config.json"
            doc = catalog.model_dump(mode="json", by_alias=True, exclude_none=True)
            doc["backends"] = [{**doc["backends"][0], "url": sim.url}]
            path.write_text(json.dumps(doc, indent=2))
            db_url = f"sqlite:///{tmp}/bench.db"
            db = Database(db_url)
            db.migrate()
            store = CatalogStore.from_file(path)
            app = create_app(Settings(migrate_on_start=False, data_dir=Path(tmp)), catalog=store, database=db)
            client = app.test_client()
            _jobs(client, rounds)
            before, n_before = _error_pct(db, 0)
            mark = _last_id(db)
            code = update_main(
                [
                    "--config",
                    str(path),
                    "--calibrate",
                    "--database-url",
                    db_url,
                    "--min-samples",
                    "5",
                    "--no-backup",
                ],
                out=io.StringIO(),  # the diff is not the bench's figure
            )
            if code != 1 or client.post("/admin/reload").status_code != 200:
                raise RuntimeError(f"calibration did not change the catalog (exit {code})")
            _jobs(client, rounds)
            after, n_after = _error_pct(db, mark)
            db.dispose()
        finally:
            sim.stop()
    met = after < before
    print(
        f"  GPU {SLOWDOWN}x slower than the catalog; "
        f"{len(MODELS)} models x {len(STEPS)} step counts x {rounds}"
    )
    print(f"  estimate error before calibration: {before:.1f} % ({n_before} warm runs)")
    print(
        f"  estimate error after calibration:  {after:.1f} % ({n_after} warm runs); goal {GOAL}: "
        f"{'met' if met else 'NOT met'}"
    )
    return {
        "slowdown": SLOWDOWN,
        "before_error_pct": round(before, 2),
        "after_error_pct": round(after, 2),
        "goal_met": met,
        "figures": [
            figure("estimate error before --calibrate", round(before, 2), "%"),
            figure("estimate error after --calibrate", round(after, 2), "%", GOAL, met),
        ],
    }
