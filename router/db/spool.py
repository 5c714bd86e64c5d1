"""A durable local spool of job and usage writes, kept while the database cannot be reached.

Storage: a SQLite file (stdlib sqlite3) with synchronous=FULL, rather than JSON lines with fsync.
A commit is atomic and on disk before `append()` returns, so a crash never leaves a torn record
to repair; replayed records are deleted by key without rewriting the file; and the same file holds
a dead-letter table for records the database refuses for good. The price, an fsync per append, is
paid only while the database is down.

One file per router process (`spool-<uuid>.sqlite3`), held with an exclusive flock on a side
`.lock` file for the process's life: gunicorn workers never share a spool, so each replays its own
records in order. The kernel drops the lock when a process dies, so a router that starts adopts
the spools whose lock it can take (their owner is gone) and replays them as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS = frozenset({"insert_job", "start_attempt", "finish_attempt", "update_job"})
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,"
    " kind TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dead (seq INTEGER PRIMARY KEY, job_id TEXT NOT NULL, kind TEXT NOT NULL,"
    " body TEXT NOT NULL, error TEXT NOT NULL)",
)


@dataclass(frozen=True)
class SpooledOp:
    seq: int
    job_id: str
    kind: str  # one of KINDS
    values: dict[str, Any]


def encode(values: dict[str, Any]) -> str:
    return json.dumps(values, default=_encode_value, separators=(",", ":"))


def decode(text: str) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(text, object_hook=_decode_object)
    return values


def _encode_value(value: object) -> object:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _decode_object(obj: dict[str, Any]) -> object:
    if len(obj) == 1 and "$dt" in obj:
        return datetime.fromisoformat(obj["$dt"])
    return obj


class Spool:
    """One spool file. Thread-safe; its records come back in the order they were appended."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # every commit reaches the disk
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._depth = int(self._conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0])
        self._closed = False

    @classmethod
    def create(cls, directory: Path) -> Spool:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"spool-{uuid.uuid4().hex}.sqlite3"
        fd = _try_lock(_lock_path(path))
        if fd is None:  # a fresh uuid cannot be locked by anyone else
            raise RuntimeError(f"cannot lock the new spool {path}")
        return cls(path, fd)

    @classmethod
    def adopt_orphans(cls, directory: Path) -> list[Spool]:
        """The spools of processes that are gone (their lock is free), opened in place so SQLite
        recovers whatever their owner was writing when it died."""
        adopted = []
        for path in sorted(directory.glob("spool-*.sqlite3")) if directory.is_dir() else []:
            fd = _try_lock(_lock_path(path))
            if fd is None:
                continue  # a live process owns it
            if not path.exists():  # drained and deleted by its last owner in the meantime
                os.close(fd)
                continue
            adopted.append(cls(path, fd))
        return adopted

    # --- writing ------------------------------------------------------------------------------

    def append(self, job_id: str, kind: str, values: dict[str, Any]) -> int:
        """Store one operation; durable when this returns."""
        if kind not in KINDS:
            raise ValueError(f"unknown spool operation {kind!r}")
        body = encode(values)
        with self._mutex:
            cur = self._conn.execute(
                "INSERT INTO ops (job_id, kind, body) VALUES (?, ?, ?)", (job_id, kind, body)
            )
            self._depth += 1
            return int(cur.lastrowid or 0)

    def remove(self, seq: int) -> None:
        """The operation reached the database (call only after its commit)."""
        with self._mutex:
            if self._conn.execute("DELETE FROM ops WHERE seq = ?", (seq,)).rowcount:
                self._depth -= 1

    def bury(self, seq: int, error: str) -> None:
        """The database refused the operation for good: keep it aside, on disk, with the reason."""
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO dead (seq, job_id, kind, body, error)"
                    " SELECT seq, job_id, kind, body, ? FROM ops WHERE seq = ?",
                    (error[:2000], seq),
                )
                moved = self._conn.execute("DELETE FROM ops WHERE seq = ?", (seq,)).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._depth -= moved

    # --- reading ------------------------------------------------------------------------------

    def head(self, limit: int = 200) -> list[SpooledOp]:
        with self._mutex:
            rows = self._conn.execute(
                "SELECT seq, job_id, kind, body FROM ops ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [SpooledOp(int(seq), job_id, kind, decode(body)) for seq, job_id, kind, body in rows]

    def depth(self) -> int:
        return self._depth

    def dead(self) -> list[tuple[SpooledOp, str]]:
        with self._mutex:
            rows = self._conn.execute(
                "SELECT seq, job_id, kind, body, error FROM dead ORDER BY seq"
            ).fetchall()
        return [(SpooledOp(int(s), j, k, decode(b)), e) for s, j, k, b, e in rows]

    def dead_count(self) -> int:
        with self._mutex:
            if self._closed:  # a drained adoptee retired while /metrics was being scraped
                return 0
            return int(self._conn.execute("SELECT COUNT(*) FROM dead").fetchone()[0])

    # --- closing ------------------------------------------------------------------------------

    def close(self, *, delete_if_empty: bool = False) -> None:
        """Close; with `delete_if_empty`, remove the file when nothing is left in it (not even a
        dead letter). The lock is released last, so no one adopts a file being deleted."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            empty = (
                self._depth == 0 and int(self._conn.execute("SELECT COUNT(*) FROM dead").fetchone()[0]) == 0
            )
            self._conn.close()
            if delete_if_empty and empty:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")
                with contextlib.suppress(FileNotFoundError):
                    _lock_path(self.path).unlink()
            os.close(self._lock_fd)


def _lock_path(path: Path) -> Path:
    return path.with_suffix(".lock")


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
