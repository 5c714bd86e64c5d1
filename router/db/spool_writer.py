"""Job and usage writes that survive a database outage: straight to the database while it answers,
to the durable spool (router/db/spool.py) when it does not, replayed in order when it is back.

Invariants:
- Once a job has a record in the spool, every later write of that job is spooled too, until the
  drainer has replayed them all: a job's writes reach the database in the order they were made.
- Replay is idempotent (jobs by their client-made UUID, attempts by (job_id, attempt), updates
  are plain UPDATEs by key), so a crash between a commit and the spool's delete only repeats a
  write, never duplicates a row.
- The jobs the runner is working on, and the jobs not yet persisted, are kept in memory too, so
  GET /jobs/<id> can answer for them while the database is down.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc

from router.db.database import Database
from router.db.jobs import insert_job
from router.db.models import Job, ModelUsageLog
from router.db.spool import Spool, SpooledOp
from router.db.usage import TERMINAL, AttemptStart, finish_attempt, start_attempt, update_job

log = logging.getLogger(__name__)


def is_unavailable(exc: BaseException) -> bool:
    """A connection-level failure (the database is down, restarting or unreachable), as opposed
    to the database refusing this particular write."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


@dataclass
class _JobMemo:
    values: dict[str, Any] = field(default_factory=dict)
    attempts: dict[int, dict[str, Any]] = field(default_factory=dict)
    # The job row is written or spooled (not merely being inserted: that insert may still lose an
    # Idempotency-Key race, and then the job never exists).
    recorded: bool = False

    def apply(self, kind: str, values: dict[str, Any]) -> None:
        if kind in ("insert_job", "update_job"):
            self.values.update(values)
        elif kind == "start_attempt":
            self.attempts[int(values["attempt"])] = {**values, "outcome": "running", "source": "router"}
        else:
            self.attempts.setdefault(int(values["attempt"]), {}).update(values)

    def terminal(self) -> bool:
        return self.values.get("status") in TERMINAL


