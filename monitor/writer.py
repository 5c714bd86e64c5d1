"""Writes samples to `vram_usage_log`, riding out database outages in a bounded buffer.

Every sample goes through the buffer, oldest first, one batched INSERT (one transaction) per
sample; a sample leaves the buffer only once committed. While the database is unreachable the
buffer fills; when full, the oldest sample is dropped, counted and logged, so memory stays bounded
however long the outage lasts.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, null
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from monitor.edge_log import EdgeLog
from monitor.metrics import MonitorMetrics
from monitor.rows import Row, error_text, usage_log_table
from monitor.sampler import Sample

# JSON columns: a Python None would be stored as the JSON document `null`, not SQL NULL.
_JSON_COLUMNS = ("processes",)


def is_outage(exc: BaseException) -> bool:
    """Errors that mean "try again later" (server down, network, pool exhausted, SQLite busy)."""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _db_params(row: Row) -> dict[str, Any]:
    params: dict[str, Any] = dict(row)
    for column in _JSON_COLUMNS:
        if params.get(column) is None:
            params[column] = null()
    return params


class BufferedWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        max_buffered_samples: int,
        metrics: MonitorMetrics,
        logger: logging.Logger,
        ensure_schema: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._buffer: deque[Sample] = deque(maxlen=max(1, max_buffered_samples))
        self._metrics = metrics
        self._logger = logger
        self._edge = EdgeLog(logger)
        self._ensure_schema = ensure_schema
        self._lock = threading.Lock()
        self.dropped = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def submit(self, sample: Sample) -> bool:
        """Queue `sample` and write everything queued; True when nothing is left waiting."""
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                oldest = self._buffer[0]
                self._drop(
                    f"buffer full ({self._buffer.maxlen} samples): dropping the oldest, from {oldest.ts}"
                )
            self._buffer.append(sample)  # a full deque discards its oldest entry itself
            return self._flush_locked()

    def flush(self) -> bool:
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        written = 0
        try:
            self._prepare_schema()
            while self._buffer:
                sample = self._buffer[0]
                try:
                    self._insert(sample.rows)
                except SQLAlchemyError as exc:
                    if is_outage(exc):
                        raise
                    # The database refused this sample itself (bad value, constraint): keeping it
                    # would block every later sample behind it for good.
                    self._buffer.popleft()
                    self._metrics.write_failures.inc()
                    self._drop(f"sample from {sample.ts} rejected: {error_text(exc)}", level=logging.ERROR)
                    continue
                self._buffer.popleft()
                written += 1
                self._metrics.rows_written.inc(len(sample.rows))
        except SQLAlchemyError as exc:
            self._metrics.write_failures.inc()
            # No changing numbers in the message: EdgeLog logs again only when the message changes.
            self._edge.problem("database", f"unreachable, buffering samples: {error_text(exc)}")
            return False
        finally:
            self._metrics.buffered_samples.set(len(self._buffer))
        self._edge.recovered(
            "database", f"writing again; {written} samples written, {self.dropped} dropped in all"
        )
        self._edge.recovered("buffer", "no longer full")
        return True

    def _prepare_schema(self) -> None:
        if self._ensure_schema is None:
            return
        try:
            self._ensure_schema()
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and is_outage(exc):
                raise  # try again with the next sample
            # Anything else (Alembic's own errors, an unknown revision...) will not mend by retrying:
            # say so once, then try to write anyway.
            self._logger.exception("migrating the database failed; writing anyway")
        self._ensure_schema = None

    def _insert(self, rows: list[Row]) -> None:
        if not rows:
            return
        with self._engine.begin() as conn:
            conn.execute(insert(usage_log_table()), [_db_params(r) for r in rows])

    def _drop(self, message: str, level: int = logging.WARNING) -> None:
        self.dropped += 1
        self._metrics.dropped_samples.inc()
        if level >= logging.ERROR:
            self._logger.log(level, "%s (%d dropped in all)", message, self.dropped)
        else:
            # One line when the buffer starts overflowing, not one per sample for the whole outage.
            self._edge.problem("buffer", "full: dropping the oldest samples until the database is back")
            self._logger.debug(message)
