"""Trace replay: every policy on the same Poisson `mixed` trace at loads 0.8 and 1.2 of the fleet's
capacity (router.replay.capacity), plus the low-VRAM fleet (every card forced to 20 GB) and the
`urgent` and `flexible` mixes at load 0.8 (figures only), on the shipped catalog. Figures per
policy, the router's ratios to each baseline and to the oracle, and the issue's goals, each with
goal_met true or false:

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
from router.catalog import Catalog, load_catalog
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


class _Goals:
    """Each goal: whether it is met, and what the router did (shown next to it)."""

    def __init__(self) -> None:
        self.met: dict[str, bool] = {}
        self.observed: dict[str, str] = {}

    def add(self, name: str, met: bool, observed: str) -> None:
        self.met[name] = met
        self.observed[name] = observed


def _print_policies(pol: dict[str, Any]) -> None:
    for name, m in pol.items():
        print(
            f"    {name:15s} hit {m['deadline_hit_rate']:.3f}  quality {m['mean_quality'] or 0:.1f}  "
            f"hit x q {m['hit_x_quality'] or 0:.1f}  swaps/100 {m['swaps_per_100']:.1f}  "
            f"ooms {m['ooms']}  p95 {m['latency_p95_s'] or 0:.1f} s"
        )


def _policy_figures(label: str, pol: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        fig
        for name, m in pol.items()
        for fig in (
            figure(f"{label} {name}: deadline hit rate", m["deadline_hit_rate"], ""),
            figure(f"{label} {name}: mean quality", m["mean_quality"], "points"),
            figure(f"{label} {name}: hit rate x mean quality", m["hit_x_quality"], ""),
            figure(f"{label} {name}: swaps per 100 requests", m["swaps_per_100"], ""),
            figure(f"{label} {name}: OOMs", m["ooms"], ""),
            figure(f"{label} {name}: latency p95", m["latency_p95_s"], "s"),
        )
    ]


def _judge_load(load: float, pol: dict[str, Any], goals: _Goals, ceiling: float) -> None:
    router, oracle, rr = pol["router"], pol["oracle"], pol["round-robin"]
    goals.add(
        f"hit rate >= {HIT_GOALS[load]:.0%} at load {load}",
        router["deadline_hit_rate"] >= HIT_GOALS[load],
        f"{router['deadline_hit_rate']:.3f} (oracle {oracle['deadline_hit_rate']:.3f}, "
        f"idle-fleet ceiling {ceiling:.3f})",
    )
    goals.add(
        f"mean quality within {QUALITY_WITHIN:.0%} of the oracle at load {load}",
        router["mean_quality"] is not None
        and oracle["mean_quality"] is not None
        and router["mean_quality"] >= (1 - QUALITY_WITHIN) * oracle["mean_quality"],
        f"{router['mean_quality'] or 0:.1f} vs {oracle['mean_quality'] or 0:.1f}",
    )
    goals.add(
        f"swaps/100 <= half of round-robin's at load {load}",
        router["swaps_per_100"] <= SWAP_SHARE_OF_ROUND_ROBIN * rr["swaps_per_100"],
        f"{router['swaps_per_100']:.1f} vs {rr['swaps_per_100']:.1f}",
    )
    goals.add(f"zero OOMs at load {load}", router["ooms"] == 0, str(router["ooms"]))
    best = max(BASELINES, key=lambda b: pol[b]["hit_x_quality"] or 0)
    goals.add(
        f"hit x quality above every baseline at load {load}",
        all((router["hit_x_quality"] or 0) > (pol[b]["hit_x_quality"] or 0) for b in BASELINES),
        f"{router['hit_x_quality'] or 0:.1f} vs {best} {pol[best]['hit_x_quality'] or 0:.1f}",
    )


def _at_load(
    catalog: Catalog, load: float, n: int, goals: _Goals
) -> tuple[dict[str, Any], list[Any], int, float]:
    options = ReplayOptions(seed=SEED)
    trace = generate_trace(catalog, TraceSpec("poisson", load, "mixed", SEED, n))
    started = time.perf_counter()
    runs = replay(catalog, trace, options=options)
    wall = time.perf_counter() - started
    result = result_json(trace, runs, options, f"poisson load {load}", catalog)
    pol = result["policies"]
    router = pol["router"]
    ratios = {
        name: {
            key: _ratio(router[key], pol[name][key])
            for key in ("deadline_hit_rate", "mean_quality", "hit_x_quality", "swaps_per_100")
        }
        for name in (*BASELINES, "oracle")
    }
    print(f"  load {load}: {n} requests x {len(runs)} policies in {wall:.2f} s")
    _print_policies(pol)
    bound = result["trace"]["idle_fleet_bound"]
    print(
        f"    ceiling (each request alone on an idle, warm fleet): hit {bound['deadline_hit_rate']:.3f}, "
        f"{bound['unreachable_requests']} requests no rung can make in time"
    )
    figures = (
        _policy_figures(f"load {load}", pol)
        + [
            figure(
                f"load {load} ceiling: deadline hit rate on an idle fleet", bound["deadline_hit_rate"], ""
            ),
        ]
        + [
            figure(f"load {load} router / {name}: hit x quality (same run)", r["hit_x_quality"], "x")
            for name, r in ratios.items()
        ]
    )
    _judge_load(load, pol, goals, bound["deadline_hit_rate"])
    if load == LOADS[0]:
        again = replay_policy(catalog, trace, "router", options).metrics()
        same = json.dumps(again) == json.dumps(router)
        goals.add("determinism: same trace and seed, same figures", same, "identical" if same else "differ")
    entry = {**result, "router_ratios": ratios, "wall_s": round(wall, 3)}
    return entry, figures, n * len(runs), wall


def _low_vram(catalog: Catalog, n: int, goals: _Goals) -> tuple[dict[str, Any], list[Any]]:
    trace = generate_trace(catalog, TraceSpec("poisson", 0.8, "mixed", SEED, n))
    runs = replay(
        catalog, trace, ["router", "always-best", "oracle"], ReplayOptions(seed=SEED, vram_mb=LOW_VRAM_MB)
    )
    pol = {name: r.metrics() for name, r in runs.items()}
    print(f"  low VRAM ({LOW_VRAM_MB} MiB cards), load 0.8, {n} requests:")
    _print_policies(pol)
    goals.add(
        "zero OOMs on the low-VRAM fleet",
        pol["router"]["ooms"] == 0,
        f"router {pol['router']['ooms']}, always-best {pol['always-best']['ooms']}",
    )
    return {"vram_mb": LOW_VRAM_MB, "requests": n, "policies": pol}, _policy_figures("low VRAM", pol)


def _mixes(catalog: Catalog, n: int) -> tuple[dict[str, Any], list[Any]]:
    """The seed's urgency scenarios at load 0.8 (figures only: the goals are for the mixed day)."""
    out: dict[str, Any] = {}
    figures: list[Any] = []
    for mix in ("urgent", "flexible"):
        trace = generate_trace(catalog, TraceSpec("poisson", 0.8, mix, SEED, n))
        runs = replay(
            catalog, trace, ["router", "always-fastest", "least-busy", "oracle"], ReplayOptions(seed=SEED)
        )
        pol = {name: r.metrics() for name, r in runs.items()}
        print(f"  mix {mix}, load 0.8, {n} requests:")
        _print_policies(pol)
        out[mix] = pol
        figures += _policy_figures(f"mix {mix}", pol)
    return out, figures


