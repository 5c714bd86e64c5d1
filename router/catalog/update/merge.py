"""Merge an inventory of model files into the raw catalog document (pure: no I/O).

The merge works on the JSON dict as read, not on the pydantic model, so that every key, its
order and every value the operator wrote stay as they are. It only ever:
- appends an entry for a new main-model file (checkpoints / diffusion_models) of a known family,
  `enabled: false` and `calibrated: false` unless `enable_new`;
- sets `enabled: false` on entries one of whose files is gone from a folder we could see.
Entries are never deleted, and a disabled entry whose file came back is not re-enabled (the
operator may have disabled it for another reason): it is reported instead.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from router.catalog.schema import Model
from router.catalog.update.inventory import Inventory, ModelFile

# Defaults of a new entry are the family template's, made conservative: slower by this factor
# (so the router does not promise deadlines it cannot keep) and with a lower quality prior (so an
# unproven file never outranks a known one). Calibration replaces the times with measured ones.
TIME_SAFETY_FACTOR = 1.5
QUALITY_FACTOR = 0.9

# Catalog `files` slot -> ComfyUI folder. Slots not listed (e.g. `swap_model`, which lives in
# ComfyUI's `insightface/`) are not checked: we never scan their folder.
_SLOT_FOLDERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^ckpt_name$"), "checkpoints"),
    (re.compile(r"^unet_name$"), "diffusion_models"),
    (re.compile(r"^clip_name\d*$"), "text_encoders"),
    (re.compile(r"^vae_name$"), "vae"),
    (re.compile(r"^lora_name\d*$"), "loras"),
    (re.compile(r"^control_net_name$"), "controlnet"),
    (re.compile(r"^upscale_model_name$"), "upscale_models"),
)
MAIN_SLOT = {"checkpoints": "ckpt_name", "diffusion_models": "unet_name"}
MODEL_KEY_ORDER = tuple(Model.model_fields)


def slot_folder(slot: str) -> str | None:
    return next((folder for pattern, folder in _SLOT_FOLDERS if pattern.match(slot)), None)


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)  # "id (folder/file, family)"
    disabled: list[str] = field(default_factory=list)  # "id: missing folder/file"
    recalibrated: list[str] = field(default_factory=list)
    quality: list[str] = field(default_factory=list)  # "id tier: old -> new"
    notes: list[str] = field(default_factory=list)  # skipped files, returned files, censored rows

    @property
    def any(self) -> bool:
        return bool(self.added or self.disabled or self.recalibrated or self.quality)

    def summary(self) -> str:
        lines = [
            f"added: {len(self.added)}, disabled: {len(self.disabled)}, "
            f"recalibrated: {len(self.recalibrated)}, quality updated: {len(self.quality)}"
        ]
        for title, items in (
            ("added", self.added),
            ("disabled", self.disabled),
            ("recalibrated", self.recalibrated),
            ("quality", self.quality),
            ("note", self.notes),
        ):
            lines += [f"  {title}: {item}" for item in items]
        return "\n".join(lines)


def set_key(entry: dict[str, Any], key: str, value: Any, order: tuple[str, ...] = MODEL_KEY_ORDER) -> None:
    """Set `entry[key]`; a new key goes where the schema's field order puts it, not at the end."""
    if key in entry or key not in order:
        entry[key] = value
        return
    later = set(order[order.index(key) + 1 :])
    items = list(entry.items())
    at = next((n for n, (k, _) in enumerate(items) if k in later), len(items))
    items.insert(at, (key, value))
    entry.clear()
    entry.update(items)


def merge_inventory(
    doc: dict[str, Any], inventory: Inventory, *, enable_new: bool = False
) -> tuple[dict[str, Any], Changes]:
    """A new document (the input is not modified) and what changed."""
    out = copy.deepcopy(doc)
    changes = Changes()
    models: list[dict[str, Any]] = out.setdefault("models", [])
    referenced: set[tuple[str, str]] = set()
    for entry in models:
        for slot, name in (entry.get("files") or {}).items():
            folder = slot_folder(slot)
            if folder is not None:
                referenced.add((folder, name))
    _disable_vanished(models, inventory, changes)
    ids = {str(e.get("id")) for e in models}
    for f in inventory.main_models():
        if (f.folder, f.name) in referenced:
            continue
        added = _new_entry(f, models, ids, enable_new, changes)
        if added is not None:
            models.append(added)
            ids.add(added["id"])
            referenced.add((f.folder, f.name))
    return out, changes


