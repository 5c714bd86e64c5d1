"""Workflow templates: they load, render with every catalog model that names them, use real node
and input names, and missing_on_backend reports what a backend lacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.catalog import Catalog
from router.catalog.schema import Model
from router.comfyui import combo_options
from router.workflows import (
    FILE_SLOTS,
    Template,
    TemplateError,
    TemplateRegistry,
    load_template,
    missing_on_backend,
)
from router.workflows.templates import coerce_to_placeholder

SAMPLES = Path(__file__).parents[2].parent / "shared" / "comfyui" / "samples"
needs_samples = pytest.mark.skipif(
    not (SAMPLES / "object_info_all.json").exists(),
    reason=f"ComfyUI captures not found at {SAMPLES} (shared/comfyui/samples)",
)

TEMPLATE_NAMES = [
    "checkpoint_img2img",
    "checkpoint_inpaint",
    "checkpoint_txt2img",
    "faceswap_reactor",
    "flux_img2img",
    "flux_txt2img",
    "qwen_image_txt2img",
    "style_ipadapter",
]

# Input names of the custom nodes, as their upstream INPUT_TYPES declare them
# (Gourieff/ComfyUI-ReActor nodes.py, cubiq/ComfyUI_IPAdapter_plus IPAdapterPlus.py): a stock
# ComfyUI's object_info cannot check these.
CUSTOM_NODE_INPUTS: dict[str, tuple[set[str], set[str]]] = {
    "ReActorFaceSwap": (
        {
            "enabled",
            "input_image",
            "swap_model",
            "facedetection",
            "face_restore_model",
            "face_restore_visibility",
            "codeformer_weight",
            "detect_gender_input",
            "detect_gender_source",
            "input_faces_index",
            "source_faces_index",
            "console_log_level",
        },
        {"source_image", "face_model", "face_boost"},
    ),
    "ReActorRestoreFace": ({"image", "facedetection", "model", "visibility", "codeformer_weight"}, set()),
    "IPAdapterUnifiedLoader": ({"model", "preset"}, {"ipadapter"}),
    "IPAdapterAdvanced": (
        {
            "model",
            "ipadapter",
            "image",
            "weight",
            "weight_type",
            "combine_embeds",
            "start_at",
            "end_at",
            "embeds_scaling",
        },
        {"image_negative", "attn_mask", "clip_vision"},
    ),
}


@pytest.fixture(scope="module")
def registry() -> TemplateRegistry:
    return TemplateRegistry()


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    path = SAMPLES / "object_info_all.json"
    if not path.exists():
        pytest.skip(f"ComfyUI captures not found at {SAMPLES}")
    info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return info


def model_values(template: Template, model: Model, tier: str) -> dict[str, object]:
    """What the router gives render(): the model's files, the tier's numbers, the request's inputs."""
    spec = model.tiers[tier]  # type: ignore[index]
    values: dict[str, object] = {
        **model.files,
        "prompt": "a red bicycle leaning on a wall",
        "seed": 123456789,
        "steps": spec.steps,
        "cfg": spec.cfg,
        "sampler": spec.sampler,
        "scheduler": spec.scheduler,
        "width": 768,
        "height": 512,
        "filename_prefix": f"router/{model.id}",
    }
    for slot, upload in (("image", "in_1.png"), ("mask", "mask_1.png"), ("face_image", "face_1.png")):
        if slot in template.slots:
            values[slot] = upload
    return {k: v for k, v in values.items() if k in template.slots}


def catalog_pairs(catalog: Catalog) -> list[tuple[Model, str]]:
    pairs = []
    for model in catalog.models:
        for name in {model.workflow, *model.workflows_by_purpose.values()}:
            pairs.append((model, name))
    return pairs


