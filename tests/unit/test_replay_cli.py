"""`comfy-router simulate trace` and `simulate replay` through the console entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main

DESIGN_FIELDS = {
    "requests",
    "deadline_hit_rate",
    "hit_rate_by_urgency",
    "mean_quality",
    "cost_usd",
    "cost_per_image_usd",
    "degraded_share",
    "swaps_per_100",
    "ooms",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
}


def test_generate_then_replay(tmp_path: Path, catalog_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    out = tmp_path / "r.json"
    gen = [
        "simulate",
        "trace",
        "--arrivals",
        "bursty",
        "--load",
        "1.2",
        "--requests",
        "80",
        "--mix",
        "urgent",
    ]
    assert main([*gen, "--seed", "3", "--out", str(trace), "--config", str(catalog_path)]) == 0
    assert "80 requests" in capsys.readouterr().out
    assert len(trace.read_text().splitlines()) == 80
    argv = ["simulate", "replay", "--trace", str(trace), "--config", str(catalog_path), "--json", str(out)]
    assert main([*argv, "--policy", "router", "--policy", "round-robin", "--vram-mb", "30000"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0].split()[:3] == ["policy", "hit%", "realtime"]
    assert any(line.startswith("router ") for line in stdout.splitlines())
    result = json.loads(out.read_text())
    assert set(result) == {"trace", "policies"}
    assert list(result["policies"]) == ["router", "round-robin"]
    assert set(result["policies"]["router"]) >= DESIGN_FIELDS
    assert result["trace"]["requests"] == 80 and result["trace"]["vram_mb"] == 30000
    assert set(result["policies"]["router"]["hit_rate_by_urgency"]) <= {"realtime", "high", "normal"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "trace", "--load", "0", "--out", "x.jsonl"], "load must be > 0"),
        (["simulate", "replay", "--trace", "t.jsonl", "--vram-mb", "100"], "--vram-mb must be more than"),
        (["simulate", "replay", "--trace", "t.jsonl", "--slowdown", "0"], "--slowdown must be > 0"),
        (
            ["simulate", "replay", "--trace", "t.jsonl", "--policy", "oracle", "--record", "sqlite://"],
            "--record",
        ),
        (["simulate", "replay", "--trace", "t.jsonl", "--start", "noon"], "not an ISO 8601 time"),
    ],
    ids=["zero-load", "tiny-vram", "zero-slowdown", "record-without-router", "bad-start"],
)
def test_bad_options_exit_2(
    tmp_path: Path,
    catalog_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    line = {
        "t": 0,
        "purpose": "portrait",
        "urgency": "high",
        "quality": "high",
        "width": 1024,
        "height": 1024,
    }
    (tmp_path / "t.jsonl").write_text(json.dumps(line) + "\n")
    assert main([*argv, "--config", str(catalog_path)]) == 2
    assert message in capsys.readouterr().err
