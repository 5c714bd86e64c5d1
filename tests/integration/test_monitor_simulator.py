"""`comfy-router monitor --once` on this GPU-less machine with the ComfyUI simulator as a backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from router.catalog import Catalog
from router.db.database import Database
from router.db.models import VramUsageLog
from router.simulator import start_simulator


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_once_writes_host_rows_and_a_row_per_backend(
    engine: str, catalog: Catalog, tmp_path: Path, pg_db: Database
) -> None:
    url = f"sqlite:///{tmp_path}/m.db" if engine == "sqlite" else pg_db.url
    sim = start_simulator(catalog, gpu="rtx4090", port=0)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "monitor",
                "--once",
                "--database-url",
                url,
                "--backend",
                f"rtx4090={sim.url}",
                "--backend",
                "gone=http://127.0.0.1:9",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        sim.stop()
    assert out.returncode == 0, out.stderr
    db = Database(url)
    try:
        with db.session() as s:
            rows = list(s.scalars(select(VramUsageLog)))
    finally:
        db.dispose()
    by_source = {r.source for r in rows}
    assert "host" in by_source and "nvml" not in by_source  # no GPU here: no NVML rows, not zeros
    backends = {r.backend: r for r in rows if r.source == "comfyui"}
    assert set(backends) == {"rtx4090", "gone"}
    assert backends["rtx4090"].up is True and backends["rtx4090"].vram_total_mb == pytest.approx(
        24564, rel=0.01
    )
    assert backends["gone"].up is False and backends["gone"].error
    assert backends["gone"].vram_total_mb is None  # a missing reading is NULL, never 0
