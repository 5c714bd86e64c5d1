"""Enumerate the candidates of a request: every model x tier x backend, with estimates."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from router.catalog.schema import TIER_ORDER, Catalog
from router.selection import estimate as est
from router.selection.types import BackendView, Candidate, Estimate, Need

# NamedTuple construction from a ready tuple: same object, about half the cost of calling the class.
make = tuple.__new__


def enumerate_candidates(catalog: Catalog, need: Need, views: Sequence[BackendView]) -> Iterator[Candidate]:
    """All combinations, in a stable order (catalog order, backend order, tier rank).

    Purpose mismatches are enumerated too, so that the answer can say why a model was not used.
    """
    multiple = catalog.limits.side_multiple_px
    batch = need.batch_size
    available = {v.backend.id: est.vram_available_mb(catalog, v) for v in views}
    for model in catalog.models:
        needed = est.vram_needed_mb(catalog, model)
        # What a tier renders does not depend on the backend: work it out once per model.
        tiers = [
            (
                t,
                spec,
                need.steps if need.steps is not None else spec.steps,
                need.cfg if need.cfg is not None else spec.cfg,
                *est.tier_size(spec, need.width, need.height, multiple),
            )
            for t in TIER_ORDER
            if (spec := model.tiers.get(t)) is not None
        ]
        for view in views:
            backend = view.backend
            tm, speed = est.time_model_and_speed(model, backend)
            queue_s, loaded = est.queue_position(view, need.front)
            load_s = model.load_s if est.load_needed(view, loaded, model.id) else 0.0
            usd_per_hour = backend.usd_per_hour
            available_mb = available[backend.id]
            base_s, per_step_s, ref_px = tm.base_s, tm.per_step_s, tm.ref_width * tm.ref_height
            for tier, spec, steps, cfg, width, height in tiers:
                # est.run_seconds inlined, the same operations in the same order (same floats).
                run_s = (base_s + per_step_s * steps) * ((width * height) / ref_px) * batch / speed
                # Estimate.of and est.cost_usd inlined, and the tuples built without the
                # NamedTuples' Python-level __new__: this loop runs once per candidate.
                e = make(Estimate, (queue_s, load_s, run_s, queue_s + load_s + run_s))
                yield make(
                    Candidate,
                    (
                        model,
                        tier,
                        spec,
                        view,
                        steps,
                        cfg,
                        width,
                        height,
                        e,
                        needed,
                        available_mb,
                        usd_per_hour * (load_s + run_s) / 3600.0,
                        (model.id, tier, backend.id),
                        spec.quality,
                    ),
                )
