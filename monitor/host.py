"""The host's RAM and CPU through psutil (injected), as one `source="host"` row per sample."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from monitor.rows import SOURCE_HOST, Row, blank_row, bytes_to_mb


class PsutilLike(Protocol):
    """The two psutil functions used; the `psutil` module itself satisfies it."""

    def virtual_memory(self) -> Any: ...

    def cpu_percent(self, interval: float | None = None) -> float: ...


class HostReader:
    def __init__(self, psutil: PsutilLike, *, host: str, first_window_s: float = 0.1) -> None:
        self._psutil = psutil
        self._host = host
        self._first_window_s = first_window_s
        self._primed = False

    def read(self, ts: datetime) -> Row:
        memory = self._psutil.virtual_memory()
        row = blank_row(ts, self._host, SOURCE_HOST)
        row.update(
            ram_total_mb=bytes_to_mb(memory.total),
            # total - available, not psutil's `used`: page cache the kernel would give back is not pressure.
            ram_used_mb=bytes_to_mb(memory.total - memory.available),
            cpu_pct=self._cpu_pct(),
        )
        return row

    def _cpu_pct(self) -> float:
        # psutil's first non-blocking call has no previous reading and answers a meaningless 0.0;
        # the first sample (the only one with --once) measures over a short window instead.
        if not self._primed:
            self._primed = True
            return float(self._psutil.cpu_percent(interval=self._first_window_s))
        return float(self._psutil.cpu_percent(interval=None))
