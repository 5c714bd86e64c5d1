"""API keys: 401 without or with a wrong key, open health/readiness/metrics, hashed keys accepted;
the admin scope, keys bound to a client, keys in the api_keys table, and no key in any log line."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from router.api.app import create_app
from router.api.auth import Authenticator, Principal, parse_keys
from router.backends.state import DeclaredBackendState
from router.catalog import Catalog
from router.db.database import Database
from router.db.models import ApiKey, Job
from router.limits.api_keys import add_key, list_keys, revoke_key
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


# --- scopes, client binding, the api_keys table, logs ----------------------------------------

ACME = "acme-key-1"
OPS = "ops-admin-key"
LEGACY = "legacy-unbound-key"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def scoped(catalog: Catalog, pg_db: Database) -> FlaskClient:
    keys = f"acme:{ACME}, admin@ops:sha256:{hashlib.sha256(OPS.encode()).hexdigest()}, {LEGACY}"
    app = create_app(
        Settings(migrate_on_start=False, api_keys=keys),
        catalog=catalog,
        database=pg_db,
        backend_state=DeclaredBackendState(),
    )
    return app.test_client()


def job_client(db: Database, job_id: str) -> str | None:
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.client_id


@pytest.mark.parametrize("key", [ACME, LEGACY], ids=["client-key", "unbound-key"])
@pytest.mark.parametrize("path", ["/admin/reload", "/admin/quotas"])
def test_admin_routes_need_the_admin_scope(scoped: FlaskClient, key: str, path: str) -> None:
    call = scoped.post if path == "/admin/reload" else scoped.get
    r = call(path, headers=bearer(key))
    assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
    assert "admin scope" in r.json["error"]["message"]
    assert call(path, headers=bearer(OPS)).status_code == 200
    assert call(path).status_code == 401


def test_a_bound_key_acts_as_its_client(scoped: FlaskClient, pg_db: Database) -> None:
    r = scoped.post("/select", json={"purpose": "portrait"}, headers=bearer(ACME))
    assert r.status_code == 200
    assert job_client(pg_db, r.json["job_id"]) == "acme"  # the key's client, not anonymous
    r = scoped.post("/select", json={"purpose": "portrait", "client_id": "acme"}, headers=bearer(ACME))
    assert r.status_code == 200


def test_a_bound_key_cannot_spend_another_clients_quota(scoped: FlaskClient, pg_db: Database) -> None:
    r = scoped.post("/select", json={"purpose": "portrait", "client_id": "bigco"}, headers=bearer(ACME))
    assert r.status_code == 403
    err = r.json["error"]
    assert err["code"] == "client_mismatch"
    assert "acme" in err["message"] and "bigco" in err["message"]
    with pg_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_a_bound_key_reads_only_its_clients_jobs(scoped: FlaskClient, pg_db: Database) -> None:
    """Another client's job is answered as unknown (404), so ids of others cannot be probed."""
    theirs = scoped.post("/select", json={"purpose": "portrait", "client_id": "bigco"}, headers=bearer(OPS))
    mine = scoped.post("/select", json={"purpose": "portrait"}, headers=bearer(ACME))
    theirs_id, mine_id = theirs.json["job_id"], mine.json["job_id"]
    assert scoped.get(f"/jobs/{mine_id}", headers=bearer(ACME)).status_code == 200
    for call in (
        lambda: scoped.get(f"/jobs/{theirs_id}", headers=bearer(ACME)),
        lambda: scoped.get(f"/jobs/{theirs_id}/outputs/0", headers=bearer(ACME)),
        lambda: scoped.post(f"/jobs/{theirs_id}/feedback", json={"rating": 1}, headers=bearer(ACME)),
        lambda: scoped.post(f"/jobs/{theirs_id}/cancel", headers=bearer(ACME)),
    ):
        r = call()
        assert r.status_code == 404 and r.json["error"]["message"] == f"no job {theirs_id}", r.json
    for key in (OPS, LEGACY):  # admin and unbound keys see every job
        assert scoped.get(f"/jobs/{theirs_id}", headers=bearer(key)).status_code == 200


def test_admin_and_unbound_keys_may_name_a_client(scoped: FlaskClient, pg_db: Database) -> None:
    for key in (OPS, LEGACY):
        r = scoped.post("/select", json={"purpose": "portrait", "client_id": "bigco"}, headers=bearer(key))
        assert r.status_code == 200
        assert job_client(pg_db, r.json["job_id"]) == "bigco"


