"""Regenerate `resources/object_info_core.json` from a real ComfyUI `/object_info` capture (developer tool).

The simulator never reads the capture at run time: it ships the trimmed copy this script writes.
Loader choice lists are emptied here because the simulator fills them from the catalog.

    python -m router.simulator._generate_object_info /work/shared/comfyui/samples/object_info_all.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CORE_CLASSES: tuple[str, ...] = (
    "CheckpointLoaderSimple",
    "UNETLoader",
    "DualCLIPLoader",
    "CLIPLoader",
    "VAELoader",
    "CLIPTextEncode",
    "EmptyLatentImage",
    "EmptySD3LatentImage",
    "KSampler",
    "KSamplerAdvanced",
    "FluxGuidance",
    "VAEDecode",
    "VAEEncode",
    "VAEEncodeForInpaint",
    "SetLatentNoiseMask",
    "RepeatLatentBatch",
    "LoadImage",
    "LoadImageMask",
    "ImageScale",
    "ImageBlur",
    "EmptyImage",
    "SaveImage",
    "PreviewImage",
    "ModelSamplingAuraFlow",
)

# Inputs whose choices are files: emptied here, filled at run time (catalog files, uploaded images).
FILE_INPUTS: dict[str, tuple[str, ...]] = {
    "CheckpointLoaderSimple": ("ckpt_name",),
    "UNETLoader": ("unet_name",),
    "DualCLIPLoader": ("clip_name1", "clip_name2"),
    "CLIPLoader": ("clip_name",),
    "VAELoader": ("vae_name",),
    "LoadImage": ("image",),
    "LoadImageMask": ("image",),
}


def trim(all_info: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in CORE_CLASSES:
        info = json.loads(json.dumps(all_info[name]))
        for input_name in FILE_INPUTS.get(name, ()):
            info["input"]["required"][input_name][0] = []
        out[name] = info
    return out


def main(argv: list[str]) -> int:
    source = Path(argv[0])
    target = Path(__file__).resolve().parent / "resources" / "object_info_core.json"
    trimmed = trim(json.loads(source.read_text(encoding="utf-8")))
    target.write_text(json.dumps(trimmed, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(trimmed)} classes to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