class DurableWriter:
    """The four writes of a job's life, each falling back to a spool in `spool_dir`. Without a
    `spool_dir`, writes go straight to the database and its errors reach the caller.

    The process's own spool file and the drainer thread are created on the first spooled record;
    spools of dead processes found in `spool_dir` are adopted (and drained) at once."""

    def __init__(
        self,
        database: Database,
        spool_dir: Path | None = None,
        *,
        min_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        idle_s: float = 1.0,
        background: bool = True,
    ) -> None:
        self.db = database
        self.spool_dir = spool_dir
        self.spool: Spool | None = None
        self._adopted = Spool.adopt_orphans(spool_dir) if spool_dir is not None else []
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.idle_s = idle_s
        self.background = background  # False: nothing replays but explicit drain() calls (tests)
        # Called once a dead process's spool is in the database: the attempts it left `running`
        # are only now visible to re-attaching (set by the app to the runner's reattach).
        self.on_adopted_replayed: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}  # job id -> its records in the spools
        self._memo: dict[str, _JobMemo] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        # Set when a write found the database unavailable, cleared when the drainer gets one in:
        # meanwhile new writes go straight to the spool instead of each waiting on a dead server.
        self._db_down = False
        for s in self._spools():
            for op in s.head(limit=-1):  # SQLite: no limit
                self._counts[op.job_id] = self._counts.get(op.job_id, 0) + 1
                memo = self._memo.setdefault(op.job_id, _JobMemo())
                memo.apply(op.kind, op.values)
                memo.recorded = True  # spooled by a router that stopped: it will be written
        if self._adopted:
            log.warning("adopted %d spool file(s) left by stopped router processes", len(self._adopted))

    # --- writes -------------------------------------------------------------------------------

    def insert_job(self, values: dict[str, Any]) -> None:
        self._write(values["id"], "insert_job", values, lambda: insert_job(self.db, values))

    def start_attempt(self, a: AttemptStart) -> None:
        self._write(a.job_id, "start_attempt", asdict(a), lambda: start_attempt(self.db, a))

    def finish_attempt(self, job_id: str, attempt: int, **values: Any) -> None:
        self._write(
            job_id,
            "finish_attempt",
            {"attempt": attempt, **values},
            lambda: finish_attempt(self.db, job_id, attempt, **values),
        )

    def update_job(self, job_id: str, **values: Any) -> None:
        self._write(job_id, "update_job", values, lambda: update_job(self.db, job_id, **values))

    def _write(self, job_id: str, kind: str, values: dict[str, Any], direct: Callable[[], object]) -> None:
        with self._lock:
            self._memo.setdefault(job_id, _JobMemo()).apply(kind, values)
            # A job with spooled writes keeps its order: this one goes behind them.
            if self._counts.get(job_id, 0) > 0 or (self._db_down and self.spool_dir is not None):
                self._append(job_id, kind, values)
                return
        try:
            direct()
        except Exception as exc:
            if self.spool_dir is None or not is_unavailable(exc):
                with self._lock:
                    if kind == "insert_job" and self._counts.get(job_id, 0) == 0:
                        # Never written (it lost an Idempotency-Key race, say): a memo would make
                        # job_id_for_key answer with a job that does not exist.
                        self._memo.pop(job_id, None)
                    else:
                        self._forget_if_done(job_id)
                raise
            log.warning("database unavailable, spooling %s of job %s: %s", kind, job_id, _first_line(exc))
            with self._lock:
                self.last_error = _first_line(exc)
                self._db_down = True
                self._append(job_id, kind, values)
            return
        with self._lock:
            memo = self._memo.get(job_id)
            if memo is not None:
                memo.recorded = True
            self._forget_if_done(job_id)

    def _append(self, job_id: str, kind: str, values: dict[str, Any]) -> None:
        """Called under the lock."""
        self._memo.setdefault(job_id, _JobMemo()).recorded = True
        if self.spool is None:
            assert self.spool_dir is not None
            self.spool = Spool.create(self.spool_dir)
            log.warning("spooling writes to %s until the database answers again", self.spool.path)
            self.start()
        self.spool.append(job_id, kind, values)
        self._counts[job_id] = self._counts.get(job_id, 0) + 1
        self._wake.set()

    def _forget_if_done(self, job_id: str) -> None:
        """Called under the lock: a finished job with nothing left to replay leaves memory."""
        memo = self._memo.get(job_id)
        if memo is not None and memo.terminal() and self._counts.get(job_id, 0) == 0:
            del self._memo[job_id]

    # --- reads --------------------------------------------------------------------------------

    def pending(self, job_id: str) -> bool:
        """True while some write of the job waits in the spool (the database's row is behind)."""
        with self._lock:
            return self._counts.get(job_id, 0) > 0

    def view(self, job_id: str) -> tuple[Job, list[ModelUsageLog]] | None:
        """The job as this process last wrote it (transient ORM objects), if it is in memory."""
        with self._lock:
            memo = self._memo.get(job_id)
            if memo is None or "created_at" not in memo.values:
                return None
            job = Job(**memo.values)
            attempts = [ModelUsageLog(**a) for _, a in sorted(memo.attempts.items()) if "started_at" in a]
        return job, attempts

    def job_id_for_key(self, key: str) -> str | None:
        """A job in memory holding this Idempotency-Key (e.g. spooled while the database is down)."""
        with self._lock:
            for job_id, memo in self._memo.items():
                if memo.recorded and memo.values.get("idempotency_key") == key:
                    return job_id
        return None

    def depth(self) -> int:
        return sum(s.depth() for s in self._spools())

    def dead_count(self) -> int:
        return sum(s.dead_count() for s in self._spools())

    # --- replay -------------------------------------------------------------------------------

    def drain(self, max_ops: int | None = None, batch: int = 200) -> int:
        """Replay spooled records in order until the spools are empty (or `max_ops` are replayed)
        or the database fails again (then raises its error). Returns how many were replayed."""
        replayed = 0
        for spool in self._spools():
            while ops := spool.head(batch):
                for op in ops:
                    if max_ops is not None and replayed >= max_ops:
                        return replayed
                    self._replay(spool, op)
                    replayed += 1
        self._retire_drained_adoptees()
        return replayed

    def _replay(self, spool: Spool, op: SpooledOp) -> None:
        try:
            apply_op(self.db, op)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            # The database refuses this record for good: set it aside (on disk), do not block the rest.
            log.error("spooled %s of job %s refused by the database: %s", op.kind, op.job_id, exc)
            spool.bury(op.seq, f"{type(exc).__name__}: {_first_line(exc)}")
        else:
            spool.remove(op.seq)
        with self._lock:
            self._db_down = False  # it answered
            left = self._counts.get(op.job_id, 1) - 1
            if left > 0:
                self._counts[op.job_id] = left
            else:
                self._counts.pop(op.job_id, None)
                self._forget_if_done(op.job_id)

    def _retire_drained_adoptees(self) -> None:
        retired = [s for s in self._adopted if s.depth() == 0]
        for spool in retired:
            spool.close(delete_if_empty=True)
            self._adopted.remove(spool)
        if retired and self.on_adopted_replayed is not None:
            self.on_adopted_replayed()

    def _spools(self) -> list[Spool]:
        return ([self.spool] if self.spool is not None else []) + list(self._adopted)

    # --- the drainer thread -------------------------------------------------------------------

    def resume(self) -> None:
        """Start replaying what the adopted spools hold (once the caller has wired its hooks)."""
        if self.depth():
            self.start()

    def start(self) -> None:
        """Replay in the background: at once when a record is spooled, then with backoff while
        the database keeps failing. Stopped by `stop()`."""
        if self._thread is not None or self._stopping or not self.background:
            return
        atexit.register(self.stop)
        self._thread = threading.Thread(target=self._loop, name="spool-drainer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        delay_s = self.min_backoff_s
        while not self._stopping:
            if self.depth() == 0:
                self._wake.wait(self.idle_s)
                self._wake.clear()
                continue
            try:
                replayed = self.drain()
            except Exception as exc:  # the database is still away: back off, keep the records
                self.last_error = _first_line(exc)
                if not is_unavailable(exc):
                    log.exception("replaying the spool failed")
                self._wake.wait(delay_s)
                self._wake.clear()
                delay_s = min(delay_s * 2, self.max_backoff_s)
                continue
            if replayed:
                log.warning("replayed %d spooled write(s) to the database", replayed)
            self.last_error = None
            delay_s = self.min_backoff_s

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the drainer and close the spools (an empty spool file is deleted)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        for spool in self._spools():
            spool.close(delete_if_empty=True)
        atexit.unregister(self.stop)


def apply_op(db: Database, op: SpooledOp) -> None:
    """Write one spooled record to the database, idempotently."""
    v = op.values
    if op.kind == "insert_job":
        try:
            insert_job(db, v, if_absent=True)
        except sa_exc.IntegrityError:
            if not v.get("idempotency_key"):
                raise
            # Another process took the key while this one could not check it: keep the row, drop the key.
            log.error(
                "job %s: Idempotency-Key %r was taken meanwhile; stored without it",
                op.job_id,
                v["idempotency_key"],
            )
            insert_job(db, {**v, "idempotency_key": None}, if_absent=True)
    elif op.kind == "start_attempt":
        start_attempt(db, AttemptStart(**v), if_absent=True)
    elif op.kind == "finish_attempt":
        rest = {k: x for k, x in v.items() if k != "attempt"}
        finish_attempt(db, op.job_id, int(v["attempt"]), **rest)
    elif op.kind == "update_job":
        update_job(db, op.job_id, **v)
    else:
        raise ValueError(f"unknown spooled operation {op.kind!r}")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
