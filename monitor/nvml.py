"""NVIDIA GPUs through NVML (the `pynvml` module of `nvidia-ml-py`, injected).

Three kinds of failure, kept apart so that one never hides another:
- the library or driver is missing: normal on CPU machines; no rows, one log line, init is retried
  every `retry_init_every` samples in case a driver appears;
- a reading the GPU does not support (power on many boards, utilisation on MIG): that value is None;
- a GPU that fails (fallen off the bus, needs a reset): a row marked `up=False` with the error,
  while the other GPUs are read as usual.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from monitor.edge_log import EdgeLog
from monitor.rows import SOURCE_NVML, Row, blank_row, bytes_to_mb, error_text

# Readings a GPU may simply not offer: None, silently (gpustat and nvitop do the same).
_UNSUPPORTED = (
    "NVMLError_NotSupported",
    "NVMLError_FunctionNotFound",
    "NVMLError_NoPermission",
    "NVMLError_NoData",
    "NVMLError_Deprecated",
    "NVMLLibraryMismatchError",
)
# Errors that say the whole GPU (or the driver) is gone: the GPU's row is marked failed.
_GPU_FATAL = (
    "NVMLError_GpuIsLost",
    "NVMLError_ResetRequired",
    "NVMLError_GpuNotFound",
    "NVMLError_Uninitialized",
    "NVMLError_DriverNotLoaded",
    "NVMLError_LibRmVersionMismatch",
)
# Init failures that only mean "no NVIDIA GPU here": logged at INFO, not WARNING.
_NO_GPU_HERE = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")

_MIG_NAME = re.compile(r"\bMIG\s+(\S+)\s*$")


def _classes(nvml: Any, names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    return tuple(getattr(nvml, n) for n in names if isinstance(getattr(nvml, n, None), type))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def mig_profile_from_name(name: str | None) -> str | None:
    """`NVIDIA A100-SXM4-80GB MIG 3g.40gb` -> `3g.40gb` (NVML names MIG devices after their profile)."""
    match = _MIG_NAME.search(name or "")
    return match.group(1) if match else None


def mig_profile_from_attributes(attrs: Any) -> str | None:
    """Fallback when the name has no profile: slices and memory, rounded up like NVIDIA's names."""
    if attrs is None:
        return None
    return f"{attrs.gpuInstanceSliceCount}g.{math.ceil(attrs.memorySizeMB / 1024)}gb"


