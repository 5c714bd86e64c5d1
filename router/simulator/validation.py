"""Prompt validation with ComfyUI's rules, error types, messages and shapes.

The walk mirrors ComfyUI 0.8.0's `validate_prompt`/`validate_inputs`: class check of every node, then
each output node validated with its ancestors, inputs converted in place (so the queued prompt holds
`7.0` where the client sent `7`), errors collected per node with the outputs that depend on them.
Python exceptions raised by malformed links (a missing node, a bad socket index) are real ones, so
their text matches what ComfyUI reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]

VALIDATION_TRACEBACK = [
    '  File "/opt/ComfyUI/execution.py", line 1043, in validate_prompt\n'
    "    m = await validate_inputs(prompt_id, prompt, o, validated)\n"
    "        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    '  File "/opt/ComfyUI/execution.py", line 818, in validate_inputs\n'
    "    o_class_type = prompt[o_id]['class_type']\n"
    "                   ~~~~~~^^^^^^\n",
]
INNER_VALIDATION_TRACEBACK = [
    '  File "/opt/ComfyUI/execution.py", line 847, in validate_inputs\n'
    "    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n"
    "        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    VALIDATION_TRACEBACK[1],
]
# Custom VALIDATE_INPUTS: inputs checked by the node itself instead of the choice list.
SELF_VALIDATED_INPUTS: dict[str, tuple[str, ...]] = {"LoadImage": ("image",), "LoadImageMask": ("image",)}


@dataclass
class ValidationResult:
    ok: bool
    error: JsonDict | None
    outputs: list[str]
    node_errors: JsonDict = field(default_factory=dict)


def error_body(error_type: str, message: str, details: str = "") -> JsonDict:
    return {"type": error_type, "message": message, "details": details, "extra_info": {}}


def full_type_name(exc: BaseException) -> str:
    module = type(exc).__module__
    name = type(exc).__qualname__
    return name if module == "builtins" else f"{module}.{name}"


def validate_prompt(
    prompt: Mapping[str, Any],
    defs: Mapping[str, JsonDict],
    image_exists: Callable[[str], bool],
    partial_targets: list[str] | None = None,
) -> ValidationResult:
    """Validate (and convert in place) a prompt; raises only where ComfyUI answers 500."""
    outputs: list[str] = []
    for node_id in prompt:
        node = prompt[node_id]
        if not isinstance(node, dict) or "class_type" not in node:
            return _invalid(
                "Cannot execute because a node is missing the class_type property.", f"Node ID '#{node_id}'"
            )
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in defs:
            return _invalid(
                f"Cannot execute because node {class_type} does not exist.", f"Node ID '#{node_id}'"
            )
        if defs[class_type].get("output_node") and (partial_targets is None or node_id in partial_targets):
            outputs.append(node_id)
    if not outputs:
        return ValidationResult(False, error_body("prompt_no_outputs", "Prompt has no outputs"), [], {})
    return _validate_outputs(_Walk(prompt, defs, image_exists), outputs)


def _invalid(message: str, details: str) -> ValidationResult:
    return ValidationResult(False, error_body("invalid_prompt", message, details), [], {})


def _validate_outputs(walk: _Walk, outputs: list[str]) -> ValidationResult:
    good: list[str] = []
    direct_errors: list[JsonDict] = []
    node_errors: JsonDict = {}
    for output_id in outputs:
        try:
            valid, reasons = walk.validate(output_id)
        except Exception as exc:  # ComfyUI reports any exception of the walk as a node error
            valid = False
            reasons = [
                _exception_reason("exception_during_validation", "Exception when validating node", exc)
            ]
            walk.validated[output_id] = (False, reasons)
        if valid:
            good.append(output_id)
            continue
        direct_errors.extend(reasons)
        for node_id, (node_valid, node_reasons) in walk.validated.items():
            if node_valid or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": walk.prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output_id)
    if not good:
        details = "\n".join(f"{r['message']}: {r['details']}" for r in direct_errors)
        error = error_body("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return ValidationResult(False, error, [], node_errors)
    return ValidationResult(True, None, good, node_errors)


def _exception_reason(error_type: str, message: str, exc: BaseException) -> JsonDict:
    return {
        "type": error_type,
        "message": message,
        "details": str(exc),
        "extra_info": {"exception_type": full_type_name(exc), "traceback": list(VALIDATION_TRACEBACK)},
    }


class _Walk:
    """One validation pass: results per node id, shared by every output that reaches the node."""

    def __init__(
        self, prompt: Mapping[str, Any], defs: Mapping[str, JsonDict], image_exists: Callable[[str], bool]
    ) -> None:
        self.prompt = prompt
        self.defs = defs
        self.image_exists = image_exists
        self.validated: dict[str, tuple[bool, list[JsonDict]]] = {}
        self._in_progress: set[str] = set()

    def validate(self, node_id: str) -> tuple[bool, list[JsonDict]]:
        if node_id in self.validated:
            return self.validated[node_id]
        if node_id in self._in_progress:
            # A cycle: ComfyUI recurses until Python gives up.
            raise RecursionError("maximum recursion depth exceeded")
        self._in_progress.add(node_id)
        try:
            result = self._validate_node(node_id)
        finally:
            self._in_progress.discard(node_id)
        self.validated[node_id] = result
        return result

    def _validate_node(self, node_id: str) -> tuple[bool, list[JsonDict]]:
        inputs = self.prompt[node_id]["inputs"]
        class_type = self.prompt[node_id]["class_type"]
        info = self.defs[class_type]
        self_validated = SELF_VALIDATED_INPUTS.get(class_type, ())
        errors: list[JsonDict] = []
        valid = True
        for category in ("required", "optional"):
            for name in info.get("input_order", {}).get(category, []):
                spec = info["input"][category][name]
                if name not in inputs:
                    if category == "required":
                        errors.append(
                            _reason("required_input_missing", "Required input is missing", name, name)
                        )
                    continue
                link_ok, reason = self._check_input(inputs, name, spec, name in self_validated)
                valid = valid and link_ok
                if reason is not None:
                    errors.append(reason)
        errors.extend(self._custom_validation(inputs, self_validated))
        return (valid and not errors, errors)

    def _check_input(
        self, inputs: dict[str, Any], name: str, spec: list[Any], self_validated: bool
    ) -> tuple[bool, JsonDict | None]:
        """(ancestors valid, this input's error or None)."""
        input_type = spec[0]
        extra: JsonDict = spec[1] if len(spec) > 1 else {}
        config = [input_type, extra]
        value = inputs[name]
        if isinstance(value, list):
            return self._check_link(name, value, input_type, config)
        return True, _check_value(inputs, name, value, input_type, extra, config, self_validated)

    def _check_link(
        self, name: str, link: list[Any], input_type: Any, config: list[Any]
    ) -> tuple[bool, JsonDict | None]:
        if len(link) != 2:
            return True, {
                "type": "bad_linked_input",
                "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                "details": f"{name}",
                "extra_info": {"input_name": name, "input_config": config, "received_value": link},
            }
        source_id = link[0]
        source_class = self.prompt[source_id]["class_type"]
        received_type = tuple(self.defs[source_class]["output"])[link[1]]
        if not types_match(received_type, input_type):
            return True, {
                "type": "return_type_mismatch",
                "message": "Return type mismatch between linked nodes",
                "details": f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                "extra_info": {
                    "input_name": name,
                    "input_config": config,
                    "received_type": received_type,
                    "linked_node": link,
                },
            }
        try:
            source_valid, _ = self.validate(source_id)
        except Exception as exc:
            reason = _exception_reason(
                "exception_during_inner_validation", "Exception when validating inner node", exc
            )
            reason["extra_info"].update(
                {
                    "input_name": name,
                    "input_config": config,
                    "exception_message": str(exc),
                    "linked_node": link,
                }
            )
            reason["extra_info"]["traceback"] = list(INNER_VALIDATION_TRACEBACK)
            self.validated[source_id] = (False, [reason])
            return False, None
        return source_valid, None

    def _custom_validation(self, inputs: dict[str, Any], self_validated: tuple[str, ...]) -> list[JsonDict]:
        errors: list[JsonDict] = []
        for name in self_validated:
            value = inputs.get(name)
            if isinstance(value, str) and not self.image_exists(value):
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": f"{name} - Invalid image file: {value}",
                        "extra_info": {"input_name": name},
                    }
                )
        return errors


