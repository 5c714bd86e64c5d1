"""Parse a JSON request body into a pydantic model, with 4xx errors a person can act on."""

from __future__ import annotations

from typing import TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from router.api.errors import ApiError, validation_error

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M]) -> M:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            first = exc.errors()[0]
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {first['msg']}") from exc
        if any(e["type"] == "model_type" and not e["loc"] for e in exc.errors()):
            raise ApiError(400, "invalid_json", "the body must be a JSON object") from exc
        raise validation_error(exc) from exc


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
