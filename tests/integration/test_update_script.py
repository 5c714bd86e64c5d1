"""update_models_config.py end to end: exit codes, diff, atomic write with backup, dry run, DB calibration."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from router.catalog.update.cli import main
from router.db.database import Database
from router.db.models import Feedback, Job, ModelUsageLog
from tests.support.safetensors_files import comfyui_layout, write_family_file
from tests.unit.test_update_calibrate import synthetic_log

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg" / "models_config.json"
    path.parent.mkdir()
    shutil.copy(ROOT / "models_config.json", path)
    return path


@pytest.fixture
def models_root(tmp_path: Path, config: Path) -> Path:
    doc = json.loads(config.read_text())
    return comfyui_layout(tmp_path / "models", {m["id"]: m["files"] for m in doc["models"]})


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(args), out=out), out.getvalue()


def models(path: Path) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in json.loads(path.read_text())["models"]}


def test_script_as_a_subprocess_adds_removes_and_renames(config: Path, models_root: Path) -> None:
    write_family_file(models_root / "checkpoints" / "juggernautXL.safetensors", "sdxl")
    (models_root / "vae" / "qwen_image_vae.safetensors").unlink()
    write_family_file(models_root / "checkpoints" / "v1-5-pruned-emaonly.safetensors", "sd15")
    (models_root / "checkpoints" / "v1-5-pruned-emaonly.safetensors").rename(
        models_root / "checkpoints" / "sd15-renamed.safetensors"
    )
    before = config.read_text()

    cmd = [sys.executable, str(ROOT / "update_models_config.py"), "--models-dir", str(models_root)]
    proc = subprocess.run(
        [*cmd, "--config", str(config)], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )

    assert proc.returncode == 1, proc.stderr
    assert '+      "id": "juggernautxl",' in proc.stdout
    assert '+      "id": "sd15-renamed",' in proc.stdout
    assert "added: 2, disabled: 2," in proc.stdout
    assert "disabled: qwen-image-fp8: missing vae/qwen_image_vae.safetensors" in proc.stdout
    after = models(config)
    assert after["juggernautxl"]["enabled"] is False
    assert after["sd15"]["enabled"] is False
    assert after["qwen-image-fp8"]["enabled"] is False
    assert after["sd15-renamed"]["files"] == {"ckpt_name": "sd15-renamed.safetensors"}
    assert config.with_name("models_config.json.bak").read_text() == before
    again = subprocess.run(
        [*cmd, "--config", str(config)], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert again.returncode == 0, again.stdout + again.stderr


def test_config_from_environment(config: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_ROUTER_CONFIG", str(config))
    write_family_file(models_root / "checkpoints" / "x.safetensors", "sdxl")
    code, _ = run("--models-dir", str(models_root))
    assert code == 1
    assert "x" in models(config)


def test_dry_run_leaves_the_file_byte_identical(config: Path, models_root: Path) -> None:
    write_family_file(models_root / "diffusion_models" / "new-flux.safetensors", "flux1")
    before = config.read_bytes()
    stat_before = config.stat().st_mtime_ns

    code, out = run("--config", str(config), "--models-dir", str(models_root), "--dry-run")

    assert code == 1
    assert '"id": "new-flux"' in out
    assert config.read_bytes() == before
    assert config.stat().st_mtime_ns == stat_before
    assert sorted(p.name for p in config.parent.iterdir()) == ["models_config.json"]


def test_hand_edit_survives_a_real_run(config: Path, models_root: Path) -> None:
    text = config.read_text().replace('"vram_mb": 9500,', '"vram_mb": 9876,', 1)
    config.write_text(text)
    (models_root / "checkpoints" / "v1-5-pruned-emaonly.safetensors").unlink()
    code, out = run("--config", str(config), "--models-dir", str(models_root))
    assert code == 1
    assert models(config)["sdxl-base"]["vram_mb"] == 9876
    diff_lines = [ln for ln in out.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert diff_lines == [
        '-      "hosted_source": "estimate: SD1.5 on hosted APIs is rarely listed any more"',
        '+      "hosted_source": "estimate: SD1.5 on hosted APIs is rarely listed any more",',
        '+      "enabled": false',
    ]


def _bad_json(p: Path) -> None:
    p.write_text("{ not json")


def _invalid_catalog(p: Path) -> None:
    p.write_text(p.read_text().replace('"vram_mb": 9500,', '"vram_mb": -1,', 1))


@pytest.mark.parametrize(
    ("setup", "extra", "expected", "message"),
    [
        pytest.param(None, [], 0, "no change", id="nothing-changed-0"),
        pytest.param("new-file", [], 1, "added: 1", id="changed-1"),
        pytest.param("missing-config", [], 2, "missing.json", id="missing-config-2"),
        pytest.param("bad-json", [], 2, "models_config.json", id="bad-json-2"),
        pytest.param("invalid-catalog", [], 2, "vram_mb", id="invalid-catalog-2"),
        pytest.param("missing-models-dir", [], 2, "does not exist", id="missing-models-dir-2"),
        pytest.param(None, ["--min-samples", "0"], 2, "--min-samples", id="bad-argument-2"),
    ],
)
def test_exit_codes(
    config: Path,
    models_root: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str | None,
    extra: list[str],
    expected: int,
    message: str,
) -> None:
    cfg, mdir = config, models_root
    if setup == "new-file":
        write_family_file(models_root / "checkpoints" / "x.safetensors", "sdxl")
    elif setup == "missing-config":
        cfg = config.with_name("missing.json")
    elif setup == "bad-json":
        _bad_json(config)
    elif setup == "invalid-catalog":
        _invalid_catalog(config)
    elif setup == "missing-models-dir":
        mdir = models_root / "nope"
    before = config.read_bytes()

    code, out = run("--config", str(cfg), "--models-dir", str(mdir), *extra)

    assert code == expected
    assert message in out + capsys.readouterr().err
    if expected != 1:
        assert config.read_bytes() == before


def test_no_source_given_is_an_error(config: Path) -> None:
    assert run("--config", str(config))[0] == 2


def _seed(db: Database, rows: list[Any], ratings: list[tuple[str, str, int]]) -> None:
    t0 = datetime(2025, 5, 1, tzinfo=UTC)
    with db.session() as s:
        for n, r in enumerate(rows):
            s.add(
                ModelUsageLog(
                    started_at=t0 + timedelta(seconds=n), backend=r.backend, model_name=r.model,
                    outcome=r.outcome, steps=r.steps, width=r.width, height=r.height,
                    actual_s=r.actual_s, queue_s=r.queue_s, load_s=r.load_s,
                )
            )  # fmt: skip
        for model, tier, rating in ratings:
            job_id = str(uuid.uuid4())
            s.add(
                Job(
                    id=job_id, created_at=t0, purpose="text-to-image", urgency="normal", deadline_s=60,
                    quality_target="standard", request={}, status="done", model_name=model, tier=tier,
                )
            )  # fmt: skip
            s.flush()
            s.add(Feedback(job_id=job_id, rating=rating, created_at=t0 + timedelta(minutes=1)))


@pytest.mark.postgres
def test_calibrate_from_postgres(config: Path, pg_db: Database) -> None:
    rows = synthetic_log("sdxl-base", "rtx4090", 0.9, 0.15, seed=11)
    rows += synthetic_log("sd15", "a100", 0.3, 0.05, n=12, seed=12)  # below --min-samples
    _seed(db=pg_db, rows=rows, ratings=[("sdxl-base", "standard", 5)] * 10 + [("sdxl-base", "high", 1)] * 4)

    code, out = run("--config", str(config), "--calibrate", "--database-url", pg_db.url)

    assert code == 1, out
    entry = models(config)["sdxl-base"]
    fitted = entry["calibration"]["backend_time_models"]["rtx4090"]
    assert fitted["base_s"] == pytest.approx(0.9, rel=0.10)
    assert fitted["per_step_s"] == pytest.approx(0.15, rel=0.10)
    assert entry["calibrated"] is True
    assert entry["calibration"]["samples"] == 200
    assert entry["tiers"]["standard"]["quality"] == pytest.approx((20 * 67 + 10 * 100) / 30, abs=0.05)
    assert entry["tiers"]["high"]["quality"] == pytest.approx((20 * 74 + 0) / 24, abs=0.05)
    assert "sdxl-base standard: quality 67 -> 78" in out
    assert "15 censored" in out
    assert "calibration" not in models(config)["sd15"]
    assert "sd15 on a100: 12 usable runs, fewer than 20" in out

    # Same data again: times refit to the same values, the ratings are not counted twice.
    code, out = run("--config", str(config), "--calibrate", "--database-url", pg_db.url)
    again = models(config)["sdxl-base"]
    assert again["tiers"] == entry["tiers"]
    assert again["calibration"]["backend_time_models"] == entry["calibration"]["backend_time_models"]
