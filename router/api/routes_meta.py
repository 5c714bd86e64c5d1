"""GET /models, /healthz, /readyz, /openapi.json."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Blueprint, Response, jsonify

from router.api.errors import ApiError
from router.api.openapi import openapi_document
from router.api.services import services
from router.db.observed import observed_by_tier

log = logging.getLogger(__name__)
bp = Blueprint("meta", __name__)
OBSERVED_DAYS = 7


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
    body: dict[str, object] = {"status": "ready" if not problems else "not_ready", "problems": problems}
    if svc.writes is not None:
        # Writes kept on local disk while the database was away (replayed when it answers).
        body["spool_depth"] = svc.writes.depth()
    return jsonify(body), (200 if not problems else 503)


@bp.get("/models")
def models() -> Response:
    """The catalog, with what each model and tier really did over the last week (DESIGN.md 2)."""
    svc = services()
    catalog = svc.catalogs.current
    since = svc.clock.now() - timedelta(days=OBSERVED_DAYS)
    try:
        observed = observed_by_tier(svc.database, since)
    except Exception:  # the catalog is still worth answering without the database
        log.exception("could not read observed times for /models")
        observed = {}
    return jsonify(
        {
            "purposes": catalog.purposes(),
            "urgencies": {k: u.deadline_s for k, u in catalog.urgencies.items()},
            "observed_since": since.isoformat(),
            "models": [
                {**m.model_dump(mode="json"), "observed": observed.get(m.id, {})} for m in catalog.models
            ],
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
