"""JSON errors: `{"error": {"code", "message", "details"}}` with a 4xx/5xx status, never HTML."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from router.db.spool_writer import is_unavailable

log = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "database_unavailable"
RETRY_AFTER_S = "5"  # seconds: a restarting PostgreSQL is usually back by then


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def field_error(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, "validation_error", f"{field}: {message}", [{"field": field, "message": message}])


def validation_error(exc: ValidationError) -> ApiError:
    """Pydantic errors -> one 422 naming every offending field (dotted path)."""
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field (not part of the API)" if err["type"] == "extra_forbidden" else err["msg"]
        details.append({"field": field, "message": msg})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return ApiError(422, "validation_error", summary, details)


def error_response(status: int, code: str, message: str, details: Any = None) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, "details": details}}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> tuple[Response, int]:
        response, status = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.code == DATABASE_UNAVAILABLE:
            response.headers["Retry-After"] = RETRY_AFTER_S
        return response, status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            415: "unsupported_media_type",
        }.get(status, "http_error")
        return error_response(status, code, exc.description or exc.name)

    @app.errorhandler(SQLAlchemyError)
    def _database(exc: SQLAlchemyError) -> tuple[Response, int]:
        if not is_unavailable(exc):
            return _unexpected(exc)
        log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        response, status = error_response(
            503, DATABASE_UNAVAILABLE, "the database is unreachable; retry in a few seconds"
        )
        response.headers["Retry-After"] = RETRY_AFTER_S
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the router failed unexpectedly; see its log")
