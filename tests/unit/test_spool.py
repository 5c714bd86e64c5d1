"""The durable spool: append order, survival of a killed process, replay order, idempotent re-drain.

The database side is a real (SQLite, migrated) database; "down" is a PostgreSQL URL nothing
listens on, so the writer sees the same OperationalError a stopped server gives.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from router.db.database import Database
from router.db.models import Job, ModelUsageLog
from router.db.spool import Spool, decode, encode
from router.db.spool_writer import DurableWriter, apply_op, is_unavailable
from router.db.usage import AttemptStart

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1"


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'router.db'}")
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
def down() -> Iterator[Database]:
    db = Database(DOWN_URL)
    yield db
    db.dispose()


def job_values(job_id: str, key: str | None = None) -> dict[str, Any]:
    return {
        "id": job_id,
        "created_at": T0,
        "client_id": None,
        "purpose": "portrait",
        "urgency": "batch",
        "deadline_s": 60.0,
        "quality_target": "high",
        "request": {"purpose": "portrait", "prompt": "a cat"},
        "decision": {"model": "hq"},
        "status": "queued",
        "model_name": "hq",
        "tier": "high",
        "backend": "gpu",
        "selection_reason": "hq/high on gpu",
        "reason_code": "best_quality",
        "degraded": False,
        "idempotency_key": key,
    }


def attempt(job_id: str, n: int) -> AttemptStart:
    return AttemptStart(
        job_id=job_id,
        attempt=n,
        prompt_id=f"p-{job_id[:4]}-{n}",
        started_at=T0 + timedelta(seconds=n),
        backend="gpu",
        model_name="hq",
        tier="high",
        purpose="portrait",
        steps=30,
        width=512,
        height=512,
        estimated_s=1.8,
        queue_s=0.0,
        load_s=0.2,
        estimated_cost_usd=0.001,
        quality_score=90.0,
        selection_reason="hq/high on gpu",
        degraded=n > 1,
        runner="test",
    )


def finish(outcome: str, n: int) -> dict[str, Any]:
    return {
        "finished_at": T0 + timedelta(seconds=n + 0.5),
        "actual_s": 0.5,
        "outcome": outcome,
        "error": None if outcome in ("ok", "degraded") else f"{outcome} on attempt {n}",
        "cost_usd": 0.0001,
        "hosted_usd": None,
    }


def life_of_a_job(w: DurableWriter, job_id: str) -> None:
    """The writes of a job that fails over once: the order matters (running before succeeded)."""
    w.insert_job(job_values(job_id))
    w.update_job(job_id, status="running")
    w.start_attempt(attempt(job_id, 1))
    w.finish_attempt(job_id, 1, **finish("backend_error", 1))
    w.start_attempt(attempt(job_id, 2))
    w.finish_attempt(job_id, 2, **finish("degraded", 2))
    w.update_job(job_id, status="succeeded", finished_at=T0 + timedelta(seconds=3), degraded=True)


def rows(db: Database, job_id: str) -> tuple[Job | None, list[tuple[int, str]]]:
    with db.session() as s:
        job = s.get(Job, job_id)
        attempts = s.execute(
            select(ModelUsageLog.attempt, ModelUsageLog.outcome)
            .where(ModelUsageLog.job_id == job_id)
            .order_by(ModelUsageLog.attempt)
        ).all()
    return job, [(a, o) for a, o in attempts]


def test_values_round_trip_with_aware_datetimes() -> None:
    values = {"at": T0, "nested": {"when": T0 + timedelta(hours=1), "n": [1, 2.5, None]}, "s": "x"}
    assert decode(encode(values)) == values
    with pytest.raises(TypeError):
        encode({"bad": object()})


def test_records_come_back_in_append_order_and_leave_one_by_one(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path)
    seqs = [spool.append(f"job-{i % 3}", "update_job", {"i": i}) for i in range(10)]
    assert seqs == sorted(seqs) and spool.depth() == 10
    assert [op.values["i"] for op in spool.head()] == list(range(10))
    spool.remove(seqs[0])
    spool.remove(seqs[0])  # twice: still one removal
    spool.bury(seqs[1], "refused")
    assert spool.depth() == 8 and [op.values["i"] for op in spool.head(3)] == [2, 3, 4]
    assert [(op.values["i"], err) for op, err in spool.dead()] == [(1, "refused")]
    with pytest.raises(ValueError, match="unknown spool operation"):
        spool.append("job", "drop_table", {})
    spool.close(delete_if_empty=True)
    assert spool.path.exists()  # not empty: kept
    assert spool.dead_count() == 0  # closed: nothing to count here any more (no error)


def test_a_live_owners_spool_is_never_adopted(tmp_path: Path) -> None:
    mine = Spool.create(tmp_path)
    mine.append("job", "update_job", {"status": "running"})
    assert Spool.adopt_orphans(tmp_path) == []  # the lock is held (by this process, on another fd)
    mine.close()
    adopted = Spool.adopt_orphans(tmp_path)
    assert [s.depth() for s in adopted] == [1]
    adopted[0].close()


CRASHER = """
import os, signal, sys
from pathlib import Path
from router.db.spool import Spool
spool = Spool.create(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    spool.append("job-%d" % (i % 5), "update_job", {"i": i})
print(spool.path, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit: as a crash leaves it
"""


def test_records_survive_a_killed_process_and_are_adopted_in_order(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, str(tmp_path), "250"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.exists()
    adopted = Spool.adopt_orphans(tmp_path)
    assert [s.path for s in adopted] == [path]
    assert [op.values["i"] for op in adopted[0].head(limit=-1)] == list(range(250))
    adopted[0].close()


def test_writes_spool_while_the_database_is_down_and_replay_in_order(
    tmp_path: Path, up: Database, down: Database
) -> None:
    w = DurableWriter(down, tmp_path / "spool", background=False)
    try:
        life_of_a_job(w, "11111111-1111-1111-1111-111111111111")
        assert w.depth() == 7 and w.pending("11111111-1111-1111-1111-111111111111")
        job, attempts = w.view("11111111-1111-1111-1111-111111111111") or (None, [])
        assert job is not None and job.status == "succeeded"
        assert [(a.attempt, a.outcome) for a in attempts] == [(1, "backend_error"), (2, "degraded")]
        with pytest.raises(OperationalError) as refused:
            w.drain()
        assert is_unavailable(refused.value) and w.depth() == 7  # nothing lost on a failed replay
        w.db = up  # the database is back
        assert w.drain() == 7
        job, attempts = rows(up, "11111111-1111-1111-1111-111111111111")
        assert job is not None and job.status == "succeeded" and job.degraded is True
        assert attempts == [(1, "backend_error"), (2, "degraded")]
        assert w.depth() == 0 and not w.pending("11111111-1111-1111-1111-111111111111")
        assert w.view("11111111-1111-1111-1111-111111111111") is None  # finished and persisted
    finally:
        w.stop()
    assert not list((tmp_path / "spool").glob("*.sqlite3"))  # an empty spool is deleted on stop


def test_a_re_drain_after_a_partial_flush_duplicates_nothing(
    tmp_path: Path, up: Database, down: Database
) -> None:
    w = DurableWriter(down, tmp_path / "spool", background=False)
    job_id = "22222222-2222-2222-2222-222222222222"
    life_of_a_job(w, job_id)
    assert w.spool is not None
    # A crash after these records were committed to the database but before the spool forgot them.
    for op in w.spool.head(5):
        apply_op(up, op)
    w.db = up
    assert w.drain() == 7
    job, attempts = rows(up, job_id)
    assert job is not None and job.status == "succeeded"
    assert attempts == [(1, "backend_error"), (2, "degraded")]  # two rows, not four
    w.stop()


def test_once_a_job_is_spooled_its_later_writes_queue_behind_even_with_the_database_back(
    tmp_path: Path, up: Database, down: Database
) -> None:
    w = DurableWriter(down, tmp_path / "spool", background=False)
    spooled, fresh = "33333333-3333-3333-3333-333333333333", "44444444-4444-4444-4444-444444444444"
    w.insert_job(job_values(spooled))
    w.update_job(spooled, status="running")
    w.db = up
    assert w.drain(max_ops=1) == 1  # the insert is in; the database answers again
    w.update_job(spooled, status="succeeded")  # behind its spooled update, not straight in
    w.insert_job(job_values(fresh))  # a job with nothing spooled goes straight to the database
    assert w.depth() == 2
    job = rows(up, spooled)[0]
    assert job is not None and job.status == "queued" and rows(up, fresh)[0] is not None
    w.drain()
    job = rows(up, spooled)[0]
    assert job is not None and job.status == "succeeded"
    w.stop()


def test_while_the_database_is_known_down_new_jobs_spool_without_trying_it(
    tmp_path: Path, up: Database, down: Database
) -> None:
    w = DurableWriter(down, tmp_path / "spool", background=False)
    w.insert_job(job_values("cccccccc-cccc-cccc-cccc-cccccccccccc"))  # finds it down
    w.db = up  # back, but no replay has succeeded yet: the writer does not know
    w.insert_job(job_values("dddddddd-dddd-dddd-dddd-dddddddddddd"))
    assert w.depth() == 2 and rows(up, "dddddddd-dddd-dddd-dddd-dddddddddddd")[0] is None
    assert w.drain() == 2
    w.insert_job(job_values("eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee"))  # straight in again
    assert w.depth() == 0 and rows(up, "eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee")[0] is not None
    w.stop()


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_replays(
    tmp_path: Path, up: Database, down: Database
) -> None:
    w = DurableWriter(down, tmp_path / "spool", background=False)
    w.start_attempt(attempt("55555555-5555-5555-5555-555555555555", 1))  # no such job: FK refusal
    w.insert_job(job_values("66666666-6666-6666-6666-666666666666"))
    w.db = up
    assert w.drain() == 2
    assert w.depth() == 0 and w.dead_count() == 1
    assert rows(up, "66666666-6666-6666-6666-666666666666")[0] is not None
    w.stop()
    assert list((tmp_path / "spool").glob("*.sqlite3"))  # the dead letter keeps the file


def test_a_taken_idempotency_key_does_not_lose_the_spooled_job(
    tmp_path: Path, up: Database, down: Database
) -> None:
    w = DurableWriter(down, tmp_path / "spool", background=False)
    w.insert_job(job_values("77777777-7777-7777-7777-777777777777", key="k-1"))
    assert w.job_id_for_key("k-1") == "77777777-7777-7777-7777-777777777777"
    DurableWriter(up).insert_job(job_values("88888888-8888-8888-8888-888888888888", key="k-1"))
    w.db = up
    w.drain()
    kept = rows(up, "77777777-7777-7777-7777-777777777777")[0]
    assert kept is not None and kept.idempotency_key is None
    w.stop()


def test_the_drainer_thread_replays_once_the_database_answers(
    tmp_path: Path, up: Database, down: Database
) -> None:
    w = DurableWriter(down, tmp_path / "spool", min_backoff_s=0.05, max_backoff_s=0.2, idle_s=0.05)
    try:
        life_of_a_job(w, "99999999-9999-9999-9999-999999999999")
        assert w.last_error is not None
        w.db = up
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while w.depth() and datetime.now(UTC) < deadline:
            time.sleep(0.05)
        assert w.depth() == 0
        assert rows(up, "99999999-9999-9999-9999-999999999999")[0] is not None
    finally:
        w.stop()


def test_without_a_spool_directory_errors_reach_the_caller(down: Database) -> None:
    w = DurableWriter(down)
    with pytest.raises(OperationalError) as err:
        w.insert_job(job_values("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"))
    assert is_unavailable(err.value)
    assert w.depth() == 0


def test_a_restarted_writer_adopts_the_spool_and_remembers_its_jobs(
    tmp_path: Path, up: Database, down: Database
) -> None:
    first = DurableWriter(down, tmp_path / "spool", background=False)
    life_of_a_job(first, "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb")
    assert first.spool is not None
    first.spool.close()  # the process ends without draining (its lock goes with it)
    second = DurableWriter(up, tmp_path / "spool", idle_s=0.05)
    replayed: list[bool] = []
    second.on_adopted_replayed = lambda: replayed.append(True)
    second.resume()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while second.depth() and datetime.now(UTC) < deadline:
            time.sleep(0.05)
        job, attempts = rows(up, "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb")
        assert job is not None and job.status == "succeeded" and len(attempts) == 2
        assert replayed == [True]
    finally:
        second.stop()
    assert not list((tmp_path / "spool").glob("*.sqlite3"))  # drained adoptee deleted


def test_a_job_that_lost_the_idempotency_race_is_not_remembered(tmp_path: Path, up: Database) -> None:
    """Found by the two-router test: the losing insert's memo made the key point at a job that
    was never written (404 for a request that should get the winner's job)."""
    from sqlalchemy.exc import IntegrityError

    w = DurableWriter(up, tmp_path / "spool", background=False)
    try:
        w.insert_job(job_values("22222222-2222-2222-2222-222222222222", key="same-key"))
        with pytest.raises(IntegrityError):
            w.insert_job(job_values("33333333-3333-3333-3333-333333333333", key="same-key"))
        assert w.job_id_for_key("same-key") in (None, "22222222-2222-2222-2222-222222222222")
        assert w.view("33333333-3333-3333-3333-333333333333") is None
    finally:
        w.stop()


def test_a_job_whose_insert_is_in_flight_is_not_answered_for_its_key(tmp_path: Path, up: Database) -> None:
    """Found by the two-router test: while one request's insert was still in flight (and about to
    lose the race), a copy in the same process was answered with that job: 404 once it failed."""
    import threading

    w = DurableWriter(up, tmp_path / "spool", background=False)
    entered, release = threading.Event(), threading.Event()
    seen: list[str | None] = []

    def slow_insert() -> None:
        entered.set()
        release.wait(5)

    try:
        thread = threading.Thread(
            target=lambda: w._write(
                "44444444-4444-4444-4444-444444444444",
                "insert_job",
                job_values("44444444-4444-4444-4444-444444444444", key="k2"),
                slow_insert,
            )
        )
        thread.start()
        assert entered.wait(5)
        seen.append(w.job_id_for_key("k2"))  # the insert has not returned yet
        release.set()
        thread.join(5)
        seen.append(w.job_id_for_key("k2"))
    finally:
        w.stop()
    assert seen[0] is None
