"""GET /models, /healthz, /readyz, /openapi.json."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from router.api.errors import ApiError
from router.api.openapi import openapi_document
from router.api.services import services

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    problems: list[str] = []
    if svc.catalogs.last_error is not None:
        problems.append(f"catalog reload failed, serving the last good one: {svc.catalogs.last_error}")
    db_error = svc.database.ping()
    if db_error:
        problems.append(f"database unreachable: {db_error}")
    views = svc.backend_state.snapshot(svc.catalogs.current)
    if not any(v.healthy and v.backend.enabled for v in views):
        problems.append("no healthy backend")
    body = {"status": "ready" if not problems else "not_ready", "problems": problems}
    return jsonify(body), (200 if not problems else 503)


@bp.get("/models")
def models() -> Response:
    catalog = services().catalogs.current
    return jsonify(
        {
            "purposes": catalog.purposes(),
            "urgencies": {k: u.deadline_s for k, u in catalog.urgencies.items()},
            "models": [m.model_dump(mode="json") for m in catalog.models],
        }
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@bp.post("/admin/reload")
def admin_reload() -> tuple[Response, int]:
    """Re-read the catalog now. An invalid file keeps the last good catalog serving (422 says why)."""
    store = services().catalogs
    error = store.reload()
    if error is not None:
        raise ApiError(
            422,
            "catalog_invalid",
            f"{error.path} is invalid; still serving the last good catalog",
            [{"json_path": p.json_path, "message": p.message} for p in error.problems],
        )
    return jsonify({"status": "reloaded", "models": len(store.current.models)}), 200
