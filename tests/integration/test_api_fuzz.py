"""Schemathesis against the router's own `/openapi.json`: no generated request may get a 5xx.

One app per module, on a real PostgreSQL database, with the shipped catalog (tiny times) and
backends that are ComfyUI simulators on loopback, so `/select-and-run` takes the real path.
Generation is derandomised (a fixed seed) and bounded: a fixed number of cases per operation
and mode, a deadline per case, no shrinking (failures are collected, not minimised).
No 5xx is excused: with a runner the by-design 503 `no_runner` cannot occur, and the simulators
stay up, so a 503 `no_backend_available` would be a finding too.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.transport import Response

from router.api.app import create_app
from router.catalog import Catalog
from router.db.database import Database
from router.settings import Settings
from router.simulator import start_simulator
from router.simulator.testing import fast_catalog
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Cases per operation and mode, for operations that take input (path, query, header or body).
# Those without any (GET /healthz...) have one valid request and no invalid one: a few positive cases.
EXAMPLES = {GenerationMode.POSITIVE: 200, GenerationMode.NEGATIVE: 150}
NO_INPUT_EXAMPLES = 5
MIN_CASES = 1_000
CASE_DEADLINE = timedelta(seconds=10)


@pytest.fixture(scope="module")
def fuzz_db(pg_server: PostgresServer | None, pg_url: str) -> Iterator[Database]:
    """A fresh database for the module (the shared session one when TEST_DATABASE_URL is set)."""
    url = pg_server.create_database(f"fuzz_{uuid.uuid4().hex[:12]}") if pg_server else pg_url
    db = Database(url)
    db.migrate()
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def fuzz_app(
    catalog: Catalog, fuzz_db: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    fast = fast_catalog(catalog)
    sims = {b.id: start_simulator(fast, gpu=b.id, port=0) for b in fast.backends}
    try:
        wired = fast.model_copy(
            update={"backends": tuple(b.model_copy(update={"url": sims[b.id].url}) for b in fast.backends)}
        )
        data_dir: Path = tmp_path_factory.mktemp("fuzz-data")
        yield create_app(
            Settings(migrate_on_start=False, data_dir=data_dir, api_keys=None),
            catalog=wired,
            database=fuzz_db,
            start_simulators=False,
        )
    finally:
        for sim in sims.values():
            sim.stop()


def error_body_problem(response: Response) -> str | None:
    """Why an error answer is not `{"error": {"code", "message", "details"}}` JSON (None if it is)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"not JSON: {response.content[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"}:
        return f"not an error envelope: {body!r:.200}"
    err = body["error"]
    if not isinstance(err, dict) or set(err) != {"code", "message", "details"}:
        return f"error keys are not code/message/details: {err!r:.200}"
    if not isinstance(err["code"], str) or not isinstance(err["message"], str):
        return f"code and message must be strings: {err!r:.200}"
    return None


def check(response: Response) -> str | None:
    """None if the answer is acceptable, else what is wrong with it."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.content[:300]!r}"
    if response.status_code >= 400:
        return error_body_problem(response)
    return None


def path_parameters(operation: Any) -> list[str]:
    """The placeholders of the path template (/jobs/{job_id}...).

    /openapi.json does not declare them as parameters; schemathesis fills them with arbitrary
    strings, which would only ever reach unknown jobs: the test draws them itself, real job ids
    included, so the routes past the 404 are exercised too.
    """
    return re.findall(r"{(\w+)}", operation.path)


def path_value(name: str, job_ids: list[str]) -> st.SearchStrategy[str]:
    if name == "index":
        return st.integers(min_value=-3, max_value=5).map(str)
    return st.one_of(st.sampled_from(job_ids), st.uuids().map(str), st.text(min_size=1, max_size=40))


# The Idempotency-Key header of /select-and-run is not in the document either: drawn here.
IDEMPOTENCY_KEYS = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300),
)


def catalog_choices(catalog: Catalog) -> st.SearchStrategy[dict[str, Any] | None]:
    """Fields the catalog accepts, merged into two thirds of the bodies of /select and /select-and-run.

    The document allows any purpose or urgency string (the catalog decides), so without them nearly
    every positive case would be a 422 and the deciding and running paths would seldom be reached.
    One third keeps the generated body, one third gets a known purpose and urgency, one third a
    plain text-to-image request (generated prompt, size, seed, wait) that can run on the simulators.
    """
    purpose = st.sampled_from(catalog.purposes())
    urgency = st.sampled_from(sorted(catalog.urgencies))
    plain = st.fixed_dictionaries(
        {
            "purpose": st.sampled_from(["portrait", "text-to-image", "illustration", "product"]),
            "urgency": urgency,
            "prompt": st.text(min_size=1, max_size=200).filter(lambda t: "\x00" not in t),
            "width": st.sampled_from([512, 768, 1024]),
            "height": st.sampled_from([512, 768, 1024]),
        },
        optional={"seed": st.integers(min_value=0, max_value=2**32), "wait": st.booleans()},
    )
    return st.one_of(st.none(), st.fixed_dictionaries({"purpose": purpose, "urgency": urgency}), plain)


def fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    job_ids: list[str],
    known: st.SearchStrategy[dict[str, Any] | None],
    failures: list[str],
    statuses: Counter[str],
) -> int:
    """Run one operation's cases; append what went wrong to `failures`; return how many ran."""
    ran = 0
    extra_path = path_parameters(operation)
    negatable = bool(operation.body) or any(True for _ in (*operation.query, *operation.headers))
    if not negatable and mode is GenerationMode.NEGATIVE:
        return 0  # nothing that can be made invalid (path values are drawn from both ranges anyway)
    takes_input = negatable or bool(extra_path)
    path_values = st.fixed_dictionaries({name: path_value(name, job_ids) for name in extra_path})
    key = IDEMPOTENCY_KEYS if operation.label == "POST /select-and-run" else st.none()
    deciding = operation.label in ("POST /select", "POST /select-and-run")
    overrides = known if deciding and mode is GenerationMode.POSITIVE else st.none()

    @settings(
        max_examples=EXAMPLES[mode] if takes_input else NO_INPUT_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=CASE_DEADLINE,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        path=path_values,
        idempotency_key=key,
        override=overrides,
    )
    def run(
        case: Any, path: dict[str, str], idempotency_key: str | None, override: dict[str, Any] | None
    ) -> None:
        nonlocal ran
        ran += 1
        if override is not None and (isinstance(case.body, dict) or "prompt" in override):
            case.body = {**case.body, **override} if "prompt" not in override else override
        case.path_parameters = {**case.path_parameters, **{k: quote(v, safe="") for k, v in path.items()}}
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        response = case.call(headers=headers)
        statuses[f"{operation.label} {response.status_code}"] += 1
        problem = check(response)
        if problem is not None:
            failures.append(f"{operation.label}: {problem}\n    reproduce: {case.as_curl_command(headers)}")

    try:
        run()
    except Unsatisfiable as exc:
        raise AssertionError(f"{operation.label} ({mode}): {exc}") from exc
    return ran


