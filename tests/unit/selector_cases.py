"""Builders shared by the selector's table-driven and property tests."""

from __future__ import annotations

from typing import Any

from router.catalog.schema import Backend, Catalog, Model

BASE_MODEL: dict[str, Any] = {
    "family": "test",
    "workflow": "checkpoint_txt2img",
    "files": {"ckpt_name": "x.safetensors"},
    "purposes": ["text-to-image"],
    "load_s": 5.0,
    "time": {"base_s": 1.0, "per_step_s": 0.5},
}


def model(mid: str, vram_mb: int, tiers: dict[str, tuple[int, float]], **kw: Any) -> Model:
    """tiers: name -> (steps, quality)."""
    data = {**BASE_MODEL, "id": mid, "vram_mb": vram_mb, **kw}
    data["tiers"] = {t: {"steps": s, "cfg": 5.0, "quality": q} for t, (s, q) in tiers.items()}
    return Model.model_validate(data)


def backend(bid: str, vram_mb: int, usd_per_hour: float = 1.0, speed: float = 1.0, **kw: Any) -> Backend:
    return Backend.model_validate(
        {
            "id": bid,
            "gpu_name": "GPU",
            "vram_mb": vram_mb,
            "usd_per_hour": usd_per_hour,
            "speed_factor": speed,
            **kw,
        }
    )


def catalog(models: list[Model], backends: list[Backend], **kw: Any) -> Catalog:
    return Catalog.model_validate(
        {
            "urgencies": {"normal": {"deadline_s": 60}},
            "vram_headroom_mb": 0,
            "models": [m.model_dump() for m in models],
            "backends": [b.model_dump(mode="json") for b in backends],
            **kw,
        }
    )
