"""Selection latency of the pure selector at 10, 200 and 1,000 candidates (goal: p99 <= 1 ms at 200)."""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path
from typing import Any

from router.bench._support import figure
from router.catalog import Catalog, load_catalog
from router.catalog.schema import TIER_ORDER
from router.selection import BackendView, Need, select

GOAL_P99_MS_AT_200 = 1.0


def synthetic_fleet(n_models: int, n_tiers: int, n_backends: int) -> tuple[Catalog, list[BackendView]]:
    """Every candidate serves the purpose: the worst case (no cheap purpose rejections)."""
    tiers = {
        t: {"steps": 4 + 8 * i, "cfg": 5.0, "quality": 40 + 15 * i + (m % 7)}
        for m in range(1)
        for i, t in enumerate(TIER_ORDER[:n_tiers])
    }
    models = [
        {
            "id": f"model-{m}",
            "family": "bench",
            "workflow": "checkpoint_txt2img",
            "files": {"ckpt_name": f"m{m}.safetensors"},
            "purposes": ["text-to-image"],
            "vram_mb": 4000 + 1500 * (m % 20),
            "load_s": 3 + m % 10,
            "time": {"base_s": 0.5, "per_step_s": 0.05 + 0.02 * (m % 9)},
            "tiers": {t: {**spec, "quality": spec["quality"] + m % 5} for t, spec in tiers.items()},
        }
        for m in range(n_models)
    ]
    backends = [
        {"id": f"gpu-{b}", "gpu_name": "GPU", "vram_mb": 24576 * (1 + b % 3), "usd_per_hour": 0.5 + 0.2 * b}
        for b in range(n_backends)
    ]
    cat = Catalog.model_validate(
        {"urgencies": {"normal": {"deadline_s": 30}}, "models": models, "backends": backends}
    )
    views = [
        BackendView(b, loaded_model=f"model-{i % n_models}", queue_s=float(i % 4))
        for i, b in enumerate(cat.backends)
    ]
    return cat, views


def measure(cat: Catalog, views: list[BackendView], need: Need, reps: int) -> dict[str, Any]:
    for _ in range(min(50, reps)):
        select(cat, need, views)  # warm-up
    samples = []
    gc.disable()
    try:
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            sel = select(cat, need, views)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        gc.enable()
    samples.sort()
    return {
        "candidates": len(sel.verdicts),
        "reps": reps,
        "p50_ms": round(statistics.median(samples), 4),
        "p99_ms": round(samples[int(0.99 * (len(samples) - 1))], 4),
        "max_ms": round(samples[-1], 4),
    }


def run(quick: bool = False) -> dict[str, Any]:
    reps = 300 if quick else 2000
    out: dict[str, Any] = {"goal_p99_ms_at_200": GOAL_P99_MS_AT_200, "cases": {}}
    need = Need("text-to-image", 30.0)
    for label, shape in {"10": (5, 2, 1), "200": (10, 4, 5), "1000": (25, 4, 10)}.items():
        cat, views = synthetic_fleet(*shape)
        out["cases"][label] = measure(cat, views, need, reps)
    shipped = Path("models_config.json")
    if shipped.exists():
        cat = load_catalog(shipped)
        out["cases"]["shipped-catalog"] = measure(
            cat, [BackendView(b) for b in cat.backends], Need("portrait", 30.0), reps
        )
    for label, r in out["cases"].items():
        figures = f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
        print(f"  select {label:>15}: {r['candidates']:5d} candidates  {figures}")
    p99 = out["cases"]["200"]["p99_ms"]
    out["goal_met"] = p99 <= GOAL_P99_MS_AT_200
    out["goal"] = f"p99 <= {GOAL_P99_MS_AT_200:g} ms at 200 candidates"
    out["figures"] = [
        figure(
            f"select p{q} at {label} ({r['candidates']} candidates)",
            r[f"p{q}_ms"],
            "ms",
            *((f"<= {GOAL_P99_MS_AT_200:g}", out["goal_met"]) if (label, q) == ("200", 99) else ()),
        )
        for label, r in out["cases"].items()
        for q in (50, 99)
    ]
    verdict = "met" if out["goal_met"] else "NOT met"
    print(f"  goal p99 <= {GOAL_P99_MS_AT_200} ms at 200 candidates: {verdict} ({p99} ms)")
    return out