def real_jobs(app: Flask) -> list[str]:
    """Ids of jobs that exist (one run, one decided only), so the jobs routes are not only 404s."""
    c = app.test_client()
    run = c.post("/select-and-run", json={"purpose": "portrait", "urgency": "batch", "prompt": "a cat"})
    assert run.status_code == 200, run.json
    assert run.json["status"] == "succeeded", run.json
    decided = c.post("/select", json={"purpose": "portrait", "urgency": "realtime"})
    assert decided.status_code == 200, decided.json
    return [run.json["id"], decided.json["job_id"]]


@pytest.mark.timeout(240)
def test_no_generated_request_gets_a_5xx_or_a_non_json_error(fuzz_app: Flask, catalog: Catalog) -> None:
    job_ids = real_jobs(fuzz_app)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    failures: list[str] = []
    statuses: Counter[str] = Counter()
    ran = {
        (op.label, str(mode)): fuzz_operation(op, mode, job_ids, catalog_choices(catalog), failures, statuses)
        for mode in EXAMPLES
        for op in operations
    }
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:20])
    print(f"\n{sum(ran.values())} cases:", ran, "\nanswers:", sorted(statuses.items()))
    assert sum(ran.values()) >= MIN_CASES, ran
    # The real paths were taken, not only validation errors: jobs ran on the simulators.
    assert statuses["POST /select-and-run 200"] + statuses["POST /select-and-run 202"] > 0, statuses
    assert statuses["POST /select 200"] > 0, statuses


# Found by the fuzzing above: PostgreSQL refuses U+0000 in a text parameter or a JSONB value, so a
# NUL in a job id or in a recorded request field was a 500 (psycopg DataError) instead of a 4xx.
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/jobs/p%00%0E"),
        ("post", "/jobs/p%00%0E/cancel"),
        ("get", "/jobs/p%00/outputs/0"),
        ("post", "/jobs/p%00%0E/feedback"),
    ],
)
def test_a_nul_in_a_job_id_is_not_found(fuzz_app: Flask, method: str, path: str) -> None:
    r = getattr(fuzz_app.test_client(), method)(path, json={"rating": 1})
    assert r.status_code == 404, r.json
    assert r.json["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/select-and-run", {"purpose": "portrait", "prompt": "a\x00b"}, "prompt"),
        (
            "/select-and-run",
            {"purpose": "portrait", "prompt": "a", "negative_prompt": "\x00"},
            "negative_prompt",
        ),
        ("/select-and-run", {"purpose": "portrait", "prompt": "a", "client_id": "c\x00"}, "client_id"),
        ("/select", {"purpose": "portrait", "prompt": "a\x00b"}, "prompt"),
    ],
)
def test_a_nul_in_a_recorded_field_is_a_422_naming_it(
    fuzz_app: Flask, route: str, body: dict[str, Any], field: str
) -> None:
    r = fuzz_app.test_client().post(route, json={**body, "urgency": "batch"})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == "validation_error"
    assert r.json["error"]["details"] == [
        {"field": field, "message": "must not contain NUL (U+0000) characters"}
    ]
