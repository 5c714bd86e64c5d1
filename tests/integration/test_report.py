"""`comfy-router report` on PostgreSQL with a handful of rows written by hand.

Window 2026-11-01 00:00 .. 2026-11-02 00:00 UTC (one day, so 30 days = 30 x the day). Requests:

    request  model / tier                 attempts (outcome, seconds)          GPU $   hosted $
    j1       flux1-dev-fp8 standard       ok 10 (estimated 8)                  0.010   0.025
    j2       flux1-dev-fp8 standard       ok 20 (estimated 20)                 0.020   0.025
    j3       flux1-dev-fp8 standard/draft timeout 30 (est. 25), degraded 10    0.035   0.025
    j4       flux1-dev-fp8 standard       backend_error 5                      0.000   -
    j5       faceswap-reactor high        ok 100                               0.050   0.200
    j6       flux1-dev-fp8 standard       cancelled (left out of the rates)    0.002   -
    direct   sdxl-base (no job, no tier)  ok 3                                 0.003   0.004
    old      flux1-dev-fp8 the day before (outside the window)                 9.000   -

Counted requests 6 (j6 cancelled), failed 1 (j4): error rate 1/6.
FLUX latencies 10, 20, 40 (j3: first start to last finish), 5: p95 rank 0.95 x 3 = 2.85, so
20 + 0.85 x (40 - 20) = 37 s. Face swap p95 = 100 s.
Savings: hosted 0.025 x 3 + 0.2 + 0.004 = 0.279; GPU 0.01 + 0.02 + 0.035 + 0 + 0.05 + 0.002 + 0.003
= 0.12; savings 0.159; projected 30 x 0.159 = 4.77 USD.
Uptime: a100 3 of 4 samples up (0.75), rtx4090 2 of 2 (1.0): worst 0.75.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from router.cli import main as cli_main
from router.db.database import Database
from router.db.models import Job, ModelUsageLog, VramUsageLog
from router.report import metrics

pytestmark = pytest.mark.postgres

DAY = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW = ["--since", "2026-11-01T00:00:00Z", "--until", "2026-11-02T00:00:00Z"]


def at(hour: int, seconds: float = 0.0) -> datetime:
    return DAY + timedelta(hours=hour, seconds=seconds)


def _job(session: Any, job_id: str, model: str, purpose: str, status: str, start: datetime) -> None:
    session.add(
        Job(
            id=job_id,
            created_at=start,
            purpose=purpose,
            urgency="normal",
            deadline_s=60.0,
            quality_target="standard",
            request={},
            status=status,
            model_name=model,
        )
    )


def _attempt(
    session: Any,
    job_id: str | None,
    attempt: int,
    model: str,
    tier: str | None,
    purpose: str | None,
    start: datetime,
    seconds: float,
    outcome: str,
    cost: float,
    hosted: float | None = None,
    estimated: float | None = None,
    quality: float | None = None,
    degraded: bool = False,
) -> None:
    session.add(
        ModelUsageLog(
            job_id=job_id,
            attempt=attempt,
            source="router" if job_id else "direct",
            started_at=start,
            finished_at=None if outcome == "running" else start + timedelta(seconds=seconds),
            backend="a100",
            model_name=model,
            tier=tier,
            purpose=purpose,
            steps=20,
            estimated_s=estimated,
            actual_s=seconds,
            outcome=outcome,
            estimated_cost_usd=cost,
            cost_usd=cost,
            hosted_usd=hosted,
            quality_score=quality,
            degraded=degraded,
        )
    )


def seed(db: Database) -> None:
    flux, swap = "flux1-dev-fp8", "faceswap-reactor"
    with db.session() as s:
        ids = {name: str(uuid.uuid4()) for name in ("j1", "j2", "j3", "j4", "j5", "j6", "old")}
        for name, model, purpose, status, hour in [
            ("j1", flux, "text-to-image", "succeeded", 10),
            ("j2", flux, "portrait", "succeeded", 11),
            ("j3", flux, "portrait", "succeeded", 12),
            ("j4", flux, "portrait", "failed", 13),
            ("j5", swap, "face-swap", "succeeded", 14),
            ("j6", flux, "portrait", "cancelled", 15),
        ]:
            _job(s, ids[name], model, purpose, status, at(hour))
        _job(s, ids["old"], flux, "portrait", "failed", DAY - timedelta(hours=1))
        s.flush()
        _attempt(s, ids["j1"], 1, flux, "standard", "text-to-image", at(10), 10, "ok", 0.01, 0.025, 8, 81)
        _attempt(s, ids["j2"], 1, flux, "standard", "portrait", at(11), 20, "ok", 0.02, 0.025, 20, 81)
        _attempt(s, ids["j3"], 1, flux, "standard", "portrait", at(12), 30, "timeout", 0.03, None, 25)
        _attempt(
            s, ids["j3"], 2, flux, "draft", "portrait", at(12, 30), 10, "degraded", 0.005, 0.025, 10, 68, True
        )
        _attempt(s, ids["j4"], 1, flux, "standard", "portrait", at(13), 5, "backend_error", 0.0)
        _attempt(s, ids["j5"], 1, swap, "high", "face-swap", at(14), 100, "ok", 0.05, 0.2, 90, 80)
        _attempt(s, ids["j6"], 1, flux, "standard", "portrait", at(15), 2, "cancelled", 0.002)
        _attempt(s, None, 1, "sdxl-base", None, None, at(16), 3, "ok", 0.003, 0.004)
        _attempt(
            s, ids["old"], 1, flux, "standard", "portrait", DAY - timedelta(hours=1), 500, "timeout", 9.0
        )
        for backend, ups in [("a100", [True, True, False, True]), ("rtx4090", [True, True])]:
            for i, up in enumerate(ups):
                s.add(VramUsageLog(ts=at(9, 30 * i), host="h", source="comfyui", backend=backend, up=up))
        s.add(
            VramUsageLog(ts=DAY - timedelta(hours=2), host="h", source="comfyui", backend="rtx4090", up=False)
        )


def test_numbers_match_the_hand_computation(pg_db: Database) -> None:
    seed(pg_db)
    with pg_db.session() as s:
        stats = metrics.compute(s, DAY, DAY + timedelta(days=1))
    assert (stats.requests, stats.failed_requests) == (6, 1)
    assert stats.error_rate == pytest.approx(1 / 6)
    assert stats.p95("FLUX") == pytest.approx(37.0)
    assert stats.p95("Face swap") == pytest.approx(100.0)
    assert stats.hosted_usd == pytest.approx(0.279)
    assert stats.gpu_cost_usd == pytest.approx(0.12)
    assert stats.savings_usd == pytest.approx(0.159)
    assert stats.projected_monthly_savings_usd == pytest.approx(4.77)
    assert stats.uptime_by_backend == pytest.approx({"a100": 0.75, "rtx4090": 1.0})
    rung = next(m for m in stats.models if (m.model_name, m.tier) == ("flux1-dev-fp8", "standard"))
    # j1, j2, j3's first attempt, j4 (j6 cancelled is left out): 2 images of 4 runs.
    assert (rung.runs, rung.images, rung.success_rate) == (4, 2, 0.5)
    assert rung.p50_s == pytest.approx(15.0)
    # (10 - 8) / 8 = 25 %, 0 %, (30 - 25) / 25 = 20 %: mean 15 %.
    assert rung.mean_estimate_error_pct == pytest.approx(15.0)
    assert rung.cost_usd == pytest.approx(0.06)
    assert rung.gpu_cost_per_image_usd == pytest.approx(0.03)
    assert rung.cost_per_quality_point_usd == pytest.approx(0.03 / 81)
    draft = next(m for m in stats.models if (m.model_name, m.tier) == ("flux1-dev-fp8", "draft"))
    assert draft.degraded_share == 1.0


# Observed: error rate 1/6 = 0.167, FLUX p95 37, face swap p95 100, worst uptime 0.75, savings 4.77/month.
LENIENT = ["--max-error-rate", "0.2", "--min-uptime", "0.7", "--min-savings-usd-month", "4"]


@pytest.mark.parametrize(
    ("extra", "verdict"),
    [
        pytest.param([], "GO", id="lenient-thresholds-go"),
        pytest.param(["--p95-flux-s", "36"], "STOP", id="flux-p95-just-over-stop"),
        pytest.param(["--p95-faceswap-s", "99"], "STOP", id="faceswap-p95-just-over-stop"),
        pytest.param(["--min-uptime", "0.8"], "STOP", id="uptime-stop"),
        pytest.param(["--min-savings-usd-month", "5"], "STOP", id="savings-below-minimum-stop"),
        pytest.param(["--max-error-rate", "0.1"], "STOP", id="error-rate-under-twice-stop"),
        pytest.param(["--max-error-rate", "0.08"], "ABORT", id="error-rate-over-twice-abort"),
    ],
)
def test_cli_verdict_flips_with_thresholds(
    pg_db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], verdict: str
) -> None:
    seed(pg_db)
    out = tmp_path / "report.json"
    rc = cli_main(["report", "--database-url", pg_db.url, *WINDOW, *LENIENT, *extra, "--json", str(out)])
    assert rc == 0
    assert f"VERDICT: {verdict}" in capsys.readouterr().out
    assert json.loads(out.read_text())["verdict"]["verdict"] == verdict


def test_cli_prints_a_table_and_writes_json_and_png(
    pg_db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(pg_db)
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    assert (
        cli_main(["report", "--database-url", pg_db.url, *WINDOW, "--json", str(js), "--png", str(png)]) == 0
    )
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(line for line in lines if line.startswith("model "))
    row = next(line for line in lines if line.startswith("faceswap-reactor"))
    assert row.index("high") == header.index("tier")  # columns aligned
    assert "VERDICT: ABORT" in printed  # defaults: 1/6 errors is over twice 5 %
    doc = json.loads(js.read_text())
    assert doc["error_rate"] == pytest.approx(1 / 6)
    assert doc["projected_monthly_savings_usd"] == pytest.approx(4.77)
    assert doc["thresholds"]["max_error_rate"] == 0.05
    assert {g["name"]: g["status"] for g in doc["verdict"]["gates"]}["worst backend uptime"] == "MISS"
    with Image.open(png) as img:
        assert img.format == "PNG"
        assert img.size[0] > 500


def test_cli_on_an_empty_window_says_no_data(pg_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", "--database-url", pg_db.url, *WINDOW]) == 0
    printed = capsys.readouterr().out
    assert "NO DATA" in printed
    assert "VERDICT: STOP - no requests" in printed


@pytest.mark.parametrize(
    ("jobs", "code", "says"),
    [
        pytest.param("20", 0, "mean quality", id="feasible"),
        pytest.param("100000", 1, "INFEASIBLE", id="infeasible"),
    ],
)
def test_plan_cli_exit_codes(
    catalog_path: Path, capsys: pytest.CaptureFixture[str], jobs: str, code: int, says: str
) -> None:
    argv = [
        "report",
        "plan",
        "--config",
        str(catalog_path),
        "--jobs",
        jobs,
        "--by",
        "1h",
        "--purpose",
        "portrait",
    ]
    assert cli_main(argv) == code
    assert says in capsys.readouterr().out
