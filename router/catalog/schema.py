"""Pydantic models of `models_config.json`, the model catalog.

Every model forbids unknown keys so that a typo in the file is an error that names
the key, not a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

TierName = Literal["draft", "standard", "high", "max"]
# Order matters: index = rank. A higher rank is a better (slower, costlier) tier.
TIER_ORDER: tuple[TierName, ...] = ("draft", "standard", "high", "max")
# Pillow format names; ComfyUI's LoadImage reads them all, the catalog's default accepts the first three.
ImageFormat = Literal["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backend(Strict):
    id: Identifier
    url: HttpUrl | None = Field(
        default=None, description="ComfyUI base URL; null means the built-in simulator is started for it."
    )
    gpu_name: str
    vram_mb: int = Field(gt=0, description="Total VRAM of the GPU (or MIG slice) in MiB.")
    speed_factor: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Throughput relative to the reference GPU of the time models (2.0 = twice as fast).",
    )
    usd_per_hour: float = Field(ge=0, description="What the GPU costs per hour (rental price).")
    tags: tuple[str, ...] = ()
    enabled: bool = True


class Urgency(Strict):
    deadline_s: PositiveSeconds
    description: str = ""
    weights: ScoringWeights | None = Field(
        default=None, description="Overrides the catalog's scoring weights for requests of this urgency."
    )
    front: bool = Field(
        default=False,
        description="Submit to the front of ComfyUI's queue (its `front` flag): these requests wait only "
        "for the prompt running there, ahead of everything queued.",
    )


class ScoringWeights(Strict):
    """Weights of the scorers. Candidates are first ranked by quality band (see `quality_band`)."""

    quality_band: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description=(
            "Quality points per band. The selector serves the best band the deadline allows; the weighted "
            "score decides inside a band. Wider bands let cost, slack and warm models trade quality."
        ),
    )
    quality: float = Field(default=1.0, ge=0)
    cost: float = Field(default=0.3, ge=0)
    slack: float = Field(default=0.3, ge=0)
    warm: float = Field(default=0.2, ge=0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> ScoringWeights:
        if self.quality + self.cost + self.slack + self.warm <= 0:
            raise ValueError("at least one scoring weight must be positive")
        return self


class InputLimits(Strict):
    min_side_px: int = Field(default=256, gt=0)
    max_side_px: int = Field(default=2048, gt=0)
    max_pixels: int = Field(default=2048 * 2048, gt=0)
    side_multiple_px: int = Field(default=8, gt=0)
    max_prompt_chars: int = Field(default=4000, gt=0)
    max_batch_size: int = Field(default=4, gt=0)
    max_images: int = Field(default=4, ge=0)
    max_image_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    image_formats: tuple[ImageFormat, ...] = Field(
        default=("PNG", "JPEG", "WEBP"),
        min_length=1,
        description="Pillow formats accepted for input images (images, mask, face_image).",
    )
    max_image_side_px: int = Field(
        default=8192,
        gt=0,
        description=(
            "Largest width or height of an input image. Its pixel count is also capped at 4 x max_pixels: "
            "both are checked from the header, before any pixel is decoded (decompression bombs)."
        ),
    )
    max_steps: int = Field(default=150, gt=0)
    max_cfg: float = Field(default=30.0, gt=0)


class TimeModel(Strict):
    """Seconds on the reference GPU at the reference resolution: base_s + per_step_s * steps.

    Run time scales linearly with the pixel count relative to `ref_width` x `ref_height`
    and with the backend's `speed_factor` (see `router.selection.estimate`).
    """

    base_s: float = Field(ge=0, description="Fixed cost per run: text encoding, VAE decode, saving.")
    per_step_s: float = Field(ge=0, description="Seconds per sampler step.")
    ref_width: int = Field(default=1024, gt=0)
    ref_height: int = Field(default=1024, gt=0)


class TierSpec(Strict):
    steps: int = Field(gt=0, le=500)
    cfg: float = Field(ge=0, le=30)
    quality: float = Field(ge=0, le=100, description="Expected quality on the catalog's 0-100 scale.")
    resolution_scale: float = Field(
        default=1.0, gt=0, le=1, description="Fraction of the requested width/height this tier renders."
    )
    sampler: str | None = None
    scheduler: str | None = None


class Calibration(Strict):
    """Written by update_models_config.py from real runs; absent until calibrated."""

    samples: int = Field(ge=0)
    p50_s: float | None = Field(default=None, ge=0)
    p95_s: float | None = Field(default=None, ge=0)
    last_calibrated: str | None = None
    backend_time_models: dict[str, TimeModel] = Field(
        default_factory=dict, description="Fitted time model per backend id (overrides the catalog's)."
    )


class Model(Strict):
    id: Identifier
    family: str
    description: str = ""
    workflow: str = Field(description="Workflow template name under router/workflows (without .json).")
    workflows_by_purpose: dict[str, str] = Field(
        default_factory=dict,
        description="Purpose -> template, where a purpose needs another graph (img2img).",
    )
    files: dict[str, str] = Field(
        description="Slot name -> model file name as ComfyUI lists it (ckpt_name, unet_name, clip_name1...)."
    )
    purposes: tuple[str, ...] = Field(min_length=1)
    vram_mb: int = Field(gt=0, description="Peak VRAM at the reference resolution, weights and activations.")
    load_s: float = Field(ge=0, description="Seconds to load the model when it is not already on the GPU.")
    time: TimeModel
    tiers: dict[TierName, TierSpec] = Field(min_length=1)
    min_side_px: int | None = Field(default=None, gt=0)
    max_side_px: int | None = Field(default=None, gt=0)
    hosted_usd_per_image: float | None = Field(
        default=None, ge=0, description="Price of the same image on a hosted API (fal.ai, Replicate)."
    )
    hosted_source: str | None = None
    needs_inputs: tuple[Literal["image", "mask", "face"], ...] = ()
    enabled: bool = True
    calibrated: bool = False
    calibration: Calibration | None = None


class Catalog(Strict):
    schema_: str | None = Field(default=None, alias="$schema")
    version: int = 1
    docs: dict[str, str] = Field(
        default_factory=dict, description="Free text: where the numbers come from, notes for operators."
    )
    reference_gpu: str = "A100-80GB"
    backends: tuple[Backend, ...] = ()
    urgencies: dict[str, Urgency] = Field(min_length=1)
    default_urgency: str = "normal"
    scoring: ScoringWeights = ScoringWeights()
    vram_headroom_mb: int = Field(default=1024, ge=0)
    limits: InputLimits = InputLimits()
    max_ladder_rungs: int = Field(default=6, ge=1, le=50)
    models: tuple[Model, ...] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_references(self) -> Catalog:
        _unique("backends", [b.id for b in self.backends])
        _unique("models", [m.id for m in self.models])
        if self.default_urgency not in self.urgencies:
            raise ValueError(f"default_urgency {self.default_urgency!r} is not one of the urgencies")
        return self

    def model(self, model_id: str) -> Model | None:
        return next((m for m in self.models if m.id == model_id), None)

    def purposes(self) -> list[str]:
        return sorted({p for m in self.models for p in m.purposes})


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for ident in ids:
        if ident in seen:
            raise ValueError(f"duplicate id {ident!r} in {what}")
        seen.add(ident)


Urgency.model_rebuild()
