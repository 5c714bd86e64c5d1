"""Quotas, spend caps and concurrency limits through the HTTP API, on a real PostgreSQL, with
jobs really run on the ComfyUI simulator and a fake clock for the UTC windows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from router.api.app import create_app
from router.backends.state import DeclaredBackendState
from router.catalog import Catalog
from router.db.database import Database
from router.db.models import Job, QuotaCounter, SpendAlert
from router.limits.config import ClientLimits, LimitsSettings
from router.limits.quotas import QuotaGate, QuotaRefused
from router.settings import Settings
from router.simulator import start_simulator
from router.simulator.runner import SimulatorHandle
from tests.integration.test_select_and_run import backend, tiny_catalog

RUN = {"purpose": "portrait", "urgency": "batch", "prompt": "a cat", "width": 512, "height": 512}
HOSTED_USD = 0.04  # per image, every model of the run catalog: spend that is known in advance


class FakeClock:
    """Wall time set by the test (the UTC windows); monotonic time real (the runner's deadlines)."""

    def __init__(self, now: datetime) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 23, 12, 0, 15, tzinfo=UTC))


def counter(db: Database, scope: str, subject: str) -> list[float]:
    with db.session() as s:
        return list(
            s.scalars(
                select(QuotaCounter.value)
                .where(QuotaCounter.scope == scope, QuotaCounter.subject == subject)
                .order_by(QuotaCounter.window_start)
            )
        )


