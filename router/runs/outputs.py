"""Job outputs on local disk: `<data_dir>/outputs/<job id>/<n>.png`.

ComfyUI keeps outputs only in its own output folder and its history in memory; the router keeps
its own copy so `/jobs/<id>/outputs/<n>` works after a backend restarts.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_SAFE_ID = re.compile(r"^[0-9a-f-]{36}$")


class OutputStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, job_id: str, index: int) -> Path:
        if not _SAFE_ID.match(job_id) or index < 0:
            raise KeyError(job_id)  # never build a path from an unchecked id
        return self.root / "outputs" / job_id / f"{index}.png"

    def save(self, job_id: str, index: int, data: bytes) -> Path:
        target = self.path(job_id, index)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)  # readers never see a half-written image
        return target

    def load(self, job_id: str, index: int) -> bytes | None:
        try:
            return self.path(job_id, index).read_bytes()
        except (KeyError, OSError):
            return None
