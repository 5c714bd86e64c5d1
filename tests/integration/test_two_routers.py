"""Two live router processes (gunicorn, as `make run` starts them) on one PostgreSQL: requests
from many threads, spread over both, never get past a quota, and one Idempotency-Key is one job."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from router.db.database import Database
from router.db.models import Job, QuotaCounter
from tests.integration.test_select_and_run import backend, tiny_catalog
from tests.support.live_router import LiveRouter, write_catalog
from tests.support.postgres import PostgresServer

KEYS = {
    "acme": "two-routers-acme-key",
    "beta": "two-routers-beta-key",
    "gamma": "two-routers-gamma-key",
    "delta": "two-routers-delta-key",
}
IMAGES_PER_DAY = 7
REQUESTS_PER_MIN = 9
RUN = {"purpose": "portrait", "urgency": "batch", "prompt": "a cat", "width": 512, "height": 512}


@pytest.fixture(scope="module")
def routers(
    pg_server: PostgresServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[LiveRouter], Database]]:
    """Started once for the module: each test uses its own client, so their quotas do not meet."""
    tmp_path = tmp_path_factory.mktemp("two-routers")
    if pg_server is None:
        pytest.skip("needs the managed PostgreSQL server")
    url = pg_server.create_database(f"two_{uuid.uuid4().hex[:10]}")
    db = Database(url)
    db.migrate()
    catalog = tiny_catalog([backend("sim")]).model_dump(mode="json", by_alias=True, exclude_none=True)
    path = write_catalog(tmp_path / "catalog.json", catalog)
    env = {
        "COMFY_ROUTER_API_KEYS": ",".join(f"{client}:{key}" for client, key in KEYS.items()),
        "COMFY_ROUTER_IMAGES_PER_DAY": str(IMAGES_PER_DAY),
        "COMFY_ROUTER_CLIENT_LIMITS": f'{{"gamma": {{"requests_per_min": {REQUESTS_PER_MIN}}}}}',
        "COMFY_ROUTER_MIGRATE": "false",
    }
    live = [LiveRouter(path, url, workdir=tmp_path / f"r{n}", env=env) for n in (1, 2)]
    try:
        for r in live:
            r.start()
        yield live, db
    finally:
        for r in live:
            r.stop()
        db.dispose()


def post(
    router: LiveRouter, path: str, client: str, headers: dict[str, str] | None = None, **body: Any
) -> Any:
    return requests.post(
        router.url + path,
        json={**RUN, **body},
        headers={"Authorization": f"Bearer {KEYS[client]}", **(headers or {})},
        timeout=60,
    )


def count_value(db: Database, scope: str, subject: str) -> float:
    with db.session() as s:
        return float(
            s.scalar(
                select(func.sum(QuotaCounter.value)).where(
                    QuotaCounter.scope == scope, QuotaCounter.subject == subject
                )
            )
            or 0.0
        )


def jobs_of(db: Database, client: str) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Job).where(Job.client_id == client)) or 0)


def test_two_routers_never_admit_past_a_quota(routers: tuple[list[LiveRouter], Database]) -> None:
    live, db = routers
    n = 24
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda i: post(live[i % 2], "/select-and-run", "acme"), range(n)))
    codes = Counter(a.status_code for a in answers)
    assert codes == {200: IMAGES_PER_DAY, 429: n - IMAGES_PER_DAY}, [a.text[:200] for a in answers]
    assert all(a.json()["status"] == "succeeded" for a in answers if a.status_code == 200)
    refused = [a.json()["error"] for a in answers if a.status_code == 429]
    assert {e["code"] for e in refused} == {"quota_exceeded"}
    assert all(a.headers.get("Retry-After") for a in answers if a.status_code == 429)
    # both processes admitted some: the count is shared, not per process
    ports = Counter(live[i % 2].port for i, a in enumerate(answers) if a.status_code == 200)
    assert sum(ports.values()) == IMAGES_PER_DAY
    assert count_value(db, "images_day", "client:acme") == IMAGES_PER_DAY
    assert jobs_of(db, "acme") == IMAGES_PER_DAY
    # another client's day is untouched
    assert post(live[0], "/select-and-run", "beta").status_code == 200


def test_two_routers_share_the_requests_per_minute(routers: tuple[list[LiveRouter], Database]) -> None:
    live, db = routers
    body = {"purpose": "portrait"}
    for _attempt in range(3):  # a burst that straddles a minute boundary is counted in two windows
        with db.session() as s:
            s.query(QuotaCounter).filter(QuotaCounter.subject == "client:gamma").delete()
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(lambda i: post(live[i % 2], "/select", "gamma", **body), range(20)))
        with db.session() as s:
            windows = s.scalar(
                select(func.count()).select_from(QuotaCounter).where(QuotaCounter.subject == "client:gamma")
            )
        if windows == 1:
            break
    codes = Counter(a.status_code for a in answers)
    assert codes == {200: REQUESTS_PER_MIN, 429: 20 - REQUESTS_PER_MIN}
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {"rate_limited"}
    assert count_value(db, "requests_min", "client:gamma") == REQUESTS_PER_MIN


def test_one_idempotency_key_is_one_job_across_both_routers(
    routers: tuple[list[LiveRouter], Database],
) -> None:
    live, db = routers
    key = f"idem-{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(
            pool.map(
                lambda i: post(live[i % 2], "/select-and-run", "delta", headers={"Idempotency-Key": key}),
                range(10),
            )
        )
    assert {a.status_code for a in answers} <= {200, 202}, [a.text for a in answers if a.status_code != 200]
    assert len({a.json()["id"] for a in answers}) == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.idempotency_key == key)) == 1
    assert jobs_of(db, "delta") == 1
    # the requests that lost the race to the key gave their images back
    assert count_value(db, "images_day", "client:delta") == 1


def test_no_key_in_either_routers_log(routers: tuple[list[LiveRouter], Database]) -> None:
    live, _ = routers
    for r in live:
        post(r, "/select", "acme", purpose="portrait")
        requests.post(
            r.url + "/select", json={"purpose": "portrait"}, headers={"Authorization": "Bearer nope-key"}
        )
        text = r.log_path.read_text()
        assert "POST /select" in text  # the access log is there
        for key in [*KEYS.values(), "nope-key"]:
            assert key not in text
