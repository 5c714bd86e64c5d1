"""What model files exist: from a ComfyUI models directory and/or a running ComfyUI.

Only `.safetensors` files are opened, and only their header (see `safetensors_header`).
Pickle-based formats (`.ckpt`, `.pt`, `.pth`, `.bin`) are listed from `stat()` alone: unpickling
runs arbitrary code, so they are never opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from router.catalog.update.safetensors_header import Header, UnreadableHeaderError, read_header
from router.comfyui.object_info import combo_options

log = logging.getLogger(__name__)

# ComfyUI folder name -> the canonical folder it is an alias of (ComfyUI accepts both names).
FOLDER_ALIASES: dict[str, str] = {
    "checkpoints": "checkpoints",
    "diffusion_models": "diffusion_models",
    "unet": "diffusion_models",
    "text_encoders": "text_encoders",
    "clip": "text_encoders",
    "vae": "vae",
    "loras": "loras",
    "controlnet": "controlnet",
    "upscale_models": "upscale_models",
}
# Folders whose files are whole image models (candidates for catalog entries).
MAIN_FOLDERS = frozenset({"checkpoints", "diffusion_models"})

MODEL_SUFFIXES = frozenset({".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx"})
SAFETENSORS_SUFFIXES = frozenset({".safetensors", ".sft"})

# Loader node class -> (input, canonical folder): the files a running ComfyUI offers to them.
LOADER_INPUTS: dict[str, tuple[str, str]] = {
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    "UNETLoader": ("unet_name", "diffusion_models"),
    "CLIPLoader": ("clip_name", "text_encoders"),
    "DualCLIPLoader": ("clip_name1", "text_encoders"),
    "VAELoader": ("vae_name", "vae"),
    "LoraLoader": ("lora_name", "loras"),
    "ControlNetLoader": ("control_net_name", "controlnet"),
    "UpscaleModelLoader": ("model_name", "upscale_models"),
}

# Peak VRAM of a run is the weights plus activations, buffers and the CUDA context. A 25%
# overhead over the weights matches the catalog's SDXL and FLUX figures at 1 MP within ~10%.
VRAM_OVERHEAD = 1.25
MIB = 1024 * 1024


@dataclass(frozen=True)
class ModelFile:
    folder: str  # canonical folder (FOLDER_ALIASES values)
    name: str  # as ComfyUI lists it: path relative to the folder, "/"-separated
    size_bytes: int | None = None
    sources: frozenset[str] = frozenset()  # "disk", "comfyui"
    family: str | None = None
    parameters: int | None = None
    precision: str | None = None
    weight_bytes: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    unreadable: str | None = None  # why the header could not be read

    @property
    def is_main_model(self) -> bool:
        return self.folder in MAIN_FOLDERS

    @property
    def vram_estimate_mb(self) -> int | None:
        if self.weight_bytes is None:
            return None
        return int(self.weight_bytes * VRAM_OVERHEAD / MIB) + 1


@dataclass
class Inventory:
    files: dict[tuple[str, str], ModelFile] = field(default_factory=dict)
    scanned_folders: set[str] = field(default_factory=set)  # canonical folders we know the content of
    problems: list[str] = field(default_factory=list)

    def add(self, f: ModelFile) -> None:
        key = (f.folder, f.name)
        old = self.files.get(key)
        if old is None:
            self.files[key] = f
            return
        # Disk details win (ComfyUI only gives names); the sources are the union.
        best = old if old.size_bytes is not None or f.size_bytes is None else f
        self.files[key] = _replace_sources(best, old.sources | f.sources)

    def names(self, folder: str) -> set[str]:
        return {name for (fold, name) in self.files if fold == folder}

    def has(self, folder: str, name: str) -> bool:
        return (folder, name) in self.files

    def main_models(self) -> list[ModelFile]:
        return sorted((f for f in self.files.values() if f.is_main_model), key=lambda f: (f.folder, f.name))


def _replace_sources(f: ModelFile, sources: frozenset[str]) -> ModelFile:
    return replace(f, sources=sources)


# --- family from tensor names -------------------------------------------------------------------

_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")


def detect_family(keys: Iterable[str]) -> str | None:
    """The catalog family of a checkpoint or diffusion model, from its tensor names alone.

    Keys relied on (after stripping a `model.diffusion_model.` prefix that full checkpoints add):
    - FLUX.1: both `double_blocks.` and `single_blocks.` (the MMDiT + single-stream blocks).
    - SDXL: `conditioner.embedders.1` (the second, OpenCLIP-G text encoder of a full checkpoint),
      or for a UNet-only file `label_emb.` (the size conditioning) with `input_blocks.`.
    - SD1.5: `cond_stage_model.transformer` (the CLIP-L encoder) and none of the SDXL keys.
    - Qwen-Image: `transformer_blocks.` with `.img_mod.` and `.txt_mod.` (the dual-stream modulation).
    None when nothing matches: such files are listed but not added to the catalog.
    """
    stripped: set[str] = set()
    raw: list[str] = []
    for key in keys:
        raw.append(key)
        prefix = next((p for p in _PREFIXES if key.startswith(p)), "")
        stripped.add(key[len(prefix) :])

    def starts(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in stripped)

    def contains(part: str) -> bool:
        return any(part in k for k in stripped)

    if starts("double_blocks.") and starts("single_blocks."):
        return "flux1"
    if starts("transformer_blocks.") and contains(".img_mod.") and contains(".txt_mod."):
        return "qwen-image"
    sdxl = any(k.startswith("conditioner.embedders.1") for k in raw) or (
        starts("label_emb.") and starts("input_blocks.")
    )
    if sdxl:
        return "sdxl"
    if any(k.startswith("cond_stage_model.transformer") for k in raw):
        return "sd15"
    return None


def describe_header(folder: str, name: str, size: int, header: Header) -> ModelFile:
    return ModelFile(
        folder=folder,
        name=name,
        size_bytes=size,
        sources=frozenset({"disk"}),
        family=detect_family(header.tensors) if folder in MAIN_FOLDERS else None,
        parameters=header.parameters,
        precision=header.dominant_dtype,
        weight_bytes=header.weight_bytes,
        metadata=header.metadata,
    )


# --- sources ------------------------------------------------------------------------------------


def scan_models_dir(root: Path, inventory: Inventory | None = None) -> Inventory:
    """Every model file under ComfyUI's model folders of `root` (subfolders included)."""
    inv = inventory if inventory is not None else Inventory()
    if not root.is_dir():
        raise FileNotFoundError(f"models directory {root} does not exist")
    for dirname, canonical in FOLDER_ALIASES.items():
        folder = root / dirname
        if not folder.is_dir():
            continue
        inv.scanned_folders.add(canonical)
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in MODEL_SUFFIXES:
                continue
            name = path.relative_to(folder).as_posix()
            inv.add(_describe_path(canonical, name, path, inv))
    return inv


