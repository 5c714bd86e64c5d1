"""The OpenAPI 3.1 document, generated from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from openapi_pydantic import OpenAPI
from openapi_pydantic.util import PydanticSchema, construct_open_api_with_schema_class
from pydantic import BaseModel

from router.api.schemas import (
    Decision,
    ErrorOut,
    FeedbackRequest,
    JobOut,
    SelectAndRunRequest,
    SelectRequest,
)

_ERRORS = {
    "400": "Body is not a JSON object",
    "413": "Body or an image too large",
    "422": "A field is invalid, or no candidate can serve the request (details list every candidate)",
    "503": "No backend is available (no_backend_available), or the database is unreachable"
    " (database_unavailable, with a Retry-After header)",
    "401": "API keys are configured and the `Authorization: Bearer <key>` header is missing or wrong",
    "403": "The key lacks the admin scope (/admin/*), or is bound to another client than client_id",
}
# Quotas (router/limits): rate_limited, quota_exceeded, concurrency_limited, spend_cap_reached.
_LIMITED = {
    "description": "A quota, spend cap or concurrency limit of the client is reached; details give"
    " resets_at (ISO 8601, UTC) and retry_after_s, also sent as the Retry-After header",
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
}


def _limited(op: dict[str, Any]) -> dict[str, Any]:
    return {**op, "responses": {**op["responses"], "429": {**_LIMITED, "content": _json(ErrorOut)}}}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": PydanticSchema(schema_class=model)}}


def _op(
    summary: str, body: type[BaseModel] | None, answer: type[BaseModel] | None, ok: str = "200"
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    op["responses"][ok] = {"description": "OK", **({"content": _json(answer)} if answer else {})}
    for status, text in _ERRORS.items():
        op["responses"][status] = {"description": text, "content": _json(ErrorOut)}
    return op


def _plain(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
INDEX = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key returns the same job (or the same refusal), never a second run.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _with(params: list[dict[str, Any]], op: dict[str, Any]) -> dict[str, Any]:
    return {**op, "parameters": params}


_NO_JOB = {"description": "No such job (or, for a client-bound key, another client's job)"}
PERSISTED = {
    "X-Comfy-Router-Persisted": {
        "description": "`false` when the job is answered from this router's memory: its rows wait in"
        " the local spool for the database (absent otherwise)",
        "schema": {"type": "string", "enum": ["false"]},
    }
}


def _job_op(summary: str, body: type[BaseModel] | None, answer: type[BaseModel] | None) -> dict[str, Any]:
    op = _op(summary, body, answer)
    op["responses"]["404"] = {**_NO_JOB, "content": _json(ErrorOut)}
    return _with([JOB_ID], op)


def _jobs_paths() -> dict[str, Any]:
    read = _job_op("A job: status, decision, attempts, outputs", None, JobOut)
    read["responses"]["200"]["headers"] = PERSISTED
    return {
        "/jobs/{job_id}": {"get": read},
        "/jobs/{job_id}/cancel": {"post": _job_op("Stop the job (interrupts ComfyUI too)", None, JobOut)},
        "/jobs/{job_id}/outputs/{index}": {
            "get": _with(
                [JOB_ID, INDEX],
                {
                    "summary": "The output image",
                    "responses": {"200": {"description": "image/png"}, "404": _NO_JOB},
                },
            )
        },
        "/jobs/{job_id}/feedback": {"post": _job_op("Rate a job's image (1-5)", FeedbackRequest, None)},
    }


@cache
def openapi_document() -> dict[str, Any]:
    base = OpenAPI.model_validate(
        {
            "info": {"title": "comfy-router", "version": "0.1.0"},
            "paths": {
                "/select": {
                    "post": _limited(
                        _op("Choose model, tier, steps and backend for a request", SelectRequest, Decision)
                    )
                },
                "/select-and-run": {
                    "post": _limited(
                        _op("Choose, run on ComfyUI, degrade on time misses", SelectAndRunRequest, JobOut)
                    )
                },
                **_jobs_paths(),
                "/backends": _plain("Health, cooldown, VRAM, queue, loaded model of each backend"),
                "/admin/reload": {"post": _op("Re-read the catalog file", None, None)},
                "/admin/quotas": {
                    "get": _op("Quota counters, spend alerts and limits (admin scope)", None, None)
                },
                "/metrics": _plain("Prometheus text format"),
                "/models": _plain("The catalog: models, purposes, urgencies"),
                "/healthz": _plain("The process is alive"),
                "/readyz": _plain("Catalog valid, database reachable, a backend healthy (503 otherwise)"),
            },
        }
    )
    doc = construct_open_api_with_schema_class(base)
    return doc.model_dump(mode="json", by_alias=True, exclude_none=True)
