"""Prompt validation against the error captures of a real ComfyUI 0.8.0 (shared/comfyui/samples)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from router.catalog import Catalog
from router.simulator.nodes import CUSTOM_NODE_CLASSES, NodeDefinitions
from router.simulator.validation import validate_prompt
from router.workflows.templates import TemplateRegistry

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "comfyui" / "samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="the ComfyUI captures are not available")


def template_classes() -> tuple[set[str], set[str]]:
    """Node classes the router's workflow templates use: (core, custom). The simulator must
    define all of them, or backends it serves would be filtered out as unsupported."""
    templates = TemplateRegistry().all().values()
    custom = {c for t in templates for c in t.requires.custom_nodes}
    return {c for t in templates for c in t.node_classes()} - custom, custom


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def defs(catalog: Catalog) -> dict[str, Any]:
    return NodeDefinitions(catalog, custom_nodes=True, list_input_images=lambda: ["photo.png"]).object_info()


def validate(defs: dict[str, Any], prompt: dict[str, Any]) -> Any:
    return validate_prompt(prompt, defs, lambda name: name == "photo.png")


def test_every_required_class_is_described(catalog: Catalog) -> None:
    with_custom = NodeDefinitions(catalog, custom_nodes=True, list_input_images=list).class_names()
    without = NodeDefinitions(catalog, custom_nodes=False, list_input_images=list).class_names()
    core, custom = template_classes()
    assert core and custom <= CUSTOM_NODE_CLASSES
    assert core | CUSTOM_NODE_CLASSES <= set(with_custom)
    assert core <= set(without)
    assert not CUSTOM_NODE_CLASSES & set(without)


def test_loader_choices_come_from_the_catalog(defs: dict[str, Any], catalog: Catalog) -> None:
    ckpts = defs["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    unets = defs["UNETLoader"]["input"]["required"]["unet_name"][0]
    assert "v1-5-pruned-emaonly.safetensors" in ckpts
    assert "flux1-dev.safetensors" in unets
    assert "t5xxl_fp16.safetensors" in defs["DualCLIPLoader"]["input"]["required"]["clip_name1"][0]
    assert defs["VAELoader"]["input"]["required"]["vae_name"][0][-1] == "pixel_space"
    assert "inswapper_128.onnx" in defs["ReActorFaceSwap"]["input"]["required"]["swap_model"][0]
    assert defs["ReActorFaceSwap"]["input"]["required"]["face_restore_model"][0][:2] == [
        "none",
        "GFPGANv1.4.pth",
    ]
    assert defs["LoadImage"]["input"]["required"]["image"][0] == ["photo.png"]


@needs_samples
@pytest.mark.parametrize(
    "name", ["err_bad_link", "err_bad_values", "err_missing_input", "err_no_outputs", "err_unknown_node"]
)
def test_error_bodies_equal_the_captures(defs: dict[str, Any], name: str) -> None:
    result = validate(defs, sample(f"{name}.prompt_request.json")["prompt"])
    expected = sample(f"{name}.prompt_response.json")
    assert expected["http_status"] == 400
    assert not result.ok
    assert {"error": result.error, "node_errors": result.node_errors} == expected["body"]


@needs_samples
def test_unknown_checkpoint_is_value_not_in_list(defs: dict[str, Any]) -> None:
    result = validate(defs, sample("err_ckpt_not_in_list.prompt_request.json")["prompt"])
    expected = sample("err_ckpt_not_in_list.prompt_response.json")["body"]
    assert result.error == expected["error"]
    error = result.node_errors["4"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert error["details"].startswith(
        "ckpt_name: 'does-not-exist.safetensors' not in ['sd_xl_base_1.0.safetensors',"
    )
    assert result.node_errors["4"]["dependent_outputs"] == ["9"]


@needs_samples
def test_valid_prompt_is_converted_in_place(defs: dict[str, Any]) -> None:
    prompt = sample("sd15_cold_s1.prompt_request.json")["prompt"]
    prompt["4"]["inputs"]["ckpt_name"] = "v1-5-pruned-emaonly.safetensors"
    prompt["3"]["inputs"]["cfg"] = 7
    prompt["3"]["inputs"]["steps"] = "4"
    result = validate(defs, prompt)
    assert result.ok, result.node_errors
    assert result.outputs == ["9"]
    assert prompt["3"]["inputs"]["cfg"] == 7.0
    assert isinstance(prompt["3"]["inputs"]["cfg"], float)
    assert prompt["3"]["inputs"]["steps"] == 4


def image_graph(image: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }


def test_load_image_checks_the_file_not_the_list(defs: dict[str, Any]) -> None:
    assert validate(defs, image_graph("photo.png")).ok
    result = validate(defs, image_graph("missing.png"))
    assert result.node_errors["1"]["errors"] == [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": "image - Invalid image file: missing.png",
            "extra_info": {"input_name": "image"},
        }
    ]


def test_one_bad_output_does_not_block_a_good_one(defs: dict[str, Any]) -> None:
    prompt = image_graph("photo.png")
    prompt["3"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 5], "filename_prefix": "y"}}
    result = validate(defs, copy.deepcopy(prompt))
    assert result.ok
    assert result.outputs == ["2"]
    assert result.node_errors["3"]["errors"][0]["type"] == "exception_during_validation"
    assert result.node_errors["3"]["errors"][0]["details"] == "tuple index out of range"


def test_link_type_mismatch_and_smaller_than_min(defs: dict[str, Any]) -> None:
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 512, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    result = validate(defs, prompt)
    errors = result.node_errors["2"]["errors"]
    assert errors[0]["type"] == "return_type_mismatch"
    assert errors[0]["details"] == "images, received_type(LATENT) mismatch input_type(IMAGE)"
    assert result.error is not None
    assert result.error["type"] == "prompt_outputs_failed_validation"


def test_partial_execution_targets(defs: dict[str, Any]) -> None:
    prompt = image_graph("photo.png")
    prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    result = validate_prompt(prompt, defs, lambda _: True, partial_targets=["3"])
    assert result.outputs == ["3"]