def _disable_vanished(models: list[dict[str, Any]], inventory: Inventory, changes: Changes) -> None:
    for entry in models:
        missing = []
        for slot, name in (entry.get("files") or {}).items():
            folder = slot_folder(slot)
            if folder in inventory.scanned_folders and not inventory.has(folder, name):
                missing.append(f"{folder}/{name}")
        if not missing:
            continue
        if entry.get("enabled", True):
            set_key(entry, "enabled", False)
            changes.disabled.append(f"{entry.get('id')}: missing {', '.join(missing)}")
    for entry in models:
        files = entry.get("files") or {}
        present = [n for s, n in files.items() if (f := slot_folder(s)) is not None and inventory.has(f, n)]
        checked = [s for s in files if slot_folder(s) in inventory.scanned_folders]
        if entry.get("enabled", True) is False and checked and len(present) == len(checked):
            changes.notes.append(
                f"{entry.get('id')} is disabled but its files are all present: enable it by hand if wanted"
            )


def _template(family: str, slot: str, models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The family's reference entry: same main slot, preferring enabled, text-to-image, most tiers."""
    candidates = [
        e for e in models if e.get("family") == family and slot in (e.get("files") or {}) and "time" in e
    ]
    if not candidates:
        return None

    def rank(e: dict[str, Any]) -> tuple[int, int, int]:
        return (
            1 if e.get("enabled", True) else 0,
            1 if "text-to-image" in e.get("purposes", ()) else 0,
            len(e.get("tiers") or {}),
        )

    return max(candidates, key=rank)  # max keeps the first of equals: the file's order decides ties


def new_model_id(name: str, taken: set[str]) -> str:
    stem = name.rsplit("/", 1)[-1]
    stem = re.sub(r"\.(safetensors|sft|ckpt|pt|pth|bin|gguf)$", "", stem, flags=re.IGNORECASE)
    base = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")[:56] or "model"
    if not base[0].isalnum():
        base = "m" + base
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _new_entry(
    f: ModelFile, models: list[dict[str, Any]], ids: set[str], enable_new: bool, changes: Changes
) -> dict[str, Any] | None:
    where = f"{f.folder}/{f.name}"
    if f.unreadable:
        changes.notes.append(f"{where}: not added, header unreadable ({f.unreadable})")
        return None
    if f.family is None:
        if f.parameters is not None:
            why = "family not recognised from its tensor names"
        elif f.sources == {"comfyui"}:
            why = "only known by name from ComfyUI"
        else:
            why = "not a safetensors file, never opened"
        changes.notes.append(f"{where}: not added ({why}); add an entry by hand")
        return None
    slot = MAIN_SLOT[f.folder]
    template = _template(f.family, slot, models)
    if template is None:
        changes.notes.append(f"{where}: not added, no {f.family} entry with a {slot} workflow to copy")
        return None
    entry = copy.deepcopy(template)
    model_id = new_model_id(f.name, ids)
    entry["id"] = model_id
    facts = [f.family]
    if f.parameters:
        count = f"{f.parameters / 1e9:.2f}B" if f.parameters >= 10**8 else f"{f.parameters:,}"
        facts.append(f"{count} parameters")
    if f.precision:
        facts.append(f.precision)
    entry["description"] = (
        f"Added by update_models_config.py for {where} ({', '.join(facts)}); times, VRAM and quality "
        f"copied from {template['id']} with a safety margin: calibrate before enabling."
    )
    entry["files"] = {**entry["files"], slot: f.name}
    vram = int(entry["vram_mb"])
    if f.vram_estimate_mb is not None:
        vram = max(vram, -(-f.vram_estimate_mb // 100) * 100)
    entry["vram_mb"] = vram
    entry["load_s"] = round(float(entry["load_s"]) * TIME_SAFETY_FACTOR, 2)
    time = entry["time"]
    time["base_s"] = round(float(time["base_s"]) * TIME_SAFETY_FACTOR, 3)
    time["per_step_s"] = round(float(time["per_step_s"]) * TIME_SAFETY_FACTOR, 4)
    for spec in (entry.get("tiers") or {}).values():
        spec["quality"] = round(float(spec["quality"]) * QUALITY_FACTOR, 1)
    for key in ("hosted_usd_per_image", "hosted_source", "calibration"):
        entry.pop(key, None)
    set_key(entry, "enabled", enable_new)
    set_key(entry, "calibrated", False)
    changes.added.append(
        f"{model_id} ({where}, {f.family}, from {template['id']}, {'enabled' if enable_new else 'disabled'})"
    )
    return entry


def unified_diff(old_text: str, new_text: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"{name} (current)",
            tofile=f"{name} (updated)",
        )
    )
