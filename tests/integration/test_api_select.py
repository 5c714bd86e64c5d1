"""POST /select and the metadata routes through the Flask test client, on a real PostgreSQL."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select as sql_select

from router.api.app import create_app
from router.backends.state import DeclaredBackendState
from router.catalog import Catalog
from router.db.database import Database
from router.db.models import Job
from router.settings import Settings
from tests.unit.selector_cases import backend

# These tests are about deciding: backends as the catalog declares them, no live ComfyUI.
DECLARED = DeclaredBackendState()


@pytest.fixture
def app(catalog: Catalog, pg_db: Database) -> Flask:
    return create_app(
        Settings(migrate_on_start=False), catalog=catalog, database=pg_db, backend_state=DECLARED
    )


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def test_realtime_portrait_fits_its_deadline_and_is_recorded(client: FlaskClient, pg_db: Database) -> None:
    r = client.post("/select", json={"purpose": "portrait", "urgency": "realtime", "quality": "high"})
    assert r.status_code == 200, r.json
    d = r.json
    assert d["estimate"]["total_s"] <= 10 == d["deadline_s"]
    assert d["candidates"] and any(c["feasible"] for c in d["candidates"])
    assert d["model"] in d["selection_reason"] and "est." in d["selection_reason"]
    assert d["reason_code"] == "best_score"
    with pg_db.session() as s:
        job = s.get(Job, d["job_id"])
        assert job is not None
        assert (job.status, job.model_name, job.tier, job.urgency) == (
            "selected",
            d["model"],
            d["tier"],
            "realtime",
        )
        assert job.selection_reason == d["selection_reason"]
        assert job.request["purpose"] == "portrait"


def test_batch_picks_a_higher_quality_rung_than_realtime(client: FlaskClient) -> None:
    rt = client.post("/select", json={"purpose": "portrait", "urgency": "realtime", "quality": "high"}).json
    batch = client.post("/select", json={"purpose": "portrait", "urgency": "batch", "quality": "high"}).json
    assert batch["quality_score"] > rt["quality_score"]
    assert len(batch["ladder"]) >= 2
    assert batch["ladder"][0]["estimate"]["total_s"] < batch["estimate"]["total_s"]


def test_a_12gb_backend_rejects_flux_fp16_with_the_numbers(catalog: Catalog, pg_db: Database) -> None:
    small = catalog.model_copy(update={"backends": (backend("gpu12", 12 * 1024, 0.4),)})
    app = create_app(Settings(migrate_on_start=False), catalog=small, database=pg_db, backend_state=DECLARED)
    d = app.test_client().post("/select", json={"purpose": "portrait", "urgency": "batch"}).json
    flux = [c for c in d["candidates"] if c["model"] == "flux1-dev-fp16"]
    assert flux and not any(c["feasible"] for c in flux)
    rej = flux[0]["rejections"][0]
    assert rej["code"] == "vram_insufficient"
    assert rej["numbers"] == {"needed_mb": 27000 + catalog.vram_headroom_mb, "free_mb": 12288}
    assert d["model"] != "flux1-dev-fp16"


BAD: list[tuple[str, Any, int, str]] = [
    ("unknown-purpose", {"purpose": "teleport"}, 422, "purpose"),
    ("negative-size", {"purpose": "portrait", "width": -512}, 422, "width"),
    ("huge-width", {"purpose": "portrait", "width": 100000}, 422, "width"),
    ("not-multiple-of-8", {"purpose": "portrait", "height": 1001}, 422, "height"),
    ("2mb-prompt", {"purpose": "portrait", "prompt": "a" * 2_000_000}, 422, "prompt"),
    ("string-for-int", {"purpose": "portrait", "width": "1024"}, 422, "width"),
    ("string-for-bool", {"purpose": "portrait", "allow_degrade": "yes"}, 422, "allow_degrade"),
    ("unknown-field", {"purpose": "portrait", "colour": "red"}, 422, "colour"),
    ("unknown-urgency", {"purpose": "portrait", "urgency": "yesterday"}, 422, "urgency"),
    ("unknown-tier", {"purpose": "portrait", "quality": "ultra"}, 422, "quality"),
    ("unknown-model", {"purpose": "portrait", "model": "dall-e"}, 422, "model"),
    ("missing-purpose", {"urgency": "high"}, 422, "purpose"),
    ("negative-deadline", {"purpose": "portrait", "deadline_s": -1}, 422, "deadline_s"),
    ("floor-over-100", {"purpose": "portrait", "min_quality": 101}, 422, "min_quality"),
    ("too-many-steps", {"purpose": "portrait", "steps": 100000}, 422, "steps"),
    ("too-many-images", {"purpose": "img2img", "images": ["aGk="] * 5}, 422, "images"),
    ("bad-base64", {"purpose": "img2img", "images": ["%%%"]}, 422, "images.0"),
    ("json-array", [1, 2], 400, ""),
    ("null-purpose", {"purpose": None}, 422, "purpose"),
]


@pytest.mark.parametrize(("body", "status", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_naming_the_field(
    client: FlaskClient, body: Any, status: int, field: str
) -> None:
    r = client.post("/select", data=json.dumps(body), content_type="application/json")
    assert r.status_code == status, r.json
    err = r.json["error"]
    assert err["code"] in {"validation_error", "invalid_json"}
    assert err["message"]
    if field:
        assert field in [d["field"] for d in err["details"]], err


@pytest.mark.parametrize(
    ("data", "ctype"),
    [
        ("not json at all", "application/json"),
        ("", "application/json"),
        ('{"purpose": ', "application/json"),
        ("purpose=portrait", "application/x-www-form-urlencoded"),
        ("\xff\xfe", "application/json"),
    ],
    ids=["garbage", "empty", "truncated", "form-encoded", "bad-utf8"],
)
def test_non_json_body_is_a_400(client: FlaskClient, data: str, ctype: str) -> None:
    r = client.post("/select", data=data, content_type=ctype)
    assert r.status_code == 400
    assert r.json["error"]["code"] == "invalid_json"


def test_oversized_image_is_a_413(client: FlaskClient, catalog: Catalog) -> None:
    big = base64.b64encode(b"\0" * (catalog.limits.max_image_bytes + 1)).decode()
    r = client.post("/select", json={"purpose": "img2img", "images": [big]})
    assert r.status_code == 413
    assert r.json["error"]["code"] == "image_too_large"


def test_body_over_the_wsgi_limit_is_a_413(catalog: Catalog, pg_db: Database) -> None:
    app = create_app(
        Settings(migrate_on_start=False, max_request_bytes=10_000),
        catalog=catalog,
        database=pg_db,
        backend_state=DECLARED,
    )
    r = app.test_client().post("/select", json={"purpose": "portrait", "prompt": "x" * 20_000})
    assert r.status_code == 413
    assert r.json["error"]["code"] == "payload_too_large"


def test_nothing_feasible_lists_every_candidate_with_reasons(client: FlaskClient, pg_db: Database) -> None:
    r = client.post(
        "/select",
        json={"purpose": "portrait", "deadline_s": 0.5, "allow_degrade": False, "client_id": "acme"},
    )
    assert r.status_code == 422
    err = r.json["error"]
    assert err["code"] == "deadline_infeasible"
    cands = err["details"]["candidates"]
    assert cands and all(c["rejections"] for c in cands)
    with pg_db.session() as s:
        job = s.scalars(sql_select(Job).where(Job.client_id == "acme")).one()
        assert job.status == "failed" and job.reason_code == "deadline_infeasible"


def test_best_effort_when_the_deadline_is_too_short(client: FlaskClient) -> None:
    d = client.post("/select", json={"purpose": "portrait", "deadline_s": 0.5}).json
    assert d["best_effort"] is True and d["reason_code"] == "deadline_best_effort"
    assert d["estimate"]["total_s"] > 0.5


def test_images_are_not_stored_in_the_jobs_row(client: FlaskClient, pg_db: Database) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")  # input images are decoded
    img = base64.b64encode(buf.getvalue()).decode()
    d = client.post("/select", json={"purpose": "img2img", "images": [img], "urgency": "batch"}).json
    with pg_db.session() as s:
        job = s.get(Job, d["job_id"])
        assert job is not None
        assert job.request["images"] == [f"<{len(img)} base64 chars>"]


def test_models_lists_purposes_urgencies_and_models(client: FlaskClient, catalog: Catalog) -> None:
    d = client.get("/models").json
    assert set(d["purposes"]) == set(catalog.purposes())
    assert d["urgencies"]["realtime"] == 10
    assert {m["id"] for m in d["models"]} == {m.id for m in catalog.models}


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json["status"] == "ready"


def test_readiness_fails_with_reasons_when_the_database_is_unreachable(catalog: Catalog) -> None:
    dead = Database("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    app = create_app(Settings(migrate_on_start=False), catalog=catalog, database=dead, backend_state=DECLARED)
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert any("database unreachable" in p for p in r.json["problems"])


def test_select_still_answers_when_the_database_is_down(catalog: Catalog) -> None:
    dead = Database("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    app = create_app(Settings(migrate_on_start=False), catalog=catalog, database=dead, backend_state=DECLARED)
    r = app.test_client().post("/select", json={"purpose": "portrait"})
    assert r.status_code == 200
    assert r.json["job_id"] is None and r.json["model"]


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    r = client.get("/select")
    assert r.status_code == 405 and r.json["error"]["code"] == "method_not_allowed"


def test_openapi_document_describes_the_request_models(client: FlaskClient) -> None:
    from openapi_pydantic import OpenAPI

    doc = client.get("/openapi.json").json
    OpenAPI.model_validate(doc)  # a valid OpenAPI 3.1 document
    select_req = doc["components"]["schemas"]["SelectRequest"]
    assert select_req["additionalProperties"] is False
    assert "purpose" in select_req["required"]
    assert doc["paths"]["/select"]["post"]["responses"]["200"]["content"]["application/json"]["schema"][
        "$ref"
    ].endswith("/Decision")


def test_comfyui_url_replaces_the_catalog_backends(catalog: Catalog, pg_db: Database) -> None:
    app = create_app(
        Settings(migrate_on_start=False, comfyui_url="http://127.0.0.1:8188"),
        catalog=catalog,
        database=pg_db,
        backend_state=DECLARED,
    )
    d = app.test_client().post("/select", json={"purpose": "portrait"}).json
    assert {c["backend"] for c in d["candidates"]} == {"comfyui"}