def run(quick: bool = False) -> dict[str, Any]:
    catalog = load_catalog(ROOT / "models_config.json")
    n = 600 if quick else 3000
    goals = _Goals()
    out: dict[str, Any] = {"setup": {"trace": f"poisson, mix mixed, {n} requests, seed {SEED}"}, "loads": {}}
    figures: list[Any] = []
    total_requests, total_wall = 0, 0.0
    for load in LOADS:
        entry, figs, requests, wall = _at_load(catalog, load, n, goals)
        out["loads"][str(load)] = entry
        figures += figs
        total_requests += requests
        total_wall += wall
    out["low_vram"], low_figures = _low_vram(catalog, n // 2, goals)
    figures += low_figures
    out["mixes"], mix_figures = _mixes(catalog, n // 2)
    figures += mix_figures
    rate = total_requests / total_wall
    out["replay_wall_s"] = round(total_wall, 3)
    out["requests_per_s"] = round(rate, 1)
    figures.append(figure("replay speed (all policies, both loads)", round(rate), "requests/s"))
    for goal, met in goals.met.items():
        figures.append(figure(f"goal: {goal}", goals.observed[goal], "", goal, met))
        print(f"  goal {goal}: {verdict(met)} ({goals.observed[goal]})")
    out["goals"] = goals.met
    out["goals_observed"] = goals.observed
    out["goal_met"] = all(goals.met.values())
    out["goal"] = "; ".join(goals.met)
    out["figures"] = figures
    out["policies"] = list(POLICIES)
    return out
