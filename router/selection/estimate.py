"""Time, VRAM and cost estimates of one model x tier on one backend (pure arithmetic)."""

from __future__ import annotations

from router.catalog.schema import Backend, Catalog, Model, TierSpec, TimeModel
from router.selection.types import BackendView, Estimate


def time_model_for(model: Model, backend_id: str) -> TimeModel:
    """A calibrated per-backend fit wins over the catalog's reference-GPU time model."""
    if model.calibration is not None:
        fitted = model.calibration.backend_time_models.get(backend_id)
        if fitted is not None:
            return fitted
    return model.time


def pixel_scale(tm: TimeModel, width: int, height: int) -> float:
    return (width * height) / (tm.ref_width * tm.ref_height)


def run_seconds(
    tm: TimeModel, steps: int, width: int, height: int, batch_size: int, speed_factor: float
) -> float:
    """(base_s + per_step_s x steps) scaled by pixels and batch, divided by the GPU's relative speed.

    A fitted per-backend model already reflects that GPU's speed, so callers pass speed_factor=1 for it.
    """
    return (tm.base_s + tm.per_step_s * steps) * pixel_scale(tm, width, height) * batch_size / speed_factor


def tier_size(spec: TierSpec, width: int, height: int, multiple_px: int) -> tuple[int, int]:
    """The size a tier renders: the request's, scaled by the tier, rounded down to the multiple."""
    if spec.resolution_scale >= 1.0:
        return width, height
    return (
        max(multiple_px, int(width * spec.resolution_scale) // multiple_px * multiple_px),
        max(multiple_px, int(height * spec.resolution_scale) // multiple_px * multiple_px),
    )


def time_model_and_speed(model: Model, backend: Backend) -> tuple[TimeModel, float]:
    """The time model to use on a backend and the speed factor to divide it by.

    A fitted per-backend model already reflects that GPU's speed, so its factor is 1.
    """
    tm = time_model_for(model, backend.id)
    return tm, (1.0 if tm is not model.time else backend.speed_factor)


def queue_position(view: BackendView, front: bool) -> tuple[float, str | None]:
    """(expected wait, model loaded when the prompt starts) for a prompt sent to the back of the
    queue, or to its front when `front` and the view knows the front's figures."""
    if front and view.front_queue_s is not None:
        return max(0.0, view.front_queue_s), view.front_loaded_model
    return max(0.0, view.queue_s), view.loaded_model


def load_needed(view: BackendView, loaded: str | None, model_id: str) -> bool:
    """Whether the model must be loaded before the prompt runs (not the loaded one, not cached)."""
    return model_id != loaded and model_id not in view.resident_models


def estimate(
    model: Model,
    view: BackendView,
    steps: int,
    width: int,
    height: int,
    batch_size: int,
    *,
    front: bool = False,
) -> Estimate:
    tm, speed = time_model_and_speed(model, view.backend)
    queue_s, loaded = queue_position(view, front)
    load_s = model.load_s if load_needed(view, loaded, model.id) else 0.0
    return Estimate.of(queue_s, load_s, run_seconds(tm, steps, width, height, batch_size, speed))


def vram_needed_mb(catalog: Catalog, model: Model) -> int:
    return model.vram_mb + catalog.vram_headroom_mb


def vram_available_mb(catalog: Catalog, view: BackendView) -> int:
    """Free VRAM plus what cached models hold: ComfyUI evicts them to load another model.

    Without a reading of the cached models' memory, the model loaded there is the one assumed
    cached (a card holding several would then look fuller than it is to the selector)."""
    free = view.vram_free_mb if view.vram_free_mb is not None else view.backend.vram_mb
    if view.vram_reclaimable_mb is not None:
        reclaimable = view.vram_reclaimable_mb
    else:
        loaded = catalog.model(view.loaded_model) if view.loaded_model else None
        reclaimable = loaded.vram_mb if loaded is not None else 0
    return min(view.backend.vram_mb, free + reclaimable)


def cost_usd(usd_per_hour: float, est: Estimate) -> float:
    """GPU time this request occupies (load and run; waiting in the queue costs the GPU nothing)."""
    return usd_per_hour * (est.load_s + est.run_s) / 3600.0
