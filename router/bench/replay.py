"""Trace replay: every policy on the same Poisson `mixed` trace at loads 0.8 and 1.2 of the fleet's
capacity (router.replay.capacity), plus the low-VRAM fleet (every card forced to 20 GB), on the
shipped catalog. Figures per policy, the router's ratios to each baseline and to the oracle, and
the issue's goals, each with goal_met true or false:

- deadline hit rate >= 99% at load 0.8 and >= 95% at 1.2;
- mean quality within 3% of the oracle's (at both loads);
- model swaps per 100 requests at most half of round-robin's (at both loads);
- zero placement OOMs (both loads and the low-VRAM fleet);
- a better deadline hit rate x mean quality than every baseline (at both loads);
- determinism: the same trace and seed give the same figures (the 0.8 replay run twice).
"""

from __future__ import annotations

import json
import time
from typing import Any

from router.bench._support import ROOT, figure, verdict
from router.catalog import load_catalog
from router.replay.generate import TraceSpec, generate_trace
from router.replay.run import BASELINES, POLICIES, ReplayOptions, replay, replay_policy, result_json

LOADS = (0.8, 1.2)
HIT_GOALS = {0.8: 0.99, 1.2: 0.95}
QUALITY_WITHIN = 0.03
SWAP_SHARE_OF_ROUND_ROBIN = 0.5
LOW_VRAM_MB = 20_000
SEED = 1


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def run(quick: bool = False) -> dict[str, Any]:
    catalog = load_catalog(ROOT / "models_config.json")
    n = 600 if quick else 3000
    options = ReplayOptions(seed=SEED)
    out: dict[str, Any] = {"setup": {"trace": f"poisson, mix mixed, {n} requests, seed {SEED}"}, "loads": {}}
    figures: list[dict[str, Any]] = []
    goals: dict[str, bool] = {}
    total_requests = 0
    total_wall = 0.0
    for load in LOADS:
        trace = generate_trace(catalog, TraceSpec("poisson", load, "mixed", SEED, n))
        started = time.perf_counter()
        runs = replay(catalog, trace, options=options)
        wall = time.perf_counter() - started
        total_requests += n * len(runs)
        total_wall += wall
        result = result_json(trace, runs, options, f"poisson load {load}")
        pol = result["policies"]
        router, oracle = pol["router"], pol["oracle"]
        ratios = {
            name: {
                "hit_rate": _ratio(router["deadline_hit_rate"], pol[name]["deadline_hit_rate"]),
                "mean_quality": _ratio(router["mean_quality"], pol[name]["mean_quality"]),
                "hit_x_quality": _ratio(router["hit_x_quality"], pol[name]["hit_x_quality"]),
                "swaps_per_100": _ratio(router["swaps_per_100"], pol[name]["swaps_per_100"]),
            }
            for name in (*BASELINES, "oracle")
        }
        out["loads"][str(load)] = {**result, "router_ratios": ratios, "wall_s": round(wall, 3)}
        print(f"  load {load}: {n} requests x {len(runs)} policies in {wall:.2f} s")
        for name, m in pol.items():
            print(
                f"    {name:15s} hit {m['deadline_hit_rate']:.3f}  quality {m['mean_quality'] or 0:.1f}  "
                f"hit x q {m['hit_x_quality'] or 0:.1f}  swaps/100 {m['swaps_per_100']:.1f}  "
                f"ooms {m['ooms']}  p95 {m['latency_p95_s'] or 0:.1f} s"
            )
            figures += [
                figure(f"load {load} {name}: deadline hit rate", m["deadline_hit_rate"], ""),
                figure(f"load {load} {name}: mean quality", m["mean_quality"], "points"),
                figure(f"load {load} {name}: hit rate x mean quality", m["hit_x_quality"], ""),
                figure(f"load {load} {name}: swaps per 100 requests", m["swaps_per_100"], ""),
                figure(f"load {load} {name}: OOMs", m["ooms"], ""),
                figure(f"load {load} {name}: latency p95", m["latency_p95_s"], "s"),
            ]
        for name, r in ratios.items():
            figures.append(
                figure(f"load {load} router / {name}: hit x quality (same run)", r["hit_x_quality"], "x")
            )
        goals[f"hit rate >= {HIT_GOALS[load]:.0%} at load {load}"] = (
            router["deadline_hit_rate"] >= HIT_GOALS[load]
        )
        goals[f"mean quality within {QUALITY_WITHIN:.0%} of the oracle at load {load}"] = (
            router["mean_quality"] is not None
            and oracle["mean_quality"] is not None
            and router["mean_quality"] >= (1 - QUALITY_WITHIN) * oracle["mean_quality"]
        )
        goals[f"swaps/100 <= half of round-robin's at load {load}"] = (
            router["swaps_per_100"] <= SWAP_SHARE_OF_ROUND_ROBIN * pol["round-robin"]["swaps_per_100"]
        )
        goals[f"zero OOMs at load {load}"] = router["ooms"] == 0
        goals[f"hit x quality above every baseline at load {load}"] = all(
            (router["hit_x_quality"] or 0) > (pol[b]["hit_x_quality"] or 0) for b in BASELINES
        )
        if load == LOADS[0]:
            again = replay_policy(catalog, trace, "router", options).metrics()
            goals["determinism: same trace and seed, same figures"] = json.dumps(again) == json.dumps(router)

    low = generate_trace(catalog, TraceSpec("poisson", 0.8, "mixed", SEED, n // 2))
    low_runs = replay(
        catalog, low, ["router", "always-best", "oracle"], ReplayOptions(seed=SEED, vram_mb=LOW_VRAM_MB)
    )
    low_m = {name: r.metrics() for name, r in low_runs.items()}
    out["low_vram"] = {"vram_mb": LOW_VRAM_MB, "requests": len(low), "policies": low_m}
    print(
        f"  low VRAM ({LOW_VRAM_MB} MiB cards): OOMs router {low_m['router']['ooms']}, "
        f"always-best {low_m['always-best']['ooms']}; "
        f"hit rate router {low_m['router']['deadline_hit_rate']:.3f}"
    )
    for name, m in low_m.items():
        figures.append(figure(f"low VRAM {name}: OOMs", m["ooms"], ""))
        figures.append(figure(f"low VRAM {name}: deadline hit rate", m["deadline_hit_rate"], ""))
    goals["zero OOMs on the low-VRAM fleet"] = low_m["router"]["ooms"] == 0

    rate = total_requests / total_wall
    out["replay_wall_s"] = round(total_wall, 3)
    out["requests_per_s"] = round(rate, 1)
    figures.append(figure("replay speed (all policies, both loads)", round(rate), "requests/s"))
    for goal, met in goals.items():
        figures.append(figure(f"goal: {goal}", None, "", goal, met))
        print(f"  goal {goal}: {verdict(met)}")
    out["goals"] = goals
    out["goal_met"] = all(goals.values())
    out["goal"] = "; ".join(goals)
    out["figures"] = figures
    out["policies"] = list(POLICIES)
    return out
