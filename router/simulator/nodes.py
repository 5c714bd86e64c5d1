"""Node definitions (`/object_info`) and the model folders behind the loaders' file choices.

The core definitions are real ComfyUI 0.8.0 ones, shipped in `resources/object_info_core.json` (see
`_generate_object_info.py`); the ReActor and IPAdapter custom nodes are hand-written in the same format
in `resources/object_info_custom.json`. File choices come from the catalog, so a graph naming a file the
catalog does not know fails validation exactly like ComfyUI's `value_not_in_list`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from router.catalog import Catalog

JsonDict = dict[str, Any]

CUSTOM_NODE_CLASSES: frozenset[str] = frozenset(
    {"ReActorFaceSwap", "ReActorRestoreFace", "IPAdapterUnifiedLoader", "IPAdapterAdvanced"}
)

# Catalog slot name (the loader's input name) -> ComfyUI model folder.
SLOT_FOLDERS: dict[str, str] = {
    "ckpt_name": "checkpoints",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "control_net_name": "controlnet",
    "model_name": "upscale_models",
    "swap_model": "insightface",
    "face_restore_model": "facerestore_models",
}

# (class, input) -> (folder, choices listed before the files, choices listed after them).
FILE_CHOICES: dict[tuple[str, str], tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    ("CheckpointLoaderSimple", "ckpt_name"): ("checkpoints", (), ()),
    ("UNETLoader", "unet_name"): ("diffusion_models", (), ()),
    ("DualCLIPLoader", "clip_name1"): ("text_encoders", (), ()),
    ("DualCLIPLoader", "clip_name2"): ("text_encoders", (), ()),
    ("CLIPLoader", "clip_name"): ("text_encoders", (), ()),
    ("VAELoader", "vae_name"): ("vae", (), ("pixel_space",)),
    ("ReActorFaceSwap", "swap_model"): ("insightface", (), ()),
    ("ReActorFaceSwap", "face_restore_model"): ("facerestore_models", ("none",), ()),
    ("ReActorRestoreFace", "model"): ("facerestore_models", ("none",), ()),
}

IMAGE_INPUT_CLASSES: frozenset[str] = frozenset({"LoadImage", "LoadImageMask"})

# The folders a stock ComfyUI 0.8.0 lists at GET /models, in its order.
STOCK_FOLDERS: tuple[str, ...] = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)
CUSTOM_FOLDERS: tuple[str, ...] = ("insightface", "facerestore_models", "ipadapter")


def load_resource(name: str) -> JsonDict:
    text = resources.files("router.simulator").joinpath("resources", name).read_text(encoding="utf-8")
    data: JsonDict = json.loads(text)
    return data


def folder_for_slot(slot: str) -> str:
    """Unknown slots get a folder of their own name, so their files are still listed somewhere."""
    return SLOT_FOLDERS.get(slot, slot)


def catalog_folders(catalog: Catalog) -> dict[str, list[str]]:
    """Folder -> sorted file names, from every catalog model's `files`."""
    folders: dict[str, set[str]] = {}
    for model in catalog.models:
        for slot, file_name in model.files.items():
            folders.setdefault(folder_for_slot(slot), set()).add(file_name)
    return {folder: sorted(names) for folder, names in folders.items()}


class NodeDefinitions:
    """The node classes this simulator knows, with file choices filled from the catalog."""

    def __init__(
        self, catalog: Catalog, *, custom_nodes: bool, list_input_images: Callable[[], list[str]]
    ) -> None:
        self._folders = catalog_folders(catalog)
        self._list_input_images = list_input_images
        self.custom_nodes = custom_nodes
        defs = load_resource("object_info_core.json")
        if custom_nodes:
            defs.update(load_resource("object_info_custom.json"))
        for (class_type, input_name), (folder, before, after) in FILE_CHOICES.items():
            if class_type in defs:
                files = self._folders.get(folder, [])
                defs[class_type]["input"]["required"][input_name][0] = [*before, *files, *after]
        self._static = defs

    def class_names(self) -> list[str]:
        return list(self._static)

    def object_info(self, extra_files: Sequence[str] = ()) -> JsonDict:
        """All definitions; image choices are re-read so fresh uploads are listed, as in ComfyUI.

        `extra_files` are appended to every loader's file choices (the `broken_files` fault).
        """
        defs = dict(self._static)
        images = self._list_input_images()
        for class_type in IMAGE_INPUT_CLASSES:
            info = copy.deepcopy(defs[class_type])
            info["input"]["required"]["image"][0] = images
            defs[class_type] = info
        if extra_files:
            for class_type, input_name in FILE_CHOICES:
                if class_type in defs:
                    info = copy.deepcopy(defs[class_type])
                    choices = info["input"]["required"][input_name][0]
                    choices.extend(f for f in extra_files if f not in choices)
                    defs[class_type] = info
        return defs

    def one(self, class_type: str, extra_files: Sequence[str] = ()) -> JsonDict:
        if class_type not in self._static:
            return {}
        return {class_type: self.object_info(extra_files)[class_type]}

    def folders(self) -> list[str]:
        extra = [f for f in CUSTOM_FOLDERS if self.custom_nodes]
        known = [*STOCK_FOLDERS, *extra]
        return known + sorted(f for f in self._folders if f not in known)

    def folder_files(self, folder: str) -> list[str] | None:
        if folder not in self.folders():
            return None
        return list(self._folders.get(folder, []))