def _describe_path(folder: str, name: str, path: Path, inv: Inventory) -> ModelFile:
    try:
        size = path.stat().st_size  # the only thing we ever learn about pickle-based files
    except OSError as exc:
        inv.problems.append(f"{folder}/{name}: cannot stat: {exc.strerror or exc}")
        return ModelFile(folder, name, sources=frozenset({"disk"}), unreadable=str(exc))
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        return ModelFile(folder, name, size_bytes=size, sources=frozenset({"disk"}))
    try:
        header = read_header(path)
    except UnreadableHeaderError as exc:
        inv.problems.append(f"{folder}/{name}: unreadable safetensors header: {exc}")
        log.warning("%s: unreadable safetensors header: %s", path, exc)
        return ModelFile(folder, name, size_bytes=size, sources=frozenset({"disk"}), unreadable=str(exc))
    return describe_header(folder, name, size, header)


def query_comfyui(
    list_folder: Callable[[str], list[str]],
    object_info: Callable[[], Mapping[str, Any]] | None = None,
    inventory: Inventory | None = None,
) -> Inventory:
    """The files a running ComfyUI lists (`/models/<folder>`) and its loaders offer (`/object_info`).

    Takes the two calls as functions (e.g. `ComfyUIClient(url).models`) so tests need no server.
    A folder ComfyUI does not know (an error answering it) is skipped, not counted as empty.
    """
    inv = inventory if inventory is not None else Inventory()
    for canonical in sorted(set(FOLDER_ALIASES.values())):
        try:
            names = list_folder(canonical)
        except Exception as exc:  # unknown folder (404) or backend trouble: we learn nothing here
            inv.problems.append(f"ComfyUI /models/{canonical}: {exc}")
            continue
        inv.scanned_folders.add(canonical)
        for name in names:
            inv.add(ModelFile(canonical, name, sources=frozenset({"comfyui"})))
    if object_info is not None:
        try:
            info = object_info()
        except Exception as exc:
            inv.problems.append(f"ComfyUI /object_info: {exc}")
            return inv
        for node, (input_name, canonical) in LOADER_INPUTS.items():
            node_info = info.get(node)
            if not isinstance(node_info, Mapping):
                continue
            for name in combo_options(node_info, input_name) or []:
                inv.add(ModelFile(canonical, name, sources=frozenset({"comfyui"})))
    return inv
