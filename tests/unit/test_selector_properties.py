"""Hypothesis properties of the pure selector over generated catalogs, fleets and requests."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.catalog.schema import TIER_ORDER, Catalog
from router.selection import BackendView, Need, Selection, select
from router.selection import estimate as est
from router.selection.candidates import enumerate_candidates
from tests.unit.selector_cases import backend, catalog, model

PURPOSES = ("text-to-image", "portrait", "inpaint")


@st.composite
def models(draw: st.DrawFn, index: int) -> object:
    tiers = draw(st.lists(st.sampled_from(TIER_ORDER), min_size=1, max_size=4, unique=True))
    # Integer qualities, as in the shipped catalog: with quality_band 1 a band is one point.
    spec = {t: (draw(st.integers(1, 60)), draw(st.integers(0, 100))) for t in tiers}
    return model(
        f"m{index}",
        draw(st.integers(1_000, 60_000)),
        spec,
        purposes=draw(st.lists(st.sampled_from(PURPOSES), min_size=1, max_size=3, unique=True)),
        load_s=draw(st.floats(0, 30)),
        time={"base_s": draw(st.floats(0, 3)), "per_step_s": draw(st.floats(0.01, 1.0))},
    )


@st.composite
def fleets(draw: st.DrawFn) -> tuple[Catalog, list[BackendView]]:
    n_models = draw(st.integers(1, 4))
    ms = [draw(models(i)) for i in range(n_models)]
    bs = [
        backend(f"b{i}", draw(st.integers(4_000, 81_920)), draw(st.floats(0, 3)), draw(st.floats(0.5, 2.0)))
        for i in range(draw(st.integers(1, 3)))
    ]
    cat = catalog(ms, bs, vram_headroom_mb=draw(st.integers(0, 2048)))  # type: ignore[arg-type]
    vs = []
    for b in cat.backends:
        loaded = draw(st.none() | st.sampled_from([m.id for m in cat.models]))
        free = draw(st.none() | st.integers(0, b.vram_mb))
        vs.append(
            BackendView(
                b,
                healthy=draw(st.booleans() | st.just(True)),
                vram_free_mb=free,
                loaded_model=loaded,
                queue_s=draw(st.floats(0, 20)),
            )
        )
    return cat, vs


@st.composite
def needs(draw: st.DrawFn) -> Need:
    return Need(
        purpose=draw(st.sampled_from(PURPOSES)),
        deadline_s=draw(st.floats(0.5, 600)),
        target_tier=draw(st.sampled_from(TIER_ORDER)),
        width=draw(st.sampled_from([512, 768, 1024])),
        height=draw(st.sampled_from([512, 1024])),
        min_quality=draw(st.none() | st.integers(0, 90).map(float)),
        max_cost_usd=draw(st.none() | st.floats(0.0001, 0.05)),
        allow_degrade=draw(st.booleans()),
    )


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feasible_by_hand(cat: Catalog, need: Need, sel: Selection) -> dict[tuple[str, str, str], bool]:
    """An independent restatement of feasibility from the raw numbers."""
    out = {}
    for v in sel.verdicts:
        c = v.candidate
        free = c.view.vram_free_mb if c.view.vram_free_mb is not None else c.view.backend.vram_mb
        loaded = cat.model(c.view.loaded_model) if c.view.loaded_model else None
        available = min(c.view.backend.vram_mb, free + (loaded.vram_mb if loaded else 0))
        out[c.key] = (
            need.purpose in c.model.purposes
            and c.view.healthy
            and c.model.vram_mb + cat.vram_headroom_mb <= available
            and TIER_ORDER.index(c.tier) <= TIER_ORDER.index(need.target_tier)
            and (need.min_quality is None or c.quality >= need.min_quality)
            and (need.max_cost_usd is None or c.estimated_cost_usd <= need.max_cost_usd)
            and c.estimate.queue_s + c.estimate.load_s + c.estimate.run_s <= need.deadline_s
        )
    return out


@FAST
@given(fleets(), needs())
def test_feasibility_matches_the_raw_numbers_and_rejections_carry_reasons(
    fleet: tuple[Catalog, list[BackendView]], need: Need
) -> None:
    cat, vs = fleet
    sel = select(cat, need, vs)
    by_hand = feasible_by_hand(cat, need, sel)
    for v in sel.verdicts:
        assert v.feasible == by_hand[v.candidate.key], (v.candidate.key, v.rejections)
        for r in v.rejections:
            assert r.code and r.message
        if not v.feasible:
            assert v.rejections


@FAST
@given(fleets(), needs())
def test_the_chosen_candidate_passes_every_filter(
    fleet: tuple[Catalog, list[BackendView]], need: Need
) -> None:
    cat, vs = fleet
    sel = select(cat, need, vs)
    if sel.chosen is None:
        assert not any(v.feasible for v in sel.verdicts)
        return
    verdict = next(v for v in sel.verdicts if v.candidate.key == sel.chosen.key)
    if sel.best_effort:
        assert need.allow_degrade
        assert {r.code for r in verdict.rejections} == {"deadline_infeasible"}
        assert not any(v.feasible for v in sel.verdicts)
    else:
        assert verdict.feasible


@FAST
@given(fleets(), needs())
def test_normalised_scores_stay_within_0_and_100(
    fleet: tuple[Catalog, list[BackendView]], need: Need
) -> None:
    cat, vs = fleet
    sel = select(cat, need, vs)
    for s in sel.scores.values():
        assert 0.0 <= s.score <= 100.0
        assert all(0.0 <= p <= 100.0 for p in s.parts.values())


@FAST
@given(fleets(), needs())
def test_same_input_gives_the_same_choice(fleet: tuple[Catalog, list[BackendView]], need: Need) -> None:
    cat, vs = fleet
    a, b = select(cat, need, vs), select(cat, replace(need), list(vs))
    assert (a.chosen.key if a.chosen else None) == (b.chosen.key if b.chosen else None)
    assert a.selection_reason == b.selection_reason and a.reason_code == b.reason_code


@FAST
@given(fleets(), needs(), st.integers(1, 40_000))
def test_more_free_vram_never_makes_a_feasible_request_infeasible(
    fleet: tuple[Catalog, list[BackendView]], need: Need, extra_mb: int
) -> None:
    cat, vs = fleet
    before = select(cat, need, vs)
    roomier = []
    for v in vs:
        bigger = v.backend.model_copy(update={"vram_mb": v.backend.vram_mb + extra_mb})
        free = None if v.vram_free_mb is None else v.vram_free_mb + extra_mb
        roomier.append(replace(v, backend=bigger, vram_free_mb=free))
    cat2 = cat.model_copy(update={"backends": tuple(v.backend for v in roomier)})
    after = select(cat2, need, roomier)
    if before.chosen is not None and not before.best_effort:
        assert after.chosen is not None and not after.best_effort


@FAST
@given(fleets(), needs(), st.floats(0.0, 600.0))
def test_a_longer_deadline_never_lowers_the_chosen_quality(
    fleet: tuple[Catalog, list[BackendView]], need: Need, more_s: float
) -> None:
    cat, vs = fleet
    short = select(cat, need, vs)
    long_ = select(cat, replace(need, deadline_s=need.deadline_s + more_s), vs)
    if short.chosen is not None and not short.best_effort:
        assert long_.chosen is not None and not long_.best_effort
        assert long_.chosen.quality >= short.chosen.quality


@given(fleets(), needs())
def test_candidate_estimates_equal_the_estimate_module_exactly(
    fleet: tuple[Catalog, list[BackendView]], need: Need
) -> None:
    """Enumeration inlines the time and cost arithmetic for speed: it must give the same floats."""
    cat, views = fleet
    for c in enumerate_candidates(cat, need, views):
        assert c.estimate == est.estimate(c.model, c.view, c.steps, c.width, c.height, need.batch_size)
        assert c.estimated_cost_usd == est.cost_usd(c.view.backend.usd_per_hour, c.estimate)
        assert c.estimate.total_s == c.estimate.queue_s + c.estimate.load_s + c.estimate.run_s
