"""Table-driven tests of the pure selector against the shipped catalog and small hand-made ones."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from router.catalog.schema import TIER_ORDER, Catalog, Model
from router.selection import BackendView, Need, select
from tests.unit.selector_cases import backend, catalog, model


def views(cat: Catalog, **overrides: dict[str, object]) -> list[BackendView]:
    out = []
    for b in cat.backends:
        kw = overrides.get(b.id, {})
        out.append(BackendView(b, **kw))  # type: ignore[arg-type]
    return out


def test_realtime_portrait_fits_the_realtime_deadline(catalog: Catalog) -> None:
    deadline = catalog.urgencies["realtime"].deadline_s
    sel = select(catalog, Need("portrait", deadline, "high"), views(catalog), "realtime")
    assert sel.chosen is not None
    assert sel.chosen.estimate.total_s <= deadline
    assert sel.reason_code == "best_score"
    assert sel.chosen.model.id in sel.selection_reason and "of 10 s" in sel.selection_reason
    assert len(sel.verdicts) > 10


def test_batch_picks_a_higher_quality_rung_than_realtime(catalog: Catalog) -> None:
    rt = select(
        catalog, Need("portrait", catalog.urgencies["realtime"].deadline_s), views(catalog), "realtime"
    )
    batch = select(catalog, Need("portrait", catalog.urgencies["batch"].deadline_s), views(catalog), "batch")
    assert rt.chosen and batch.chosen
    assert batch.chosen.quality > rt.chosen.quality
    # Batch has time for the top band: a FLUX.1-dev high rung (fp8 and fp16 are one band apart
    # less than the catalog's quality_band, so the cheaper, faster fp8 may win on the score).
    assert batch.chosen.model.family == "flux1" and batch.chosen.tier == "high"
    assert batch.chosen.model.id in ("flux1-dev-fp16", "flux1-dev-fp8")


def test_flux_fp16_rejected_on_a_12gb_backend_with_the_numbers(catalog: Catalog) -> None:
    small = catalog.model_copy(update={"backends": (backend("gpu12", 12 * 1024),)})
    sel = select(small, Need("portrait", 600), views(small), "batch")
    flux = [v for v in sel.verdicts if v.candidate.model.id == "flux1-dev-fp16"]
    assert flux
    for v in flux:
        vram = [r for r in v.rejections if r.code == "vram_insufficient"]
        assert vram, v.rejections
        assert vram[0].numbers == {"needed_mb": 27000 + catalog.vram_headroom_mb, "free_mb": 12288}
        assert (
            vram[0].as_text()
            == f"vram_insufficient needed_mb={27000 + catalog.vram_headroom_mb} free_mb=12288"
        )
    assert sel.chosen is not None and sel.chosen.vram_needed_mb <= 12288


TWO = catalog(
    [
        model("big", 20_000, {"draft": (10, 60), "standard": (20, 75), "high": (30, 90)}),
        model("small", 4_000, {"draft": (4, 40), "standard": (8, 55), "high": (12, 65)}),
    ],
    [backend("a", 24_000, 2.0), backend("b", 8_000, 0.5)],
)


@dataclass
class Case:
    id: str
    need: Need
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    chosen: tuple[str, str, str] | None = None
    code: str | None = None
    rejected_with: dict[tuple[str, str, str], str] = field(default_factory=dict)


CASES = [
    Case(
        "plenty-of-time-best-quality",
        Need("text-to-image", 600),
        chosen=("big", "high", "a"),
        code="best_score",
    ),
    Case(
        "tight-deadline-drops-tier",
        # big/high = 5 + 1 + 15 = 21 s; big/standard = 5 + 1 + 10 = 16 s
        Need("text-to-image", 18),
        chosen=("big", "standard", "a"),
        rejected_with={("big", "high", "a"): "deadline_infeasible"},
    ),
    Case("target-tier-is-a-ceiling", Need("text-to-image", 600, "draft"), chosen=("big", "draft", "a")),
    Case(
        "warm-model-skips-load",
        Need("text-to-image", 17),
        overrides={"a": {"loaded_model": "big"}},
        chosen=("big", "high", "a"),  # 0 + 1 + 15 = 16 s once loaded
    ),
    Case(
        "unhealthy-backend-is-rejected",
        Need("text-to-image", 600),
        overrides={"a": {"healthy": False, "unhealthy_reason": "connection refused"}},
        chosen=("small", "high", "b"),
        rejected_with={("big", "high", "a"): "backend_unhealthy"},
    ),
    Case(
        "vram-counts-the-loaded-model-as-reclaimable",
        Need("text-to-image", 600),
        overrides={"a": {"vram_free_mb": 2_000, "loaded_model": "small"}},
        rejected_with={("big", "high", "a"): "vram_insufficient"},
        chosen=("small", "high", "a"),  # and small is warm there
    ),
    Case(
        "cached-models-reported-by-comfyui-are-reclaimable",
        # Several models cached on a: little is free, but ComfyUI evicts them all for big.
        Need("text-to-image", 600),
        overrides={"a": {"vram_free_mb": 2_000, "vram_reclaimable_mb": 21_000, "loaded_model": "small"}},
        chosen=("big", "high", "a"),
    ),
    Case(
        "a-reclaimable-reading-wins-over-the-loaded-model-guess",
        # After an OOM the router believes nothing more can be evicted until it reads the card again.
        Need("text-to-image", 600),
        overrides={"a": {"vram_free_mb": 2_000, "vram_reclaimable_mb": 0, "loaded_model": "small"}},
        chosen=("small", "high", "b"),
        rejected_with={
            ("big", "high", "a"): "vram_insufficient",
            ("small", "high", "a"): "vram_insufficient",
        },
    ),
    Case(
        "queue-wait-counts-against-the-deadline",
        Need("text-to-image", 25),
        overrides={"a": {"queue_s": 10.0}},
        chosen=("small", "high", "b"),
        rejected_with={
            ("big", "high", "a"): "deadline_infeasible",
            ("big", "standard", "a"): "deadline_infeasible",
        },
    ),
    Case("cost-cap", Need("text-to-image", 600, max_cost_usd=0.002), chosen=("small", "high", "b")),
    Case(
        "quality-floor",
        Need("text-to-image", 12, min_quality=70),
        chosen=(
            "big",
            "standard",
            "a",
        ),  # best effort: nothing >= 70 fits 12 s; big/standard is the fastest above it
        code="deadline_best_effort",
        rejected_with={
            ("small", "high", "b"): "below_quality_floor",
            ("big", "draft", "a"): "below_quality_floor",
        },
    ),
    Case(
        "forced-model",
        Need("text-to-image", 600, model="small"),
        chosen=("small", "high", "b"),
        code="forced_model",
    ),
    Case(
        "nothing-in-time-best-effort",
        Need("text-to-image", 2),
        chosen=("small", "draft", "a"),
        code="deadline_best_effort",
    ),
    Case(
        "nothing-in-time-no-degrade",
        Need("text-to-image", 2, allow_degrade=False),
        chosen=None,
        code="deadline_infeasible",
    ),
    Case("unknown-purpose-nothing", Need("inpaint", 600), chosen=None, code="no_feasible_candidate"),
    Case(
        "all-backends-down",
        Need("text-to-image", 600),
        overrides={"a": {"healthy": False}, "b": {"healthy": False}},
        chosen=None,
        code="no_backend_available",
    ),
    Case(
        "workflow-missing-on-backend",
        Need("text-to-image", 600),
        overrides={"a": {"missing": {("big", "checkpoint_txt2img"): ("node KSampler",)}}},
        chosen=("small", "high", "b"),
        rejected_with={("big", "high", "a"): "workflow_unsupported"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_selection_cases(case: Case) -> None:
    sel = select(TWO, case.need, views(TWO, **case.overrides))
    assert (sel.chosen.key if sel.chosen else None) == case.chosen, sel.selection_reason
    if case.code:
        assert sel.reason_code == case.code
    by_key = {v.candidate.key: v for v in sel.verdicts}
    for key, code in case.rejected_with.items():
        assert code in [r.code for r in by_key[key].rejections], by_key[key].rejections
    assert all(v.rejections for v in sel.verdicts if not v.feasible)


def test_every_candidate_is_listed_with_a_reason_when_nothing_fits() -> None:
    sel = select(TWO, Need("text-to-image", 2, allow_degrade=False), views(TWO))
    assert sel.chosen is None
    assert len(sel.verdicts) == 2 * 3 * 2
    assert all(v.rejections for v in sel.verdicts)
    assert "deadline_infeasible x9, vram_insufficient x3" in sel.selection_reason


def test_ladder_is_a_chain_of_faster_lower_rungs(catalog: Catalog) -> None:
    sel = select(catalog, Need("portrait", 600), views(catalog), "batch")
    assert sel.chosen is not None and len(sel.ladder) >= 3
    prev = sel.chosen
    for rung in sel.ladder:
        assert rung.estimate.total_s < prev.estimate.total_s
        assert rung.quality <= prev.quality
        assert "portrait" in rung.model.purposes
        prev = rung


def test_forced_steps_and_cfg_apply_to_every_candidate() -> None:
    sel = select(TWO, Need("text-to-image", 600, steps=3, cfg=2.5), views(TWO))
    assert {(v.candidate.steps, v.candidate.cfg) for v in sel.verdicts} == {(3, 2.5)}


def test_tier_resolution_scale_renders_smaller(catalog: Catalog) -> None:
    sel = select(catalog, Need("portrait", 600, width=1024, height=768), views(catalog))
    draft = next(v.candidate for v in sel.verdicts if v.candidate.key == ("flux1-dev-fp16", "draft", "a100"))
    assert (draft.width, draft.height) == (768, 576)
    assert draft.width % catalog.limits.side_multiple_px == 0


def test_urgency_weights_override_the_catalog_weights(catalog: Catalog) -> None:
    base = select(catalog, Need("portrait", 10), views(catalog), None)
    rt = select(catalog, Need("portrait", 10), views(catalog), "realtime")
    assert base.chosen and rt.chosen
    s_base, s_rt = base.scores[base.chosen.key], rt.scores[rt.chosen.key]
    assert s_base.score != s_rt.score


def test_calibrated_backend_time_model_wins_over_speed_factor() -> None:
    m = model("big", 20_000, {"high": (30, 90)})
    calibrated = Model.model_validate(
        {
            **m.model_dump(),
            "calibration": {"samples": 50, "backend_time_models": {"a": {"base_s": 0.0, "per_step_s": 0.1}}},
        }
    )
    cat = catalog([calibrated], [backend("a", 24_000, speed=0.25)])
    sel = select(cat, Need("text-to-image", 600), views(cat))
    assert sel.chosen is not None
    assert sel.chosen.estimate.run_s == pytest.approx(3.0)  # 30 x 0.1, speed factor not applied again


def test_same_input_same_answer(catalog: Catalog) -> None:
    need = Need("product", 30)
    a = select(catalog, need, views(catalog), "high")
    b = select(catalog, replace(need), views(catalog), "high")
    assert a.chosen and b.chosen and a.chosen.key == b.chosen.key
    assert a.selection_reason == b.selection_reason
    assert [c.key for c in a.ladder] == [c.key for c in b.ladder]


def test_tiers_in_rank_order() -> None:
    assert TIER_ORDER == ("draft", "standard", "high", "max")
