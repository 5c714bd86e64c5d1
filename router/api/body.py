"""Parse a JSON request body into a pydantic model, with 4xx errors a person can act on."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from router.api.errors import ApiError, field_error, validation_error

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M]) -> M:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            first = exc.errors()[0]
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {first['msg']}") from exc
        if any(e["type"] == "model_type" and not e["loc"] for e in exc.errors()):
            raise ApiError(400, "invalid_json", "the body must be a JSON object") from exc
        raise validation_error(exc) from exc
    nul = _nul_field(parsed.model_dump(), "")
    if nul is not None:
        # PostgreSQL cannot store U+0000 in text or JSONB (the request is recorded): a 422, not a 500.
        raise field_error(nul or "body", "must not contain NUL (U+0000) characters")
    return parsed


def _nul_field(value: Any, path: str) -> str | None:
    """The dotted path of the first string (or key) holding a NUL character, else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            found = _nul_field(item, where)
            if found is not None:
                return found
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _nul_field(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def redacted(req: BaseModel) -> dict[str, object]:
    """The request as stored in `jobs.request`: image payloads replaced by their length."""
    data = req.model_dump(mode="json")
    for key in ("images", "face_image", "mask"):
        value = data.get(key)
        if isinstance(value, list):
            data[key] = [f"<{len(v)} base64 chars>" for v in value]
        elif isinstance(value, str):
            data[key] = f"<{len(value)} base64 chars>"
    return data
