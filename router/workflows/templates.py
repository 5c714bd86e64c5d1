"""Workflow templates: ComfyUI API-format graphs with named slots.

A template file (`router/workflows/<name>.json`) holds a graph and, per slot (`prompt`, `seed`,
`steps`, `ckpt_name`...), the `[node id, input name]` places its value goes. The value already
in the graph at a slot's place is a placeholder whose type (int, float, str, bool) is the slot's
type: `render()` checks and converts values against it, so a float `steps` or a string `seed`
fails here with the slot's name instead of in ComfyUI's validation.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.comfyui.object_info import combo_options

TEMPLATES_DIR = Path(__file__).resolve().parent

# Slots whose value is a model file name that the backend must have (see missing_on_backend).
FILE_SLOTS: tuple[str, ...] = (
    "ckpt_name",
    "unet_name",
    "clip_name1",
    "clip_name2",
    "clip_name",
    "vae_name",
    "swap_model",
    "face_restore_model",
)

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")

SlotPlace = tuple[str, str]


class TemplateError(ValueError):
    """A template cannot be loaded (missing, not JSON, or inconsistent)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Requires(_Strict):
    custom_nodes: tuple[str, ...] = Field(
        default=(), description="Node classes that are not in a stock ComfyUI (a custom node pack)."
    )


class GraphNode(_Strict):
    class_type: str = Field(min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] | None = Field(default=None, alias="_meta")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_api(self) -> dict[str, Any]:
        """The node as ComfyUI's /prompt takes it (a deep copy)."""
        node: dict[str, Any] = {"class_type": self.class_type, "inputs": copy.deepcopy(self.inputs)}
        if self.meta is not None:
            node["_meta"] = copy.deepcopy(self.meta)
        return node


