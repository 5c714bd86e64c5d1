"""update_models_config.py --benchmark times models on a (simulated) ComfyUI and fits their times."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from router.catalog import load_catalog
from router.catalog.update.cli import main
from router.simulator import start_simulator
from router.simulator.testing import fast_catalog
from tests.conftest import ROOT


def test_benchmark_fits_the_real_per_step_time_of_a_slower_gpu(tmp_path: Path) -> None:
    fast = fast_catalog(load_catalog(ROOT / "models_config.json"), per_step_s=0.03, base_s=0.02, load_s=0.05)
    keep = {"sdxl-base", "sd15"}
    cat = fast.model_copy(update={"models": tuple(m for m in fast.models if m.id in keep)})
    sim = start_simulator(cat, gpu="a100", port=0, slowdown=2.0)
    try:
        backends = [b.model_dump(mode="json") for b in cat.backends]
        backends[0]["url"] = sim.url
        doc = {**cat.model_dump(mode="json", by_alias=True, exclude_none=True), "backends": backends}
        path = tmp_path / "models_config.json"
        path.write_text(json.dumps(doc, indent=2))
        out = io.StringIO()
        code = main(
            [
                "--config",
                str(path),
                "--comfyui-url",
                sim.url,
                "--benchmark",
                "--benchmark-steps",
                "4,8,16",
                "--benchmark-runs",
                "2",
            ],
            out=out,
        )
        assert code == 1, out.getvalue()
        fitted = load_catalog(path)
        for model in fitted.models:
            assert model.calibration is not None and model.calibrated
            tm = model.calibration.backend_time_models["a100"]
            # The GPU is twice as slow as the catalog says: 0.03 s/step becomes 0.06 s/step.
            assert tm.per_step_s == pytest.approx(0.06, rel=0.2), (model.id, tm)
        assert (tmp_path / "models_config.json.bak").exists()
    finally:
        sim.stop()


def test_benchmark_needs_a_url(tmp_path: Path) -> None:
    assert main(["--config", str(ROOT / "models_config.json"), "--benchmark", "--calibrate"]) == 2
