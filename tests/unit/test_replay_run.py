"""Trace replay: hand-checked figures, determinism, the low-VRAM scenario, the oracle bound."""

from __future__ import annotations

import json

import pytest

from router.catalog import Catalog
from router.replay.generate import TraceSpec, generate_trace
from router.replay.metrics import policy_metrics
from router.replay.policies import static_map
from router.replay.run import BASELINES, POLICIES, ReplayOptions, replay, replay_policy, result_json
from router.replay.trace import TraceRequest

EXACT = ReplayOptions(noise_sigma=0.0)


def _req(t: float, purpose: str, urgency: str, quality: str, **extra: object) -> TraceRequest:
    return TraceRequest.model_validate(
        {
            "t": t,
            "purpose": purpose,
            "urgency": urgency,
            "quality": quality,
            "width": 1024,
            "height": 1024,
            **extra,
        }
    )


TINY = [
    _req(0.0, "text-to-image", "batch", "high"),
    _req(100.0, "portrait", "realtime", "standard", deadline_s=9.0),
    _req(200.0, "face-swap", "normal", "high"),
]


def test_static_map_is_derived_from_the_catalog(catalog: Catalog) -> None:
    model_for, backend_for = static_map(catalog, ["a100", "rtx4090"])
    assert model_for["text-to-image"].id == "flux1-dev-fp16"  # the best quality at any tier (93)
    assert model_for["text-rendering"].id == "qwen-image-fp8"  # the only one
    assert backend_for["flux1-dev-fp16"] == "a100"  # 27 GB does not fit the 4090
    assert backend_for["faceswap-reactor"] == "rtx4090"  # the a100 already holds two pinned models


def test_tiny_trace_figures_by_hand(catalog: Catalog) -> None:
    """static, no noise, no queueing (requests 100 s apart), so every figure follows from the catalog:
    flux1-dev-fp16 on the a100: load 25 s + (1.5 + 0.4 x 28) = 37.7 s cold at high, then warm at
    standard 1.5 + 0.4 x 20 = 9.5 s (over the 9 s deadline); faceswap-reactor on the 4090
    (speed 0.9): load 10 s + (8 + 0.12 x 24) / 0.9 s."""
    run = replay_policy(catalog, TINY, "static", EXACT)
    faceswap_s = 10.0 + (8.0 + 0.12 * 24) / 0.9
    latencies = sorted([37.7, 9.5, faceswap_s])
    m = run.metrics()
    assert [r.latency_s for r in run.records] == pytest.approx([37.7, 9.5, faceswap_s])
    assert m["requests"] == 3
    assert m["deadline_hit_rate"] == pytest.approx(2 / 3)
    assert m["hit_rate_by_urgency"] == {"batch": 1.0, "normal": 1.0, "realtime": 0.0}
    assert m["mean_quality"] == pytest.approx((90 + 83 + 80) / 3)
    assert m["hit_x_quality"] == pytest.approx(2 / 3 * (90 + 83 + 80) / 3)
    cost = (1.19 * (37.7 + 9.5) + 0.69 * faceswap_s) / 3600
    assert m["cost_usd"] == pytest.approx(cost)
    assert m["cost_per_image_usd"] == pytest.approx(cost / 3)
    assert m["swaps_per_100"] == pytest.approx(200 / 3)  # two cold loads in three requests
    assert m["ooms"] == 0
    assert m["degraded_share"] == 0.0
    assert m["latency_p50_s"] == pytest.approx(latencies[1])
    # linear interpolation: rank 0.95 x 2 = 1.9, between the 2nd and 3rd
    assert m["latency_p95_s"] == pytest.approx(latencies[1] + 0.9 * (latencies[2] - latencies[1]))


def test_queueing_adds_the_wait(catalog: Catalog) -> None:
    """Two requests at once on the same pinned GPU: the second waits for the first (FIFO)."""
    reqs = [_req(0.0, "text-to-image", "batch", "high"), _req(0.0, "text-to-image", "batch", "high")]
    run = replay_policy(catalog, reqs, "static", EXACT)
    assert [r.latency_s for r in run.records] == pytest.approx([37.7, 37.7 + 12.7])
    assert run.swaps == 1


def test_the_router_interrupts_a_slow_rung_and_degrades(catalog: Catalog) -> None:
    """At 2x slowdown flux1-dev-fp16/high (est. 37.7 s of 60 s) would take 75.4 s. The StepWatch sees
    the slow steps after the load, a faster rung still fits the time left, so the runner's rule
    interrupts and degrades; the image comes sooner than always-best's (which just runs on)."""
    reqs = [_req(0.0, "text-to-image", "normal", "high")]
    slow = ReplayOptions(noise_sigma=0.0, slowdown=2.0)
    # Quality first (band 1, little weight on slack), so that the first rung is the best one.
    scoring = catalog.scoring.model_copy(update={"quality_band": 1.0, "slack": 0.1})
    catalog = catalog.model_copy(update={"scoring": scoring})
    router = replay_policy(catalog, reqs, "router", slow).records[0]
    best = replay_policy(catalog, reqs, "always-best", slow).records[0]
    assert [a.outcome for a in router.attempts] == ["timeout", "degraded"]
    first = router.attempts[0]
    assert (first.model, first.tier) == ("flux1-dev-fp16", "high")
    assert first.error is not None and first.error.startswith("interrupted early: predicted to finish at")
    assert first.actual_s < 75.4  # interrupted, not run to the end
    assert router.degraded and router.quality is not None and router.quality < 90
    assert best.latency_s == pytest.approx(75.4)
    assert router.latency_s is not None and router.latency_s < best.latency_s