def test_table_keys_turn_auth_on_and_are_bound_and_revocable(catalog: Catalog, pg_db: Database) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    row, key = add_key(pg_db, "acme", frozenset({"client"}), now, label="n8n")
    admin_row, admin_key = add_key(pg_db, "ops", frozenset({"admin"}), now)
    assert key.startswith("crk_") and len(key) > 40
    with pg_db.session() as s:
        stored = s.scalars(select(ApiKey.digest)).all()
    assert key not in str(stored) and hashlib.sha256(key.encode()).hexdigest() in stored
    app = create_app(
        Settings(migrate_on_start=False, api_keys=None),  # no environment keys: the table turns auth on
        catalog=catalog,
        database=pg_db,
        backend_state=DeclaredBackendState(),
    )
    c = app.test_client()
    assert c.post("/select", json={"purpose": "portrait"}).status_code == 401
    r = c.post("/select", json={"purpose": "portrait"}, headers=bearer(key))
    assert r.status_code == 200 and job_client(pg_db, r.json["job_id"]) == "acme"
    assert (
        c.post("/select", json={"purpose": "portrait", "client_id": "x"}, headers=bearer(key)).status_code
        == 403
    )
    assert c.get("/admin/quotas", headers=bearer(key)).status_code == 403
    assert c.get("/admin/quotas", headers=bearer(admin_key)).status_code == 200
    revoke_key(pg_db, row.id, now)
    assert [k.revoked_at is not None for k in list_keys(pg_db)] == [True, False]
    assert admin_row.scopes == frozenset({"admin"})


def test_a_revoked_table_key_stops_working_within_the_cache_ttl(pg_db: Database) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    row, key = add_key(pg_db, "acme", frozenset({"client"}), now)
    t = [0.0]
    auth = Authenticator((), pg_db, ttl_s=5.0, monotonic=lambda: t[0])
    assert auth.enabled()
    assert auth.authenticate(key) == Principal("acme", frozenset({"client"}))
    assert auth.authenticate("crk_wrong") is None
    revoke_key(pg_db, row.id, now)
    assert auth.authenticate(key) is not None  # cached for up to the TTL
    t[0] = 5.1
    assert auth.authenticate(key) is None
    assert not auth.enabled()  # no unrevoked key left, none in the environment: open again


def test_no_key_appears_in_any_log_line(
    catalog: Catalog, pg_db: Database, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # every statement and its parameters
    table_row, table_key = add_key(pg_db, "beta", frozenset({"client"}), datetime(2026, 11, 23, tzinfo=UTC))
    del table_row
    keys = f"acme:{ACME}, admin@ops:{OPS}, {LEGACY}"
    app = create_app(
        Settings(migrate_on_start=False, api_keys=keys),
        catalog=catalog,
        database=pg_db,
        backend_state=DeclaredBackendState(),
    )
    c = app.test_client()
    wrong = "wrong-key-that-must-not-be-logged"
    for key in (ACME, OPS, LEGACY, table_key, wrong):
        c.post("/select", json={"purpose": "portrait"}, headers=bearer(key))
        c.post("/select", json={"purpose": "portrait", "client_id": "zzz"}, headers=bearer(key))
        c.get("/admin/quotas", headers=bearer(key))
        c.post("/admin/reload", headers=bearer(key))
    with pytest.raises(ValueError, match="unknown scope") as bad:
        parse_keys(f"root@x:{wrong}")
    text = caplog.text + capsys.readouterr().err + str(bad.value)
    assert "api_keys" in caplog.text  # the table lookups were logged, with their parameters
    assert hashlib.sha256(wrong.encode()).hexdigest() in caplog.text  # as digests
    for key in (ACME, OPS, LEGACY, table_key, wrong):
        assert key not in text


def test_keys_command_prints_the_key_once_and_lists_without_it(pg_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": pg_url}
    added = subprocess.run(
        [sys.executable, "-m", "router", "keys", "add", "--client", "cli-client", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = added.stdout.strip()
    assert key.startswith("crk_") and "shown once" in added.stderr and key not in added.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "router", "keys", "list"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and key not in listed.stdout + listed.stderr
    line = next(x for x in listed.stdout.splitlines() if "cli-client" in x)
    assert "admin" in line
    key_id = line.split()[0]
    revoked = subprocess.run(
        [sys.executable, "-m", "router", "keys", "revoke", key_id],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "router", "keys", "revoke", "999999"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "no key 999999" in missing.stderr


def test_openapi_documents_the_auth_and_quota_answers(scoped: FlaskClient) -> None:
    doc = scoped.get("/openapi.json", headers=bearer(ACME)).json
    for path in ("/select", "/select-and-run"):
        responses = doc["paths"][path]["post"]["responses"]
        assert {"401", "403", "429"} <= set(responses)
        assert "Retry-After" in responses["429"]["headers"]
    assert "403" in doc["paths"]["/admin/quotas"]["get"]["responses"]


def test_auth_while_the_database_is_down(catalog: Catalog) -> None:
    dead = Database("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    open_auth = Authenticator((), dead)
    assert not open_auth.enabled()  # never saw a table key: as configured (none), not an error
    app = create_app(
        Settings(migrate_on_start=False, api_keys=f"acme:{ACME}"),
        catalog=catalog,
        database=dead,
        backend_state=DeclaredBackendState(),
    )
    c = app.test_client()
    assert c.post("/select", json={"purpose": "portrait"}, headers=bearer(ACME)).status_code == 200
    r = c.post("/select", json={"purpose": "portrait"}, headers=bearer("not-an-env-key"))
    assert r.status_code == 503 and r.json["error"]["code"] == "auth_unavailable"  # maybe a table key
    assert c.post("/select", json={"purpose": "portrait"}).status_code == 401