class NvmlReader:
    def __init__(self, nvml: Any, *, host: str, logger: logging.Logger, retry_init_every: int = 60) -> None:
        self._nvml = nvml
        self._host = host
        self._logger = logger
        self._edge = EdgeLog(logger)
        self._retry_every = max(1, retry_init_every)
        self._unsupported = _classes(nvml, _UNSUPPORTED)
        self._fatal = _classes(nvml, _GPU_FATAL)
        self._no_gpu = _classes(nvml, _NO_GPU_HERE)
        self._initialised = False
        self._samples_until_retry = 0
        # Last good name/uuid per index, so a lost GPU's row still says which card it was.
        self._known: dict[int, tuple[str | None, str | None]] = {}

    @property
    def initialised(self) -> bool:
        return self._initialised

    def read(self, ts: datetime) -> list[Row]:
        if not self._ensure_initialised():
            return []
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
        except self._nvml.NVMLError as exc:
            self._give_up_until_retry(exc)
            return []
        rows: list[Row] = []
        for index in range(count):
            rows.extend(self._read_gpu(ts, index))
        return rows

    def close(self) -> None:
        if not self._initialised:
            return
        self._initialised = False
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            self._logger.debug("nvmlShutdown: %s", error_text(exc))

    # -- initialisation -------------------------------------------------------------------

    def _ensure_initialised(self) -> bool:
        if self._initialised:
            return True
        if self._samples_until_retry > 0:
            self._samples_until_retry -= 1
            return False
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            self._give_up_until_retry(exc)
            return False
        self._initialised = True
        if not self._edge.recovered("nvml", "initialised"):
            self._logger.info("nvml: initialised")
        return True

    def _give_up_until_retry(self, exc: BaseException) -> None:
        if self._initialised:
            self.close()
        self._samples_until_retry = self._retry_every - 1
        level = logging.INFO if isinstance(exc, self._no_gpu) else logging.WARNING
        self._edge.problem(
            "nvml",
            f"not available ({error_text(exc)}); no GPU rows, host and ComfyUI rows go on; "
            f"retrying every {self._retry_every} samples",
            level,
        )

    # -- one GPU --------------------------------------------------------------------------

    def _read_gpu(self, ts: datetime, index: int) -> list[Row]:
        key = f"nvml gpu {index}"
        try:
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            row = self._read_device(ts, index, handle, key)
        except self._fatal as exc:
            self._edge.problem(key, f"marked failed: {error_text(exc)}")
            return [self._failed_row(ts, index, exc)]
        self._edge.recovered(key)
        self._known[index] = (row["gpu_uuid"], row["gpu_name"])
        return [row, *self._read_mig_devices(ts, index, handle, key)]

    def _read_device(self, ts: datetime, index: int, handle: Any, key: str) -> Row:
        nvml = self._nvml

        def query(what: str, fn: Callable[..., Any], *args: Any) -> Any:
            return self._query(f"{key} {what}", fn, handle, *args)

        memory = query("memory", nvml.nvmlDeviceGetMemoryInfo)
        util = query("utilisation", nvml.nvmlDeviceGetUtilizationRates)
        temperature_c = query("temperature", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        power_mw = query("power", nvml.nvmlDeviceGetPowerUsage)
        processes = query("processes", nvml.nvmlDeviceGetComputeRunningProcesses)

        row = blank_row(ts, self._host, SOURCE_NVML)
        row.update(
            gpu_index=index,
            gpu_uuid=_text(query("uuid", nvml.nvmlDeviceGetUUID)),
            gpu_name=_text(query("name", nvml.nvmlDeviceGetName)),
            vram_total_mb=bytes_to_mb(memory.total) if memory is not None else None,
            vram_used_mb=bytes_to_mb(memory.used) if memory is not None else None,
            vram_free_mb=bytes_to_mb(memory.free) if memory is not None else None,
            gpu_util_pct=float(util.gpu) if util is not None else None,
            temperature_c=float(temperature_c) if temperature_c is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            processes=_process_list(processes),
            up=True,
        )
        return row

    def _read_mig_devices(self, ts: datetime, index: int, parent: Any, key: str) -> list[Row]:
        nvml = self._nvml
        mode = self._query(f"{key} mig mode", nvml.nvmlDeviceGetMigMode, parent)
        if not mode or mode[0] != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        slots = self._query(f"{key} mig count", nvml.nvmlDeviceGetMaxMigDeviceCount, parent) or 0
        rows: list[Row] = []
        for slot in range(int(slots)):
            mig_key = f"{key} mig {slot}"
            try:
                handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, slot)
            except nvml.NVMLError_NotFound:
                continue  # an empty slot: fewer instances are configured than the card allows
            except nvml.NVMLError as exc:
                self._edge.problem(mig_key, f"marked failed: {error_text(exc)}")
                rows.append(self._failed_row(ts, index, exc, known=False))
                continue
            try:
                row = self._read_device(ts, index, handle, mig_key)
            except self._fatal as exc:
                self._edge.problem(mig_key, f"marked failed: {error_text(exc)}")
                rows.append(self._failed_row(ts, index, exc, known=False))
                continue
            self._edge.recovered(mig_key)
            row["mig_profile"] = mig_profile_from_name(row["gpu_name"]) or mig_profile_from_attributes(
                self._query(f"{mig_key} attributes", nvml.nvmlDeviceGetAttributes, handle)
            )
            rows.append(row)
        return rows

    def _failed_row(self, ts: datetime, index: int, exc: BaseException, *, known: bool = True) -> Row:
        uuid, name = self._known.get(index, (None, None)) if known else (None, None)
        row = blank_row(ts, self._host, SOURCE_NVML)
        row.update(gpu_index=index, gpu_uuid=uuid, gpu_name=name, up=False, error=error_text(exc))
        return row

    # -- the one query wrapper ------------------------------------------------------------

    def _query(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """One reading: None when unsupported or failing alone; GPU-fatal errors propagate."""
        try:
            value = fn(*args)
        except self._unsupported:
            return None
        except self._fatal:
            raise
        except self._nvml.NVMLError as exc:
            self._edge.problem(what, f"reading is NULL: {error_text(exc)}")
            return None
        self._edge.recovered(what)
        return value


def _process_list(processes: Any) -> list[dict[str, Any]] | None:
    """[{pid, used_mb}]; None when NVML cannot list processes (not the same as "none running")."""
    if processes is None:
        return None
    return [{"pid": int(p.pid), "used_mb": bytes_to_mb(p.usedGpuMemory)} for p in processes]