def test_same_trace_and_seed_same_json_other_seed_other_numbers(catalog: Catalog) -> None:
    trace = generate_trace(catalog, TraceSpec(load=1.0, seed=4, requests=150))
    options = ReplayOptions(seed=11)

    def run(opts: ReplayOptions) -> str:
        result = result_json(trace, replay(catalog, trace, options=opts), opts, "t", catalog)
        return json.dumps(result, sort_keys=True)

    first = run(options)
    assert first == run(options)
    other = json.loads(run(ReplayOptions(seed=12)))["policies"]
    assert other != json.loads(first)["policies"]
    assert set(json.loads(first)["policies"]) == set(POLICIES)


def test_low_vram_fleet_the_router_degrades_instead_of_ooms(catalog: Catalog) -> None:
    """12 GB cards: the catalog still declares 80 and 24 GB; the router reads /system_stats."""
    trace = generate_trace(catalog, TraceSpec(load=0.5, seed=2, requests=120))
    runs = replay(catalog, trace, ["router", "always-best", "oracle"], ReplayOptions(seed=2, vram_mb=12_000))
    router, best, oracle = (runs[n].metrics() for n in ("router", "always-best", "oracle"))
    assert router["ooms"] == 0
    assert oracle["ooms"] == 0
    assert best["ooms"] > 0
    assert best["failed"] >= best["ooms"]  # an OOM fails a baseline's request
    assert router["images"] > best["images"]
    assert router["mean_quality"] <= 74  # nothing above SDXL fits: it served smaller models
    models = {a.model for r in runs["router"].records for a in r.attempts}
    assert models <= {"sdxl-base", "sdxl-lightning-4step", "sd15", "sdxl-inpaint"}


@pytest.mark.parametrize("load", [0.8, 1.2])
def test_oracle_bounds_the_baselines_and_the_router_on_hit_rate(catalog: Catalog, load: float) -> None:
    """The oracle is a clairvoyant greedy (best of its prices in hindsight): above every baseline on
    hit rate x quality, and above the router on hit rate. The router can beat it on hit rate x
    quality (it keeps slack and favours cached models, which the per-request greedy does not)."""
    trace = generate_trace(catalog, TraceSpec(load=load, seed=9, requests=250))
    runs = replay(catalog, trace, options=ReplayOptions(seed=9))
    oracle = runs["oracle"].metrics()
    for name in BASELINES:
        assert runs[name].metrics()["hit_x_quality"] <= oracle["hit_x_quality"], name
    assert runs["router"].metrics()["deadline_hit_rate"] <= oracle["deadline_hit_rate"]
    assert oracle["hit_x_quality"] > 0


def test_every_request_ends_and_the_counts_add_up(catalog: Catalog) -> None:
    trace = generate_trace(catalog, TraceSpec(arrivals="bursty", load=1.2, seed=3, requests=200))
    for name, run in replay(catalog, trace, options=ReplayOptions(seed=3, slowdown=2.0)).items():
        m = run.metrics()
        assert m["images"] + m["failed"] == 200, name
        assert all(len(r.attempts) <= 6 for r in run.records), name
        assert m["ooms"] == sum(1 for r in run.records for a in r.attempts if a.outcome == "oom"), name


def test_metrics_of_no_images_are_none_not_zero() -> None:
    m = policy_metrics([], swaps=0, ooms=0)
    assert m["mean_quality"] is None and m["latency_p95_s"] is None and m["deadline_hit_rate"] is None


def test_unknown_policy_is_refused(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown policy 'random'"):
        replay(catalog, TINY, ["random"])


def test_the_router_is_not_locked_out_of_a_card_holding_cached_models(catalog: Catalog) -> None:
    """Every purpose has a model that fits an empty A100, so no request should be refused for VRAM.

    Found by replay: the selector once counted only the last-run model as reclaimable, so a card
    holding several cached models was refused for good (nothing ran there, nothing was evicted)."""
    trace = generate_trace(catalog, TraceSpec(load=0.8, seed=1, requests=1000))
    run = replay_policy(catalog, trace, "router", ReplayOptions(seed=0))
    refused_for_vram = [
        r for r in run.records if not r.attempts and "vram_insufficient" in r.selection_reason
    ]
    assert refused_for_vram == []


@pytest.mark.parametrize("load", [0.8, 1.2])
def test_no_policy_passes_the_idle_fleet_ceiling(catalog: Catalog, load: float) -> None:
    """Each request alone on an idle, warm fleet is the least time it can get: a true ceiling."""
    trace = generate_trace(catalog, TraceSpec(load=load, seed=5, requests=250))
    options = ReplayOptions(seed=5)
    runs = replay(catalog, trace, options=options)
    ceiling = result_json(trace, runs, options, "t", catalog)["trace"]["idle_fleet_bound"]
    assert 0 < ceiling["deadline_hit_rate"] <= 1
    for name, run in runs.items():
        assert run.metrics()["deadline_hit_rate"] <= ceiling["deadline_hit_rate"] + 1e-9, name
