"""API keys: 401 without or with a wrong key, open health/readiness/metrics, hashed keys accepted."""

from __future__ import annotations

import hashlib

import pytest
from flask.testing import FlaskClient

from router.api.app import create_app
from router.backends.state import DeclaredBackendState
from router.catalog import Catalog
from router.db.database import Database
from router.settings import Settings

SECRET = "s3cret-key"


@pytest.fixture
def client(catalog: Catalog, pg_db: Database) -> FlaskClient:
    keys = f"other-key, sha256:{hashlib.sha256(SECRET.encode()).hexdigest()}"
    app = create_app(
        Settings(migrate_on_start=False, api_keys=keys),
        catalog=catalog,
        database=pg_db,
        backend_state=DeclaredBackendState(),
    )
    return app.test_client()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET}, {"Authorization": "Basic czNjcmV0"}],
    ids=["none", "wrong-key", "no-scheme", "basic-auth"],
)
def test_missing_or_wrong_key_is_401(client: FlaskClient, headers: dict[str, str]) -> None:
    r = client.post("/select", json={"purpose": "portrait"}, headers=headers)
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
    assert client.get("/models", headers=headers).status_code == 401


@pytest.mark.parametrize("key", [SECRET, "other-key"], ids=["hashed-entry", "plain-entry"])
def test_a_valid_key_passes(client: FlaskClient, key: str) -> None:
    r = client.post("/select", json={"purpose": "portrait"}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_health_readiness_and_metrics_stay_open(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 200