class Template(_Strict):
    name: str = ""
    description: str
    requires: Requires = Requires()
    slots: dict[str, tuple[SlotPlace, ...]]
    defaults: dict[str, Any] = Field(default_factory=dict)
    graph: dict[str, GraphNode] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Template:
        problems = [*self._slot_problems(), *self._link_problems(), *self._requires_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- queries --------------------------------------------------------------------------------

    def slot_names(self) -> frozenset[str]:
        return frozenset(self.slots)

    def required_slots(self) -> frozenset[str]:
        """Slots without a default: render() needs a value for each."""
        return frozenset(self.slots) - frozenset(self.defaults)

    def node_classes(self) -> set[str]:
        return {node.class_type for node in self.graph.values()}

    def file_inputs(self) -> dict[str, tuple[str, str]]:
        """File slot -> (node class, input name) of the loader input that takes the file."""
        out: dict[str, tuple[str, str]] = {}
        for slot in FILE_SLOTS:
            places = self.slots.get(slot)
            if places:
                node_id, input_name = places[0]
                out[slot] = (self.graph[node_id].class_type, input_name)
        return out

    # --- rendering ------------------------------------------------------------------------------

    def render(self, values: Mapping[str, object]) -> dict[str, Any]:
        """The API-format graph (a deep copy) with every slot filled.

        `values` overrides `defaults`; a None value means "not given" (so the default applies).
        Raises ValueError naming unknown slots, required slots left empty, and values of the
        wrong type.
        """
        unknown = sorted(set(values) - set(self.slots))
        if unknown:
            raise ValueError(f"template {self.name}: unknown slot(s) {', '.join(unknown)}")
        merged = {**self.defaults, **{k: v for k, v in values.items() if v is not None}}
        empty = sorted(s for s in self.required_slots() if _is_empty(merged.get(s)))
        if empty:
            raise ValueError(f"template {self.name}: required slot(s) left empty: {', '.join(empty)}")
        graph = {node_id: node.to_api() for node_id, node in self.graph.items()}
        for slot, places in self.slots.items():
            value = self._coerce(slot, merged[slot])
            for node_id, input_name in places:
                graph[node_id]["inputs"][input_name] = copy.deepcopy(value)
        return graph

    def _coerce(self, slot: str, value: object) -> object:
        node_id, input_name = self.slots[slot][0]
        placeholder = self.graph[node_id].inputs[input_name]
        try:
            return coerce_to_placeholder(value, placeholder)
        except TypeError as exc:
            raise ValueError(f"template {self.name}: slot {slot}: {exc}") from exc

    # --- validation -----------------------------------------------------------------------------

    def _slot_problems(self) -> list[str]:
        problems: list[str] = []
        for slot, places in self.slots.items():
            if not places:
                problems.append(f"slot {slot} has no place")
            types: set[type] = set()
            for node_id, input_name in places:
                node = self.graph.get(node_id)
                if node is None:
                    problems.append(f"slot {slot} points at missing node {node_id}")
                elif input_name not in node.inputs:
                    problems.append(
                        f"slot {slot} points at {node_id}.{input_name}, not an input of {node.class_type}"
                    )
                elif _is_link(node.inputs[input_name]):
                    problems.append(f"slot {slot} would overwrite the link {node_id}.{input_name}")
                else:
                    types.add(type(node.inputs[input_name]))
            if len(types) > 1:
                problems.append(f"slot {slot} places hold placeholders of different types")
        for slot, value in self.defaults.items():
            if slot not in self.slots:
                problems.append(f"default for unknown slot {slot}")
                continue
            try:
                self._coerce(slot, value)
            except ValueError as exc:
                problems.append(f"default of {exc}")
        return problems

    def _link_problems(self) -> list[str]:
        problems: list[str] = []
        for node_id, node in self.graph.items():
            for input_name, value in node.inputs.items():
                if _is_link(value) and value[0] not in self.graph:
                    problems.append(f"{node_id}.{input_name} links to missing node {value[0]}")
        return problems

    def _requires_problems(self) -> list[str]:
        unused = sorted(set(self.requires.custom_nodes) - self.node_classes())
        return [f"requires.custom_nodes lists {', '.join(unused)}, not in the graph"] if unused else []


def coerce_to_placeholder(value: object, placeholder: object) -> object:
    """`value` converted to the placeholder's JSON type; TypeError when it cannot be, losslessly."""
    if isinstance(placeholder, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(placeholder, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(placeholder, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(placeholder, str):
        if isinstance(value, str):
            return value
    else:
        return value
    raise TypeError(f"expected {type(placeholder).__name__}, got {type(value).__name__} {value!r}")


def load_template(name: str, directory: Path = TEMPLATES_DIR) -> Template:
    """Read and validate `<directory>/<name>.json` (no caching: see TemplateRegistry)."""
    if not _NAME_PATTERN.match(name):
        raise TemplateError(f"invalid template name {name!r}")
    path = directory / f"{name}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TemplateError(f"unknown template {name!r} (no {path})") from exc
    except (OSError, ValueError) as exc:
        raise TemplateError(f"template {name!r}: cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict) or "name" in raw:
        raise TemplateError(f"template {name!r}: {path} must be an object without a `name` key")
    try:
        return Template.model_validate({**raw, "name": name})
    except ValidationError as exc:
        raise TemplateError(f"template {name!r} in {path} is invalid: {exc}") from exc


class TemplateRegistry:
    """The templates of one directory, each loaded and validated once and then kept.

    Create one per process (the app's composition root) and inject it where templates are used.
    """

    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        self.directory = directory
        self._templates: dict[str, Template] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Template:
        with self._lock:
            template = self._templates.get(name)
            if template is None:
                template = load_template(name, self.directory)
                self._templates[name] = template
            return template

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.json") if _NAME_PATTERN.match(p.stem))

    def all(self) -> dict[str, Template]:
        return {name: self.get(name) for name in self.names()}


def missing_on_backend(
    template: Template, files: Mapping[str, str], object_info: Mapping[str, Any]
) -> list[str]:
    """What the backend lacks to run `template` with `files` (slot -> file name), e.g.
    "node ReActorFaceSwap" or "file flux1-dev.safetensors for UNETLoader.unet_name".

    Node classes are compared with the keys of the backend's /object_info; file names with the
    choices of the loader's input (both of ComfyUI's combo formats). File slots the template
    does not have are ignored; an empty list means the backend can run it.
    """
    missing = [f"node {cls}" for cls in sorted(template.node_classes()) if cls not in object_info]
    for slot, (cls, input_name) in template.file_inputs().items():
        filename = files.get(slot)
        if filename is None:
            continue
        node_info = object_info.get(cls)
        if not isinstance(node_info, Mapping):
            continue  # already reported as a missing node
        choices = combo_options(node_info, input_name)
        if choices is not None and filename not in choices:
            missing.append(f"file {filename} for {cls}.{input_name}")
    return missing


def _is_link(value: object) -> bool:
    """`["4", 1]`: output 1 of node 4."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
