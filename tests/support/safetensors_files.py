"""Tiny but real `.safetensors` files (header + zero bytes) and ComfyUI model folders for tests.

No torch or safetensors package: the format is 8 bytes of little-endian header length, the JSON
header, then the tensor bytes, which are all zeros here.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "I64": 8}

# Tensor names that identify each family (see router/catalog/update/inventory.detect_family).
FAMILY_KEYS: dict[str, list[str]] = {
    "flux1": ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight"],
    "sdxl": [
        "model.diffusion_model.input_blocks.0.0.weight",
        "conditioner.embedders.1.model.ln_final.weight",
        "first_stage_model.decoder.conv_in.weight",
    ],
    "sd15": [
        "model.diffusion_model.input_blocks.0.0.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    ],
    "qwen-image": [
        "transformer_blocks.0.img_mod.1.weight",
        "transformer_blocks.0.txt_mod.1.weight",
        "img_in.weight",
    ],
    "unknown": ["encoder.layers.0.weight", "decoder.layers.0.weight"],
}


def write_safetensors(
    path: Path,
    tensors: Mapping[str, tuple[str, Sequence[int]]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `{name: (dtype, shape)}` as a valid safetensors file of zeros."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_SIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the reference writer pads to 8 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.write(b"\0" * offset)
    return path


def write_family_file(path: Path, family: str, dtype: str = "BF16", side: int = 8) -> Path:
    """A file whose tensor names say `family`; each tensor is `side` x `side`."""
    return write_safetensors(path, {k: (dtype, (side, side)) for k in FAMILY_KEYS[family]})


COMFYUI_FOLDERS = (
    "checkpoints", "diffusion_models", "unet", "text_encoders", "clip", "vae", "loras",
    "controlnet", "upscale_models",
)  # fmt: skip


def comfyui_layout(root: Path, catalog_files: Mapping[str, Mapping[str, str]] | None = None) -> Path:
    """An empty ComfyUI models tree; with `catalog_files` ({model_id: {slot: name}}), every file a
    catalog entry names is created in its folder (main models as family files, others as 1-tensor files).
    """
    from router.catalog.update.merge import slot_folder

    for folder in COMFYUI_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for files in (catalog_files or {}).values():
        for slot, name in files.items():
            folder = slot_folder(slot)
            if folder is None:
                continue
            target = root / folder / name
            if not target.exists():
                write_safetensors(target, {"w": ("F16", (4, 4))})
    return root
