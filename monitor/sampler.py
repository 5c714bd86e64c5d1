"""One sample: every source read at one timestamp; one source failing does not spoil the others."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from monitor.clock import Clock
from monitor.comfyui import ComfyProbe
from monitor.host import HostReader
from monitor.nvml import NvmlReader
from monitor.rows import Row

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    ts: datetime
    rows: list[Row]
    duration_s: float
    nvml_available: bool = False


class Sampler:
    def __init__(
        self, *, nvml: NvmlReader, host: HostReader, comfy: ComfyProbe, clock: Clock, logger: logging.Logger
    ) -> None:
        self._nvml = nvml
        self._host = host
        self._comfy = comfy
        self._clock = clock
        self._logger = logger

    def take(self) -> Sample:
        started_s = self._clock.monotonic()
        ts = self._clock.now()
        # The HTTP probes wait on the network: start them first, read NVML and psutil meanwhile.
        pending = self._guarded("comfyui", lambda: [self._comfy.begin(ts)])
        rows = self._guarded("nvml", lambda: self._nvml.read(ts))
        rows += self._guarded("host", lambda: [self._host.read(ts)])
        for collect in pending:
            rows += self._guarded("comfyui", collect)
        return Sample(
            ts=ts,
            rows=rows,
            duration_s=self._clock.monotonic() - started_s,
            nvml_available=self._nvml.initialised,
        )

    def close(self) -> None:
        self._nvml.close()
        self._comfy.close()

    def _guarded(self, source: str, read: Callable[[], list[T]]) -> list[T]:
        # A bug or a surprise in one source costs that source's rows for one sample, not the sample.
        try:
            return read()
        except Exception:
            self._logger.exception("%s: reading failed; its rows are missing from this sample", source)
            return []
