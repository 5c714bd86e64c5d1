"""Helpers for tests that run against the simulator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import requests
import websocket

from router.catalog import Catalog

JsonDict = dict[str, Any]


def fast_catalog(
    catalog: Catalog, *, load_s: float = 0.05, base_s: float = 0.02, per_step_s: float = 0.01
) -> Catalog:
    """The same backends, models and files with tiny times, so a simulated run takes milliseconds.

    Reference sizes are kept, so times still scale with pixels, batch and the GPU's speed factor.
    """
    models = tuple(
        m.model_copy(
            update={
                "load_s": load_s,
                "time": m.time.model_copy(update={"base_s": base_s, "per_step_s": per_step_s}),
                "calibration": None,
            }
        )
        for m in catalog.models
    )
    return catalog.model_copy(update={"models": models})


def checkpoint_graph(
    ckpt_name: str,
    *,
    steps: int = 4,
    width: int = 512,
    height: int = 512,
    batch_size: int = 1,
    seed: int = 1,
    prefix: str = "sim",
    positive: str = "a photo of a cat",
) -> JsonDict:
    """ComfyUI's stock text-to-image graph (the node ids of its default workflow)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": batch_size},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def flux_graph(
    unet_name: str = "flux1-dev.safetensors",
    clip_name1: str = "t5xxl_fp16.safetensors",
    *,
    steps: int = 4,
    width: int = 1024,
    height: int = 1024,
    seed: int = 1,
    prefix: str = "flux",
) -> JsonDict:
    """A FLUX.1 graph: UNETLoader, DualCLIPLoader, VAELoader, FluxGuidance, EmptySD3LatentImage."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}},
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": clip_name1, "clip_name2": "clip_l.safetensors", "type": "flux"},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 3.5}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "7": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 1},
        },
        "8": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1.0,
                "model": ["1", 0],
                "positive": ["5", 0],
                "negative": ["6", 0],
                "latent_image": ["7", 0],
            },
        },
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": prefix}},
    }


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http")


class WsRecorder:
    """A WebSocket client of a (simulated or real) ComfyUI that keeps every message it receives."""

    def __init__(self, base_url: str, client_id: str | None = None, timeout_s: float = 10.0) -> None:
        self.client_id = client_id or uuid.uuid4().hex
        self.messages: list[JsonDict] = []
        self._ws = websocket.create_connection(
            f"{ws_url(base_url)}/ws?clientId={self.client_id}", timeout=timeout_s
        )

    def next(self) -> JsonDict:
        """The next JSON message (binary preview frames are skipped)."""
        while True:
            raw = self._ws.recv()
            if isinstance(raw, str):
                message: JsonDict = json.loads(raw)
                self.messages.append(message)
                return message

    def until(self, predicate: Callable[[JsonDict], bool]) -> list[JsonDict]:
        """Messages up to and including the first one that satisfies `predicate`."""
        seen: list[JsonDict] = []
        while True:
            message = self.next()
            seen.append(message)
            if predicate(message):
                return seen

    def until_done(self, prompt_id: str) -> list[JsonDict]:
        """Messages until ComfyUI says the prompt is finished (`executing` with `node: null`)."""
        return self.until(
            lambda m: m["type"] == "executing" and m["data"] == {"node": None, "prompt_id": prompt_id}
        )

    def send(self, message: JsonDict) -> None:
        self._ws.send(json.dumps(message))

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> WsRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def submit(base_url: str, prompt: JsonDict, client_id: str | None = None, **fields: Any) -> str:
    """POST /prompt; returns the prompt id (raises on a validation error)."""
    body: JsonDict = {"prompt": prompt, **fields}
    if client_id is not None:
        body["client_id"] = client_id
    response = requests.post(f"{base_url}/prompt", json=body, timeout=10)
    response.raise_for_status()
    prompt_id: str = response.json()["prompt_id"]
    return prompt_id


def message_types(messages: list[JsonDict]) -> list[str]:
    return [str(m["type"]) for m in messages]