def alerts(db: Database) -> list[tuple[str, str, str]]:
    with db.session() as s:
        rows = s.execute(
            select(SpendAlert.subject, SpendAlert.kind, SpendAlert.level).order_by(SpendAlert.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


# --- requests per minute (decisions only: no backend needed) ---------------------------------


@pytest.fixture
def select_app(catalog: Catalog, pg_db: Database, clock: FakeClock, tmp_path: Path) -> FlaskClient:
    limits = LimitsSettings(requests_per_min=3, clients={"vip": ClientLimits(requests_per_min=5)})
    app = create_app(
        Settings(migrate_on_start=False, data_dir=tmp_path, limits=limits),
        catalog=catalog,
        database=pg_db,
        backend_state=DeclaredBackendState(),
        clock=clock,
    )
    return app.test_client()


def decide(c: FlaskClient, client_id: str | None) -> Any:
    body: dict[str, Any] = {"purpose": "portrait"}
    if client_id is not None:
        body["client_id"] = client_id
    return c.post("/select", json=body)


def test_requests_per_minute_refuse_with_retry_after_and_reset_on_the_next_minute(
    select_app: FlaskClient, pg_db: Database, clock: FakeClock
) -> None:
    assert [decide(select_app, "acme").status_code for _ in range(3)] == [200, 200, 200]
    r = decide(select_app, "acme")
    assert r.status_code == 429
    err = r.json["error"]
    assert err["code"] == "rate_limited"
    assert err["details"]["resets_at"] == "2026-11-23T12:01:00+00:00"
    assert err["details"]["limit"] == 3 and err["details"]["used"] == 3
    assert r.headers["Retry-After"] == "45"  # 12:00:15 -> 12:01:00
    assert "acme" in err["message"] and "3 of 3" in err["message"]
    assert counter(pg_db, "requests_min", "client:acme") == [3.0]  # the refusal counted nothing
    clock.advance(seconds=44)
    assert decide(select_app, "acme").headers["Retry-After"] == "1"
    clock.advance(seconds=1)  # 12:01:00: a new window
    assert decide(select_app, "acme").status_code == 200
    assert counter(pg_db, "requests_min", "client:acme") == [3.0, 1.0]


def test_clients_are_counted_apart_and_overrides_apply(select_app: FlaskClient) -> None:
    assert [decide(select_app, "acme").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert [decide(select_app, "other").status_code for _ in range(3)] == [200, 200, 200]
    assert [decide(select_app, "vip").status_code for _ in range(6)] == [200] * 5 + [429]
    # requests that name no client share the anonymous client's quota
    assert [decide(select_app, None).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_a_refused_decision_records_no_job(select_app: FlaskClient, pg_db: Database) -> None:
    for _ in range(5):
        decide(select_app, "acme")
    with pg_db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.client_id == "acme")) == 3


# --- runs on the simulator -------------------------------------------------------------------


class Fleet:
    def __init__(self, ids: list[str], usd_per_hour: float = 1.0, **sim: Any) -> None:
        def cat(with_urls: bool) -> Catalog:
            rows = (
                [
                    {**backend(b), "usd_per_hour": usd_per_hour, **({"url": h.url} if with_urls else {})}
                    for b, h in self.sims.items()
                ]
                if with_urls
                else [{**backend(b), "usd_per_hour": usd_per_hour} for b in ids]
            )
            base = tiny_catalog(rows)
            models = tuple(m.model_copy(update={"hosted_usd_per_image": HOSTED_USD}) for m in base.models)
            return base.model_copy(update={"models": models})

        self.sims: dict[str, SimulatorHandle] = {}
        declared = cat(False)
        self.sims = {b: start_simulator(declared, gpu=b, port=0, **sim) for b in ids}
        self.catalog = cat(True)

    def stop(self) -> None:
        for h in self.sims.values():
            h.stop()


MakeApp = Callable[..., FlaskClient]


@pytest.fixture
def make_app(pg_db: Database, clock: FakeClock, tmp_path: Path) -> Iterator[MakeApp]:
    fleets: list[Fleet] = []
    apps: list[Flask] = []

    def make(limits: LimitsSettings, ids: list[str] | None = None, **fleet: Any) -> FlaskClient:
        f = Fleet(ids or ["gpu"], **fleet)
        fleets.append(f)
        app = create_app(
            Settings(migrate_on_start=False, data_dir=tmp_path, limits=limits),
            catalog=f.catalog,
            database=pg_db,
            clock=clock,
        )
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        runner = app.extensions["comfy_router"].runner
        if runner is not None:
            runner.close()
    for f in fleets:
        f.stop()


def run(c: FlaskClient, client_id: str, **extra: Any) -> Any:
    return c.post("/select-and-run", json={**RUN, "client_id": client_id, **extra})


def test_images_per_day_count_the_batch_and_reset_on_the_next_utc_day(
    make_app: MakeApp, pg_db: Database, clock: FakeClock
) -> None:
    c = make_app(LimitsSettings(images_per_day=3))
    assert run(c, "acme", batch_size=2).status_code == 200
    r = run(c, "acme", batch_size=2)  # 2 + 2 > 3
    assert r.status_code == 429 and r.json["error"]["code"] == "quota_exceeded", r.json
    assert r.json["error"]["details"]["resets_at"] == "2026-11-24T00:00:00+00:00"
    assert int(r.headers["Retry-After"]) == 12 * 3600 - 15
    assert run(c, "acme", batch_size=1).status_code == 200  # 2 + 1 fits exactly
    assert run(c, "acme").status_code == 429
    assert run(c, "other").status_code == 200  # another client's day
    clock.t = datetime(2026, 11, 24, 0, 0, 0, tzinfo=UTC)
    assert run(c, "acme", batch_size=3).status_code == 200
    assert counter(pg_db, "images_day", "client:acme") == [3.0, 3.0]


def test_an_admitted_run_that_never_starts_gives_its_images_back(make_app: MakeApp, pg_db: Database) -> None:
    c = make_app(LimitsSettings(images_per_day=1))
    r = run(c, "acme", purpose="no-such-purpose")  # refused by the catalog after admission
    assert r.status_code == 422
    assert counter(pg_db, "images_day", "client:acme") == [0.0]
    assert run(c, "acme").status_code == 200


def test_hosted_spend_warns_once_at_80_percent_pauses_at_100_and_resets_next_day(
    make_app: MakeApp, pg_db: Database, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # 0.04 USD of hosted-equivalent price per image against a 0.10 USD day: 40%, 80%, 120%
    c = make_app(LimitsSettings(hosted_usd_per_day=0.10))
    caplog.set_level(logging.WARNING, logger="router.limits")

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.startswith("router.limits")]

    assert run(c, "acme").json["status"] == "succeeded"
    assert alerts(pg_db) == [] and logged() == []
    assert run(c, "acme").json["status"] == "succeeded"  # 0.08: the warning
    assert alerts(pg_db) == [("client:acme", "hosted_usd", "warning")]
    assert [r.levelname for r in logged()] == ["WARNING"]
    assert "80%" in logged()[0].getMessage() and "client:acme" in logged()[0].getMessage()
    assert run(c, "acme").status_code == 200  # 0.08 < 0.10 still admitted; ends at 0.12: paused
    assert alerts(pg_db) == [
        ("client:acme", "hosted_usd", "warning"),
        ("client:acme", "hosted_usd", "paused"),
    ]  # the warning was not written twice
    assert len(logged()) == 2 and "paused" in logged()[1].getMessage()
    r = run(c, "acme")
    assert r.status_code == 429, r.json
    err = r.json["error"]
    assert err["code"] == "spend_cap_reached"
    assert err["details"]["resets_at"] == "2026-11-24T00:00:00+00:00"
    assert err["details"]["retry_after_s"] == 12 * 3600 - 15 == int(r.headers["Retry-After"])
    assert err["details"]["kind"] == "hosted_usd" and err["details"]["spent_usd"] == pytest.approx(0.12)
    assert run(c, "other").status_code == 200  # the cap is acme's alone
    assert c.post("/select", json={"purpose": "portrait", "client_id": "acme"}).status_code == 200
    clock.advance(hours=12)  # 00:00:15 the next UTC day
    assert run(c, "acme").status_code == 200
    assert counter(pg_db, "hosted_usd_day", "client:acme") == pytest.approx([0.12, 0.04])


def test_gpu_spend_cap_pauses_after_the_attempt_that_reached_it(make_app: MakeApp, pg_db: Database) -> None:
    # 3600 USD/h is a dollar per GPU second: any real run passes a micro-dollar cap
    c = make_app(LimitsSettings(gpu_usd_per_day=1e-6), usd_per_hour=3600.0)
    first = run(c, "acme").json
    assert first["status"] == "succeeded" and first["cost_usd"] > 1e-6
    r = run(c, "acme")
    assert r.status_code == 429 and r.json["error"]["details"]["kind"] == "gpu_usd"
    assert counter(pg_db, "gpu_usd_day", "client:acme") == pytest.approx([first["cost_usd"]])


def test_the_global_cap_pauses_every_client(make_app: MakeApp, pg_db: Database) -> None:
    c = make_app(LimitsSettings(global_hosted_usd_per_day=0.08))
    assert run(c, "a").status_code == 200
    assert run(c, "b").status_code == 200  # 0.08 together: the global cap is reached
    for who in ("a", "b", "c"):
        r = run(c, who)
        assert r.status_code == 429 and r.json["error"]["details"]["subject"] == "global", r.json
        assert "whole router" in r.json["error"]["message"]
    assert ("global", "hosted_usd", "paused") in alerts(pg_db)


def wait_until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def test_max_running_per_client_refuses_while_a_job_runs(make_app: MakeApp, pg_db: Database) -> None:
    c = make_app(LimitsSettings(max_running_per_client=1), slowdown=2.0)
    first = run(c, "acme", wait=False)
    assert first.status_code == 202
    r = run(c, "acme")
    assert r.status_code == 429 and r.json["error"]["code"] == "concurrency_limited", r.json
    assert r.headers["Retry-After"] == "1" and "1 of 1" in r.json["error"]["message"]
    assert run(c, "other", wait=False).status_code == 202  # another client's slot
    job_id = first.json["id"]
    wait_until(lambda: c.get(f"/jobs/{job_id}").json["status"] in ("succeeded", "failed"))
    wait_until(lambda: counter(pg_db, "running", "client:acme") == [0.0])
    assert run(c, "acme").status_code == 200


def test_a_backend_at_its_cap_is_not_chosen(make_app: MakeApp, pg_db: Database) -> None:
    c = make_app(LimitsSettings(backends={"a": 1, "b": 1}), ids=["a", "b"], slowdown=3.0)
    first = run(c, "acme", wait=False)
    busy = first.json["backend"]
    wait_until(lambda: counter(pg_db, "running", f"backend:{busy}") == [1.0])
    second = c.post("/select", json={"purpose": "portrait", "urgency": "batch"}).json
    assert second["backend"] not in (None, busy), second
    rejected = [x for x in second["candidates"] if x["backend"] == busy]
    assert rejected and all(not x["feasible"] for x in rejected)
    assert "concurrency cap (1 of 1" in str(rejected)
    wait_until(lambda: c.get(f"/jobs/{first.json['id']}").json["status"] == "succeeded", 60)
    wait_until(lambda: counter(pg_db, "running", f"backend:{busy}") == [0.0])


def test_a_single_backend_at_its_cap_is_a_503_with_the_reason(make_app: MakeApp, pg_db: Database) -> None:
    c = make_app(LimitsSettings(max_running_per_backend=1), slowdown=3.0)
    first = run(c, "acme", wait=False)
    wait_until(lambda: counter(pg_db, "running", "backend:gpu") == [1.0])
    r = c.post("/select", json={"purpose": "portrait", "urgency": "batch"})
    assert r.status_code == 503 and "concurrency cap (1 of 1" in str(r.json), r.json
    assert c.get("/readyz").status_code == 200  # busy is not unready: the router still takes work
    wait_until(lambda: c.get(f"/jobs/{first.json['id']}").json["status"] == "succeeded", 60)
    assert c.post("/select", json={"purpose": "portrait", "urgency": "batch"}).status_code == 200


def test_admin_quotas_shows_the_counters_and_alerts(make_app: MakeApp) -> None:
    c = make_app(LimitsSettings(images_per_day=10, hosted_usd_per_day=0.05))
    run(c, "acme", batch_size=2)  # 0.08 of 0.05 hosted: warning and paused
    state = c.get("/admin/quotas").json
    assert state["limits"]["images_per_day"] == 10
    values = {(x["scope"], x["subject"]): x["value"] for x in state["counters"]}
    assert values[("images_day", "client:acme")] == 2
    assert values[("hosted_usd_day", "client:acme")] == pytest.approx(0.08)
    assert {(a["subject"], a["level"]) for a in state["alerts"]} == {
        ("client:acme", "warning"),
        ("client:acme", "paused"),
    }
    assert state["day_resets_at"] == "2026-11-24T00:00:00+00:00"


def test_decisions_go_on_uncounted_while_the_database_is_down(
    catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    dead = Database("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    app = create_app(
        Settings(migrate_on_start=False, limits=LimitsSettings(requests_per_min=1)),
        catalog=catalog,
        database=dead,
        backend_state=DeclaredBackendState(),
    )
    c = app.test_client()
    assert [c.post("/select", json={"purpose": "portrait"}).status_code for _ in range(2)] == [200, 200]
    assert "quotas not checked for client:anonymous" in caplog.text


def test_slots_held_by_a_router_that_died_are_reclaimed_after_hold_max_s(
    pg_db: Database, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    gate = QuotaGate(LimitsSettings(max_running_per_client=1, hold_max_s=600), pg_db, clock)
    dead = gate.admit_run("acme", images=1)  # its router dies: release() is never called
    with pytest.raises(QuotaRefused) as refused:
        gate.admit_run("acme", images=1)
    assert refused.value.code == "concurrency_limited"
    clock.advance(seconds=599)
    with pytest.raises(QuotaRefused):
        gate.admit_run("acme", images=1)  # still within hold_max_s: a slow job, not a dead one
    clock.advance(seconds=2)
    alive = gate.admit_run("acme", images=1)
    assert "reclaimed 1 running slot(s) of client:acme" in caplog.text
    assert counter(pg_db, "running", "client:acme") == [1.0]
    dead.release()  # the dead router's slot was reclaimed: giving it back subtracts nothing
    assert counter(pg_db, "running", "client:acme") == [1.0]
    alive.release()
    alive.release()  # idempotent
    assert counter(pg_db, "running", "client:acme") == [0.0]


def test_backend_slots_of_a_dead_router_are_reclaimed(pg_db: Database, clock: FakeClock) -> None:
    gate = QuotaGate(LimitsSettings(max_running_per_backend=1, hold_max_s=60), pg_db, clock)
    slot = gate.backend_slot("gpu")
    slot.__enter__()  # an attempt whose router dies: never exited
    assert gate.backends_running() == {"gpu": 1}
    clock.advance(seconds=61)
    assert gate.backends_running() == {"gpu": 0}
    with gate.backend_slot("gpu"):
        assert gate.backends_running() == {"gpu": 1}
    assert gate.backends_running() == {"gpu": 0}


def test_sqlite_counts_exactly_under_threads(tmp_path: Path, clock: FakeClock) -> None:
    """The embedded default: migration 0004 and the same upserts on SQLite (>= 3.35 for RETURNING)."""
    db = Database(f"sqlite:///{tmp_path / 'quotas.db'}")
    db.migrate()
    gate = QuotaGate(
        LimitsSettings(requests_per_min=5, images_per_day=7, max_running_per_client=3), db, clock
    )

    def try_run(_: int) -> str:
        try:
            gate.admit_run("acme", images=1)
        except QuotaRefused as exc:
            return exc.code
        return "ok"

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(try_run, range(20)))
    assert codes.count("ok") == 3  # max_running, the tightest, admitted exactly three
    assert counter(db, "running", "client:acme") == [3.0]
    assert counter(db, "requests_min", "client:acme") == [3.0]  # refused requests counted nothing
    db.dispose()
