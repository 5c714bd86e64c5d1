"""How long each node of a prompt takes on the simulated GPU, from the catalog's time model.

A prompt runs one catalog model, found from the file names its nodes name. Its true durations are:
- load: the model's `load_s`, paid when it is not resident, split over the nodes that name its files
  (the rest, if those nodes are cached, at the node that puts the model on the GPU);
- per sampler step: the time model's `per_step_s` at that sampler's size and batch;
- fixed part: `base_s` at the main sampler's size, split over text encoding, VAE and saving nodes.
All are divided by the GPU's speed factor and multiplied by the slowdown and by seeded lognormal noise
(one draw per prompt for the run, one for the load), so a cold run costs `load_s + run_seconds(...)`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.catalog import Catalog, Model, TimeModel
from router.selection.estimate import run_seconds
from router.simulator.gpu import lognormal_factor
from router.simulator.graph import is_link, node_inputs
from router.simulator.shapes import SAMPLERS, SamplerWork, ShapeInference

NOISE_SIGMA = 0.05
MODEL_FREE_NODE_S = 0.002  # EmptyImage, SaveImage... without a model: a few milliseconds

# Share of a model's load time by the input that names the file.
SLOT_LOAD_WEIGHT: dict[str, float] = {
    "ckpt_name": 1.0,
    "unet_name": 0.65,
    "clip_name": 0.25,
    "clip_name1": 0.15,
    "clip_name2": 0.1,
    "vae_name": 0.05,
}
OTHER_SLOT_LOAD_WEIGHT = 0.1

# Share of the time model's fixed part (base_s) by node class.
BASE_WEIGHT: dict[str, float] = {
    "CLIPTextEncode": 0.1,
    "VAEDecode": 0.4,
    "VAEEncode": 0.2,
    "VAEEncodeForInpaint": 0.2,
    "SaveImage": 0.1,
    "PreviewImage": 0.05,
    "ImageScale": 0.02,
    "ReActorFaceSwap": 1.0,
    "ReActorRestoreFace": 0.4,
    "IPAdapterUnifiedLoader": 0.05,
    "IPAdapterAdvanced": 0.1,
}
# Nodes that need the model on the GPU when the graph has no sampler to do it.
GPU_NODES: frozenset[str] = frozenset(
    {
        "CLIPTextEncode",
        "VAEDecode",
        "VAEEncode",
        "VAEEncodeForInpaint",
        "ReActorFaceSwap",
        "ReActorRestoreFace",
    }
)


def identify_model(catalog: Catalog, prompt: Mapping[str, Any]) -> Model | None:
    """The catalog model whose files the graph names most (then most completely; then catalog order)."""
    named = {
        value
        for node_id in prompt
        for value in node_inputs(prompt, node_id).values()
        if isinstance(value, str) and not is_link(value)
    }
    best: Model | None = None
    best_score = (0, 0.0)
    for model in catalog.models:
        files = set(model.files.values())
        matched = len(files & named)
        score = (matched, matched / len(files) if files else 0.0)
        if matched and score > best_score:
            best, best_score = model, score
    return best


@dataclass(frozen=True)
class RunPlan:
    model: Model | None
    speed_factor: float
    load_shares: dict[str, float]  # node id -> share of load_s (sums to 1)
    base_shares: dict[str, float]  # node id -> share of the fixed part (sums to 1)
    main_work: SamplerWork
    placement_classes: frozenset[str]
    run_noise: float
    load_noise: float

    def load_seconds(self, share: float) -> float:
        return 0.0 if self.model is None else self.model.load_s * share * self.load_noise

    def base_seconds(self, node_id: str) -> float:
        if self.model is None:
            return MODEL_FREE_NODE_S
        share = self.base_shares.get(node_id)
        if share is None:
            return MODEL_FREE_NODE_S
        work = self.main_work
        fixed = run_seconds(self._tm(), 0, work.width, work.height, work.batch, self.speed_factor)
        return fixed * share * self.run_noise

    def step_seconds(self, work: SamplerWork) -> float:
        if self.model is None:
            return MODEL_FREE_NODE_S
        tm = self._tm().model_copy(update={"base_s": 0.0})
        return run_seconds(tm, 1, work.width, work.height, work.batch, self.speed_factor) * self.run_noise

    def _tm(self) -> TimeModel:
        assert self.model is not None
        return self.model.time


def make_plan(
    catalog: Catalog,
    prompt: Mapping[str, Any],
    shapes: ShapeInference,
    cached: set[str],
    speed_factor: float,
    rng: random.Random,
) -> RunPlan:
    # Draw the noise for every prompt, model or not, so a seed gives one sequence of durations.
    run_noise = lognormal_factor(rng.gauss(0.0, 1.0), NOISE_SIGMA)
    load_noise = lognormal_factor(rng.gauss(0.0, 1.0), NOISE_SIGMA)
    model = identify_model(catalog, prompt)
    samplers = [n for n in prompt if prompt[n].get("class_type") in SAMPLERS]
    main_work = shapes.sampler_work(samplers[0]) if samplers else _reference_work(model)
    uncached_sampler = any(n not in cached for n in samplers)
    return RunPlan(
        model=model,
        speed_factor=speed_factor,
        load_shares=_load_shares(prompt, model),
        base_shares=_base_shares(prompt, samplers),
        main_work=main_work,
        placement_classes=SAMPLERS if uncached_sampler else GPU_NODES,
        run_noise=run_noise,
        load_noise=load_noise,
    )


def _reference_work(model: Model | None) -> SamplerWork:
    if model is None:
        return SamplerWork(0, 512, 512, 1)
    return SamplerWork(0, model.time.ref_width, model.time.ref_height, 1)


def _base_shares(prompt: Mapping[str, Any], samplers: list[str]) -> dict[str, float]:
    shares = _normalised({n: BASE_WEIGHT.get(prompt[n].get("class_type", ""), 0.0) for n in prompt})
    # A graph of loaders and samplers only still pays the fixed part, at its samplers.
    return shares or _normalised({n: 1.0 for n in samplers})


def _load_shares(prompt: Mapping[str, Any], model: Model | None) -> dict[str, float]:
    if model is None:
        return {}
    files = set(model.files.values())
    weights: dict[str, float] = {}
    for node_id in prompt:
        for name, value in node_inputs(prompt, node_id).items():
            if isinstance(value, str) and value in files:
                weights[node_id] = weights.get(node_id, 0.0) + SLOT_LOAD_WEIGHT.get(
                    name, OTHER_SLOT_LOAD_WEIGHT
                )
    return _normalised(weights)


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    if total <= 0:
        return {}
    return {key: value / total for key, value in weights.items() if value > 0}
