"""One `vram_usage_log` row as a plain dict, with every column present (NULL = not measured)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table

from router.db.models import VramUsageLog

Row = dict[str, Any]

BYTES_PER_MB = 1024 * 1024  # MiB, like nvidia-smi, ComfyUI and the catalog's `vram_mb`

SOURCE_NVML = "nvml"
SOURCE_HOST = "host"
SOURCE_COMFYUI = "comfyui"


def usage_log_table() -> Table:
    table = VramUsageLog.__table__
    assert isinstance(table, Table)
    return table


def row_columns() -> tuple[str, ...]:
    """Every column but the surrogate key, in table order."""
    return tuple(c.name for c in usage_log_table().columns if c.name != "id")


def blank_row(ts: datetime, host: str, source: str) -> Row:
    """A row where nothing is known yet.

    Every key is present so that a batch of rows is one executemany with one parameter shape,
    and a reading nobody filled in stays None (NULL), never 0.
    """
    row: Row = dict.fromkeys(row_columns())
    row.update(ts=ts, host=host, source=source)
    return row


def bytes_to_mb(value: int | float | None) -> float | None:
    return None if value is None else value / BYTES_PER_MB


def error_text(exc: BaseException) -> str:
    """`ClassName: message`, first line only: enough for a Grafana table cell."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
