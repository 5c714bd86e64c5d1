"""Routes that read or write the database answer 503 (not 500) while it is unreachable."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from router.api.app import create_app
from router.backends.state import DeclaredBackendState
from router.db.database import Database
from router.settings import Settings
from tests.conftest import ROOT
from tests.support.postgres import free_port


@pytest.fixture
def client(tmp_path: Path):  # type: ignore[no-untyped-def]
    nowhere = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")  # nothing listens
    settings = Settings(
        config_path=ROOT / "models_config.json", data_dir=tmp_path / "data", migrate_on_start=False
    )
    app = create_app(settings, database=nowhere, backend_state=DeclaredBackendState())
    yield app.test_client()
    nowhere.dispose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/jobs/{id}/feedback", {"rating": 4}),
        ("get", "/jobs/{id}", None),
    ],
    ids=["feedback", "job"],
)
def test_an_unreachable_database_is_a_503_with_retry_after(
    client, method: str, path: str, body: object
) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    r = getattr(client, method)(path.format(id=uuid.uuid4()), json=body)
    assert r.status_code == 503, r.get_data(as_text=True)
    assert r.json["error"]["code"] == "database_unavailable"
    assert r.headers.get("Retry-After") == "5"
    assert time.monotonic() - started < 10  # a refused connection fails fast


def test_select_still_answers_without_a_job_id(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/select", json={"purpose": "portrait"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.json["job_id"] is None and r.json["model"]
