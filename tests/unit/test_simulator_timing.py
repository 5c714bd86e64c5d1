"""Which catalog model a graph runs, its true durations, and the fault requests."""

from __future__ import annotations

import random
from typing import Any

import pytest

from router.catalog import Catalog
from router.selection.estimate import run_seconds
from router.simulator.faults import FaultError, Faults, apply_faults
from router.simulator.shapes import SamplerWork, ShapeInference
from router.simulator.timing import identify_model, make_plan


def flux_graph(
    unet: str, clip1: str, steps: int = 20, width: int = 1024, height: int = 768
) -> dict[str, Any]:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": clip1, "clip_name2": "clip_l.safetensors", "type": "flux"},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["2", 0]}},
        "5": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 2},
        },
        "6": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["4", 0],
                "negative": ["4", 0],
                "latent_image": ["5", 0],
                "seed": 3,
                "steps": steps,
            },
        },
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["3", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "flux"}},
    }


def shapes_of(prompt: dict[str, Any]) -> ShapeInference:
    counts = {"KSampler": 1, "EmptySD3LatentImage": 1, "VAEDecode": 1, "UNETLoader": 1}
    return ShapeInference(prompt, counts, lambda _: None)


def test_identify_prefers_the_model_whose_files_the_graph_names_most(catalog: Catalog) -> None:
    fp16 = identify_model(catalog, flux_graph("flux1-dev.safetensors", "t5xxl_fp16.safetensors"))
    fp8 = identify_model(catalog, flux_graph("flux1-dev-fp8.safetensors", "t5xxl_fp8_e4m3fn.safetensors"))
    assert (fp16 and fp16.id, fp8 and fp8.id) == ("flux1-dev-fp16", "flux1-dev-fp8")
    sdxl = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}
    }
    found = identify_model(catalog, sdxl)
    assert found is not None and found.id == "sdxl-base"  # not the face swap that also names it
    swap = dict(sdxl)
    swap["2"] = {"class_type": "ReActorFaceSwap", "inputs": {"swap_model": "inswapper_128.onnx"}}
    found = identify_model(catalog, swap)
    assert found is not None and found.id == "faceswap-reactor"
    assert identify_model(catalog, {"1": {"class_type": "EmptyImage", "inputs": {}}}) is None


def test_plan_reproduces_the_time_model(catalog: Catalog) -> None:
    prompt = flux_graph("flux1-dev.safetensors", "t5xxl_fp16.safetensors", steps=20)
    plan = make_plan(catalog, prompt, shapes_of(prompt), set(), 0.5, random.Random(1))
    model = catalog.model("flux1-dev-fp16")
    assert model is not None and plan.model == model
    work = SamplerWork(20, 1024, 768, 2)
    assert shapes_of(prompt).sampler_work("6") == work
    steps_s = plan.step_seconds(work) * 20
    fixed_s = sum(plan.base_seconds(n) for n in plan.base_shares)
    expected = run_seconds(model.time, 20, 1024, 768, 2, 0.5) * plan.run_noise
    assert steps_s + fixed_s == pytest.approx(expected)
    assert sum(plan.load_shares.values()) == pytest.approx(1.0)
    assert set(plan.load_shares) == {"1", "2", "3"}
    assert plan.load_seconds(1.0) == pytest.approx(model.load_s * plan.load_noise)
    assert 0.8 < plan.run_noise < 1.25


def test_plan_noise_is_seeded(catalog: Catalog) -> None:
    prompt = flux_graph("flux1-dev.safetensors", "t5xxl_fp16.safetensors")
    first = make_plan(catalog, prompt, shapes_of(prompt), set(), 1.0, random.Random(7))
    again = make_plan(catalog, prompt, shapes_of(prompt), set(), 1.0, random.Random(7))
    other = make_plan(catalog, prompt, shapes_of(prompt), set(), 1.0, random.Random(8))
    assert first.run_noise == again.run_noise != other.run_noise


def test_advanced_sampler_counts_only_its_window() -> None:
    prompt = {
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 480, "batch_size": 1}},
        "6": {
            "class_type": "KSamplerAdvanced",
            "inputs": {"latent_image": ["5", 0], "steps": 30, "start_at_step": 10, "end_at_step": 10000},
        },
    }
    counts = {"EmptyLatentImage": 1, "KSamplerAdvanced": 1}
    assert ShapeInference(prompt, counts, lambda _: None).sampler_work("6") == SamplerWork(20, 640, 480, 1)


def test_faults_are_checked_and_reset() -> None:
    faults = apply_faults(Faults(), {"oom_next": 2, "hang": True, "slowdown": 3})
    assert (faults.oom_next, faults.hang, faults.slowdown) == (2, True, 3.0)
    assert apply_faults(faults, {"reset": True}) == Faults()
    assert apply_faults(faults, {"reset": True, "http_500": True}) == Faults(http_500=True)
    with pytest.raises(FaultError, match="unknown fault"):
        apply_faults(faults, {"explode": True})
    with pytest.raises(FaultError):
        apply_faults(faults, {"slowdown": 0})
