"""Replace the catalog file atomically, keeping the previous version next to it."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def write_atomically(path: Path, text: str, *, backup: bool = True) -> Path | None:
    """Write `text` to `path` so that readers see the old file or the new one, never a mix.

    The text goes to a temporary file in the same folder (same filesystem, so `os.replace` is an
    atomic rename), is flushed to disk, then renamed over `path`. The previous file is first copied
    to `<name>.bak` (replacing an older backup); its path is returned.
    """
    previous: Path | None = None
    mode: int | None = None
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if backup:
            previous = backup_path(path)
            shutil.copy2(path, previous)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return previous
