"""Check a parsed request against the catalog in force and turn it into the selector's Need."""

from __future__ import annotations

from router.api.errors import field_error
from router.api.images import check_input_images
from router.api.schemas import SelectRequest
from router.catalog.schema import Catalog
from router.selection.types import Need


def resolve_need(req: SelectRequest, catalog: Catalog) -> tuple[Need, str]:
    """The Need and the urgency name. Raises ApiError (4xx) naming the field at fault."""
    _check_purpose(req, catalog)
    urgency = req.urgency or catalog.default_urgency
    if urgency not in catalog.urgencies:
        raise field_error("urgency", f"unknown urgency {urgency!r}; one of: {', '.join(catalog.urgencies)}")
    if req.model is not None and catalog.model(req.model) is None:
        known = ", ".join(m.id for m in catalog.models)
        raise field_error("model", f"unknown model {req.model!r}; one of: {known}")
    _check_generation_limits(req, catalog)
    inputs = _check_images(req, catalog)
    need = Need.for_urgency(
        catalog,
        urgency,
        req.deadline_s,
        purpose=req.purpose,
        target_tier=req.quality,
        width=req.width,
        height=req.height,
        batch_size=req.batch_size,
        min_quality=req.min_quality,
        max_cost_usd=req.max_cost_usd,
        steps=req.steps,
        cfg=req.cfg,
        model=req.model,
        allow_degrade=req.allow_degrade,
        inputs=inputs,
    )
    return need, urgency


def _check_purpose(req: SelectRequest, catalog: Catalog) -> None:
    purposes = catalog.purposes()
    if req.purpose not in purposes:
        raise field_error("purpose", f"unknown purpose {req.purpose!r}; one of: {', '.join(purposes)}")


def _check_generation_limits(req: SelectRequest, catalog: Catalog) -> None:
    lim = catalog.limits
    for name, side in (("width", req.width), ("height", req.height)):
        if not lim.min_side_px <= side <= lim.max_side_px:
            raise field_error(name, f"{side} px is outside {lim.min_side_px}-{lim.max_side_px} px")
        if side % lim.side_multiple_px:
            raise field_error(name, f"{side} px is not a multiple of {lim.side_multiple_px}")
    if req.width * req.height > lim.max_pixels:
        raise field_error("width", f"{req.width}x{req.height} is over the {lim.max_pixels} pixel limit")
    for name, text in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt)):
        if len(text) > lim.max_prompt_chars:
            raise field_error(name, f"{len(text)} characters is over the limit of {lim.max_prompt_chars}")
    if req.batch_size > lim.max_batch_size:
        raise field_error("batch_size", f"{req.batch_size} is over the limit of {lim.max_batch_size}")
    if req.steps is not None and req.steps > lim.max_steps:
        raise field_error("steps", f"{req.steps} is over the limit of {lim.max_steps}")
    if req.cfg is not None and req.cfg > lim.max_cfg:
        raise field_error("cfg", f"{req.cfg:g} is over the limit of {lim.max_cfg:g}")


def _check_images(req: SelectRequest, catalog: Catalog) -> frozenset[str]:
    """The input slots the request fills, after every image was decoded (router.api.images)."""
    check_input_images(req.images, req.face_image, req.mask, catalog.limits)
    inputs = set()
    if req.images:
        inputs.add("image")
    if req.face_image is not None:
        inputs.add("face")
    if req.mask is not None:
        inputs.add("mask")
    return frozenset(inputs)