def _reason(error_type: str, message: str, details: str, name: str) -> JsonDict:
    return {"type": error_type, "message": message, "details": details, "extra_info": {"input_name": name}}


def _check_value(
    inputs: dict[str, Any],
    name: str,
    value: Any,
    input_type: Any,
    extra: JsonDict,
    config: list[Any],
    self_validated: bool,
) -> JsonDict | None:
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
        inputs[name] = value
    try:
        value = _convert(value, input_type)
    except Exception as exc:
        return {
            "type": "invalid_input_type",
            "message": f"Failed to convert an input value to a {input_type} value",
            "details": f"{name}, {value}, {exc}",
            "extra_info": {
                "input_name": name,
                "input_config": config,
                "received_value": value,
                "exception_message": str(exc),
            },
        }
    inputs[name] = value
    if self_validated:
        return None
    return _check_range(name, value, extra, config) or _check_choice(name, value, input_type, extra, config)


def _convert(value: Any, input_type: Any) -> Any:
    if input_type == "INT":
        return int(value)
    if input_type == "FLOAT":
        return float(value)
    if input_type == "STRING":
        return str(value)
    if input_type == "BOOLEAN":
        return bool(value)
    return value


def _check_range(name: str, value: Any, extra: JsonDict, config: list[Any]) -> JsonDict | None:
    if "min" in extra and value < extra["min"]:
        message = f"Value {value} smaller than min of {extra['min']}"
        error_type = "value_smaller_than_min"
    elif "max" in extra and value > extra["max"]:
        message = f"Value {value} bigger than max of {extra['max']}"
        error_type = "value_bigger_than_max"
    else:
        return None
    return {
        "type": error_type,
        "message": message,
        "details": f"{name}",
        "extra_info": {"input_name": name, "input_config": config, "received_value": value},
    }


def _check_choice(
    name: str, value: Any, input_type: Any, extra: JsonDict, config: list[Any]
) -> JsonDict | None:
    options = input_type if isinstance(input_type, list) else None
    if input_type == "COMBO":
        options = list(extra.get("options", []))
    if options is None or value in options:
        return None
    # Like ComfyUI: huge lists (scanned model paths) are not echoed back.
    input_config: list[Any] | None = config
    list_info = str(options)
    if len(options) > 20:
        list_info = f"(list of length {len(options)})"
        input_config = None
    return {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": f"{name}: '{value}' not in {list_info}",
        "extra_info": {"input_name": name, "input_config": input_config, "received_value": value},
    }


def types_match(received_type: Any, input_type: Any) -> bool:
    """ComfyUI's link type check: equal, a `*` wildcard, or overlapping comma-separated unions."""
    if received_type == input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in accepted:
        return True
    return bool(received & accepted)
