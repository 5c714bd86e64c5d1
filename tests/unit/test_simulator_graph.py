"""ComfyUI's execution order and the node signatures of the output cache."""

from __future__ import annotations

import copy
from typing import Any

from router.simulator.graph import ExecutionOrder, is_link, node_signatures


def txt2img() -> dict[str, Any]:
    """The stock graph, in the order ComfyUI's default workflow lists it."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": 2,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
    }


def run_order(prompt: dict[str, Any], cached: set[str]) -> list[str]:
    order = ExecutionOrder(prompt, lambda n: n in cached, lambda n: prompt[n]["class_type"] == "SaveImage")
    order.add("9")
    seen: list[str] = []
    while (node_id := order.next()) is not None:
        seen.append(node_id)
        order.complete(node_id)
    return seen


def test_cold_order_matches_real_comfyui() -> None:
    # sd15_cold_s1.ws.jsonl executes 4, 5, 7, 6, 3, 8, 9
    assert run_order(txt2img(), set()) == ["4", "5", "7", "6", "3", "8", "9"]


def test_cached_nodes_are_skipped() -> None:
    # interrupt_ksampler.ws.jsonl (5 cached) executes 4, 7, 6, 3 ...
    assert run_order(txt2img(), {"5"}) == ["4", "7", "6", "3", "8", "9"]
    # sd15_warm_*.ws.jsonl (4-7 cached) executes 3, 8, 9
    assert run_order(txt2img(), {"4", "5", "6", "7"}) == ["3", "8", "9"]


def test_signatures_follow_inputs_and_ancestors() -> None:
    first = node_signatures(txt2img(), lambda _: None)
    changed = txt2img()
    changed["3"]["inputs"]["seed"] = 2
    second = node_signatures(changed, lambda _: None)
    assert all(first[n] == second[n] for n in ("4", "5", "6", "7"))
    assert all(first[n] != second[n] for n in ("3", "8", "9"))
    renamed = copy.deepcopy(txt2img())
    assert node_signatures(renamed, lambda n: "salted" if n == "4" else None)["9"] != first["9"]


def test_is_link() -> None:
    assert is_link(["4", 0])
    assert not is_link([4, 0])
    assert not is_link(["4", True])
    assert not is_link(["4", 0, 1])