def links(graph: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    return [
        (node_id, name, value)
        for node_id, node in graph.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ]


# --- loading ----------------------------------------------------------------------------------


def test_registry_lists_and_caches_the_templates(registry: TemplateRegistry) -> None:
    assert registry.names() == TEMPLATE_NAMES
    first = registry.get("flux_txt2img")
    assert registry.get("flux_txt2img") is first
    assert first.name == "flux_txt2img"
    assert set(registry.all()) == set(TEMPLATE_NAMES)


def test_every_catalog_workflow_has_a_template(registry: TemplateRegistry, catalog: Catalog) -> None:
    for model, name in catalog_pairs(catalog):
        assert name in registry.names(), f"{model.id} names missing template {name}"


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_template_is_self_consistent(registry: TemplateRegistry, name: str) -> None:
    template = registry.get(name)
    assert template.description
    assert "seed" in template.slots and "steps" in template.slots and "cfg" in template.slots
    assert "filename_prefix" in template.slots
    assert any(node.class_type == "SaveImage" for node in template.graph.values())
    for slot, (cls, input_name) in template.file_inputs().items():
        assert slot in FILE_SLOTS
        node_id = template.slots[slot][0][0]
        assert template.graph[node_id].class_type == cls
        assert input_name in template.graph[node_id].inputs


# --- rendering with the catalog ---------------------------------------------------------------


def test_every_template_renders_with_every_catalog_model_that_names_it(
    registry: TemplateRegistry, catalog: Catalog
) -> None:
    rendered = 0
    for model, name in catalog_pairs(catalog):
        template = registry.get(name)
        for tier in model.tiers:
            values = model_values(template, model, tier)
            graph = template.render(values)
            rendered += 1
            for slot, places in template.slots.items():
                expected = values.get(slot)
                if expected is None:
                    expected = template.defaults[slot]
                for node_id, input_name in places:
                    got = graph[node_id]["inputs"][input_name]
                    assert got == expected, f"{name} {model.id} {tier}: {slot} at {node_id}.{input_name}"
                    assert type(got) is type(template.graph[node_id].inputs[input_name])
            for node_id, input_name, (target, _) in links(graph):
                assert target in graph, f"{name}: {node_id}.{input_name} links to missing {target}"
            for slot, filename in model.files.items():
                assert slot in template.slots, f"{model.id} has file {slot} that {name} does not take"
                cls, input_name = template.file_inputs()[slot]
                assert filename in [
                    node["inputs"][input_name] for node in graph.values() if node["class_type"] == cls
                ]
    assert rendered >= 30


def test_flux_cfg_goes_to_flux_guidance_and_ksampler_cfg_stays_1(registry: TemplateRegistry) -> None:
    template = registry.get("flux_txt2img")
    graph = template.render(
        {
            "prompt": "p",
            "seed": 1,
            "steps": 20,
            "cfg": 3.5,
            "unet_name": "flux1-dev.safetensors",
            "clip_name1": "t5xxl_fp16.safetensors",
            "clip_name2": "clip_l.safetensors",
            "vae_name": "ae.safetensors",
        }
    )
    by_class = {node["class_type"]: node["inputs"] for node in graph.values()}
    assert by_class["FluxGuidance"]["guidance"] == 3.5
    assert by_class["KSampler"]["cfg"] == 1.0
    assert by_class["DualCLIPLoader"]["type"] == "flux"
    assert "EmptySD3LatentImage" in by_class


def test_faceswap_detailer_steps_are_the_tier_steps(registry: TemplateRegistry, catalog: Catalog) -> None:
    model = catalog.model("faceswap-reactor")
    assert model is not None
    template = registry.get("faceswap_reactor")
    graph = template.render(model_values(template, model, "high"))
    by_class = {node["class_type"]: node["inputs"] for node in graph.values()}
    assert by_class["KSampler"]["steps"] == model.tiers["high"].steps
    assert by_class["ReActorFaceSwap"]["swap_model"] == "inswapper_128.onnx"
    assert by_class["ReActorRestoreFace"]["model"] == "GFPGANv1.4.pth"
    loaded = sorted(n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage")
    assert loaded == ["face_1.png", "in_1.png"]


def test_render_rejects_unknown_and_missing_slots(registry: TemplateRegistry) -> None:
    template = registry.get("checkpoint_txt2img")
    base: dict[str, object] = {
        "prompt": "p",
        "seed": 1,
        "steps": 20,
        "cfg": 7.0,
        "ckpt_name": "x.safetensors",
    }
    with pytest.raises(ValueError, match=r"unknown slot.*lora_name, unet_name"):
        template.render({**base, "unet_name": "u", "lora_name": "l"})
    with pytest.raises(ValueError, match="left empty: ckpt_name, prompt"):
        template.render({"seed": 1, "steps": 20, "cfg": 7.0, "prompt": "  "})
    with pytest.raises(ValueError, match="slot steps: expected int"):
        template.render({**base, "steps": 20.5})
    with pytest.raises(ValueError, match="slot seed: expected int, got str"):
        template.render({**base, "seed": "1"})
    graph = template.render({**base, "steps": 20.0, "cfg": 7, "sampler": None})
    assert graph["3"]["inputs"]["steps"] == 20 and isinstance(graph["3"]["inputs"]["steps"], int)
    assert graph["3"]["inputs"]["cfg"] == 7.0 and isinstance(graph["3"]["inputs"]["cfg"], float)
    assert graph["3"]["inputs"]["sampler_name"] == "euler"  # None -> the default


def test_render_returns_a_deep_copy(registry: TemplateRegistry) -> None:
    template = registry.get("checkpoint_txt2img")
    values: dict[str, object] = {
        "prompt": "p",
        "seed": 1,
        "steps": 20,
        "cfg": 7.0,
        "ckpt_name": "x.safetensors",
    }
    graph = template.render(values)
    graph["3"]["inputs"]["model"][0] = "mutated"
    graph["6"]["inputs"]["text"] = "mutated"
    again = template.render(values)
    assert again["3"]["inputs"]["model"] == ["4", 0]
    assert again["6"]["inputs"]["text"] == "p"


@pytest.mark.parametrize(
    ("value", "placeholder", "expected"),
    [(3, 1.0, 3.0), (3.0, 1, 3), (True, False, True), ("a", "", "a"), ([1], None, [1])],
)
def test_coercion(value: object, placeholder: object, expected: object) -> None:
    got = coerce_to_placeholder(value, placeholder)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("value", "placeholder"), [(True, 1), (1, True), (2.5, 1), ("1", 1), (1, "")])
def test_coercion_refuses_lossy_or_wrong_types(value: object, placeholder: object) -> None:
    with pytest.raises(TypeError):
        coerce_to_placeholder(value, placeholder)


# --- real node classes and input names --------------------------------------------------------


@needs_samples
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_node_classes_exist_or_are_declared_custom(
    registry: TemplateRegistry, object_info: dict[str, Any], name: str
) -> None:
    template = registry.get(name)
    custom = set(template.requires.custom_nodes)
    for cls in template.node_classes():
        assert cls in object_info or cls in custom, f"{name}: {cls} is neither stock nor declared custom"
    assert not custom & set(object_info), "a declared custom node is in stock ComfyUI"


@needs_samples
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_inputs_are_the_real_ones(registry: TemplateRegistry, object_info: dict[str, Any], name: str) -> None:
    """Every input a template sets is declared by the node, every required input is set, and
    fixed combo values (sampler, scheduler, clip type...) are among the node's choices."""
    template = registry.get(name)
    for node_id, node in template.graph.items():
        where = f"{name} node {node_id} ({node.class_type})"
        if node.class_type in object_info:
            declared = object_info[node.class_type]["input"]
            required = set(declared.get("required", {}))
            optional = set(declared.get("optional", {}))
        else:
            required, optional = CUSTOM_NODE_INPUTS[node.class_type]
        given = set(node.inputs)
        assert given <= required | optional, f"{where}: unknown inputs {given - required - optional}"
        assert required <= given, f"{where}: missing required inputs {required - given}"
        if node.class_type not in object_info:
            continue
        for input_name, value in node.inputs.items():
            choices = combo_options(object_info[node.class_type], input_name)
            if choices and isinstance(value, str) and value:  # file combos are empty in this capture
                assert value in choices, f"{where}: {input_name}={value!r} not in {choices[:8]}..."


# --- missing_on_backend -----------------------------------------------------------------------


@needs_samples
def test_missing_on_backend_finds_missing_files(
    registry: TemplateRegistry, object_info: dict[str, Any]
) -> None:
    files = {
        "unet_name": "flux1-dev.safetensors",
        "clip_name1": "t5xxl_fp16.safetensors",
        "clip_name2": "clip_l.safetensors",
        "vae_name": "ae.safetensors",
    }
    assert missing_on_backend(registry.get("flux_txt2img"), files, object_info) == [
        "file flux1-dev.safetensors for UNETLoader.unet_name",
        "file t5xxl_fp16.safetensors for DualCLIPLoader.clip_name1",
        "file clip_l.safetensors for DualCLIPLoader.clip_name2",
        "file ae.safetensors for VAELoader.vae_name",
    ]


@needs_samples
def test_missing_on_backend_finds_missing_custom_nodes(
    registry: TemplateRegistry, object_info: dict[str, Any]
) -> None:
    files = {
        "ckpt_name": "x.safetensors",
        "swap_model": "inswapper_128.onnx",
        "face_restore_model": "GFPGANv1.4.pth",
    }
    missing = missing_on_backend(registry.get("faceswap_reactor"), files, object_info)
    assert missing == [
        "node ReActorFaceSwap",
        "node ReActorRestoreFace",
        "file x.safetensors for CheckpointLoaderSimple.ckpt_name",
    ]


@needs_samples
def test_missing_on_backend_is_empty_when_the_backend_has_everything(registry: TemplateRegistry) -> None:
    with_files = json.loads((SAMPLES / "object_info_CheckpointLoaderSimple_with_files.json").read_text())
    everything = {**json.loads((SAMPLES / "object_info_all.json").read_text()), **with_files}
    template = registry.get("checkpoint_txt2img")
    assert missing_on_backend(template, {"ckpt_name": "tiny-sd15-random.safetensors"}, everything) == []
    # slots the template does not take are not the backend's problem
    assert (
        missing_on_backend(
            template, {"ckpt_name": "tiny-sd15-random.safetensors", "unet_name": "u"}, everything
        )
        == []
    )


def test_missing_on_backend_reads_both_combo_formats(registry: TemplateRegistry) -> None:
    template = registry.get("qwen_image_txt2img")
    base: dict[str, Any] = {cls: {"input": {"required": {}}} for cls in template.node_classes()}
    old_format = {
        **base,
        "UNETLoader": {
            "input": {"required": {"unet_name": [["qwen.safetensors"]], "weight_dtype": [["default"]]}}
        },
        "CLIPLoader": {"input": {"required": {"clip_name": [["te.safetensors"], {}]}}},
        "VAELoader": {"input": {"required": {"vae_name": [["vae.safetensors"]]}}},
    }
    new_format = {
        **base,
        "UNETLoader": {"input": {"required": {"unet_name": ["COMBO", {"options": ["qwen.safetensors"]}]}}},
        "CLIPLoader": {
            "input": {"required": {"clip_name": ["COMBO", {"multiselect": False, "options": []}]}}
        },
        "VAELoader": {"input": {"required": {"vae_name": ["COMBO", {"options": ["vae.safetensors"]}]}}},
    }
    files = {"unet_name": "qwen.safetensors", "clip_name": "te.safetensors", "vae_name": "vae.safetensors"}
    assert missing_on_backend(template, files, old_format) == []
    assert missing_on_backend(template, files, new_format) == ["file te.safetensors for CLIPLoader.clip_name"]
    without_node = {k: v for k, v in new_format.items() if k != "ModelSamplingAuraFlow"}
    assert missing_on_backend(template, files, without_node)[0] == "node ModelSamplingAuraFlow"


# --- invalid template files -------------------------------------------------------------------


def _write(tmp_path: Path, name: str, doc: dict[str, Any]) -> None:
    (tmp_path / f"{name}.json").write_text(json.dumps(doc))


def _minimal() -> dict[str, Any]:
    return {
        "description": "d",
        "requires": {"custom_nodes": []},
        "slots": {"prompt": [["1", "text"]]},
        "defaults": {},
        "graph": {
            "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
            "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ""}},
        },
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["slots"].update(seed=[["9", "seed"]]), "slot seed points at missing node 9"),
        (lambda d: d["slots"].update(seed=[["1", "seed"]]), "not an input of CLIPTextEncode"),
        (lambda d: d["slots"].update(clip=[["1", "clip"]]), "would overwrite the link"),
        (lambda d: d["defaults"].update(nope=1), "default for unknown slot nope"),
        (lambda d: d["defaults"].update(prompt=3), "expected str"),
        (lambda d: d["graph"]["1"]["inputs"].update(clip=["7", 0]), "links to missing node 7"),
        (lambda d: d["requires"].update(custom_nodes=["ReActorFaceSwap"]), "not in the graph"),
    ],
)
def test_invalid_templates_are_refused_with_the_reason(tmp_path: Path, change: Any, message: str) -> None:
    doc = _minimal()
    _write(tmp_path, "ok", doc)
    assert load_template("ok", tmp_path).render({"prompt": "p"})["1"]["inputs"]["text"] == "p"
    change(doc)
    _write(tmp_path, "bad", doc)
    with pytest.raises(TemplateError, match=message):
        load_template("bad", tmp_path)


def test_unknown_and_malformed_template_names(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="unknown template"):
        load_template("nope", tmp_path)
    with pytest.raises(TemplateError, match="invalid template name"):
        load_template("../etc/passwd", tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(TemplateError, match="cannot read"):
        load_template("broken", tmp_path)
