"""Hot reload under load: an invalid catalog is refused without a failed request; a valid one is used."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from router.api.app import create_app
from router.backends.state import DeclaredBackendState
from router.catalog.store import CatalogStore
from router.db.database import Database
from router.settings import Settings
from tests.conftest import ROOT


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_reload_under_load_keeps_serving_and_switches_to_the_valid_catalog(
    tmp_path: Path, pg_db: Database
) -> None:
    path = tmp_path / "models_config.json"
    original = json.loads((ROOT / "models_config.json").read_text())
    path.write_text(json.dumps(original))
    store = CatalogStore.from_file(path)
    store.check_every_s = 0.05
    app = create_app(
        Settings(migrate_on_start=False), catalog=store, database=pg_db, backend_state=DeclaredBackendState()
    )
    stop = threading.Event()
    statuses: list[int] = []
    models_seen: set[str] = set()

    def hammer() -> None:
        client = app.test_client()
        while not stop.is_set():
            r = client.post("/select", json={"purpose": "portrait", "urgency": "batch"})
            statuses.append(r.status_code)
            if r.status_code == 200:
                models_seen.add(r.json["model"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        write_atomically(path, '{"models": [ this is not json')
        time.sleep(0.5)
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503
        assert any("last good one" in p for p in ready.json["problems"])
        # A valid catalog where the best portrait model is a new id.
        changed: dict[str, Any] = json.loads(json.dumps(original))
        changed["models"][0]["id"] = "flux1-dev-renamed"
        changed["scoring"]["quality_band"] = 1  # the best quality wins outright: the renamed fp16
        write_atomically(path, json.dumps(changed))
        deadline = time.monotonic() + 5
        while "flux1-dev-renamed" not in models_seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert statuses and set(statuses) == {200}, {s for s in statuses if s != 200}
    assert "flux1-dev-renamed" in models_seen
    assert app.test_client().get("/readyz").status_code == 200


def test_admin_reload_reports_an_invalid_file(tmp_path: Path, pg_db: Database) -> None:
    path = tmp_path / "models_config.json"
    path.write_text((ROOT / "models_config.json").read_text())
    store = CatalogStore.from_file(path)
    app = create_app(
        Settings(migrate_on_start=False), catalog=store, database=pg_db, backend_state=DeclaredBackendState()
    )
    client = app.test_client()
    assert client.post("/admin/reload").json["status"] == "reloaded"
    raw = json.loads(path.read_text())
    raw["models"][0]["vram_mb"] = -5
    path.write_text(json.dumps(raw))
    r = client.post("/admin/reload")
    assert r.status_code == 422 and r.json["error"]["code"] == "catalog_invalid"
    assert r.json["error"]["details"][0]["json_path"].endswith("vram_mb")
    assert client.post("/select", json={"purpose": "portrait"}).status_code == 200
