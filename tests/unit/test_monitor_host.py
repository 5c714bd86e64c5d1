"""The host row: RAM from psutil, CPU measured over a window even on the very first sample."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from monitor.host import HostReader
from monitor.rows import blank_row

TS = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
MB = 1024 * 1024


class FakePsutil:
    def __init__(self) -> None:
        self.intervals: list[float | None] = []

    def virtual_memory(self) -> Any:
        return SimpleNamespace(total=32768 * MB, available=20480 * MB, used=9000 * MB)

    def cpu_percent(self, interval: float | None = None) -> float:
        self.intervals.append(interval)
        return 12.5


def test_host_row_and_cpu_window() -> None:
    psutil = FakePsutil()
    host = HostReader(psutil, host="box", first_window_s=0.05)
    expected = blank_row(TS, "box", "host")
    expected.update(ram_total_mb=32768.0, ram_used_mb=12288.0, cpu_pct=12.5)
    assert host.read(TS) == expected
    assert host.read(TS) == expected
    # The first call blocks over a short window (a non-blocking first call answers a meaningless 0.0).
    assert psutil.intervals == [0.05, None]
