"""Read the header of a `.safetensors` file, never its tensor data.

The format: 8 bytes, a little-endian unsigned 64-bit length N, then N bytes of UTF-8 JSON
mapping tensor name -> {"dtype", "shape", "data_offsets"}, plus an optional "__metadata__"
object of string -> string. The weights follow; we never read them.

A header that cannot be read (truncated, absurd length, not JSON, wrong shape) raises
`UnreadableHeaderError` with the reason; callers list the file as unreadable and go on.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100 * 1024 * 1024  # real headers are a few MB at most (FLUX: about 80 KB)

DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}  # fmt: skip


class UnreadableHeaderError(Exception):
    """The file is not a readable safetensors file; the message says why."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(t.count for t in self.tensors.values())

    @property
    def weight_bytes(self) -> int:
        return int(sum(t.count * DTYPE_BYTES.get(t.dtype, 2) for t in self.tensors.values()))

    @property
    def dominant_dtype(self) -> str | None:
        """The dtype holding the most parameters (fp8 checkpoints keep norms in F32, for example)."""
        per_dtype: Counter[str] = Counter()
        for t in self.tensors.values():
            per_dtype[t.dtype] += t.count
        if not per_dtype:
            return None
        return per_dtype.most_common(1)[0][0]


def read_header(path: Path, *, max_header_bytes: int = MAX_HEADER_BYTES) -> Header:
    """Parse the header of `path`. Reads 8 + N bytes, N bounded by `max_header_bytes`."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise UnreadableHeaderError(
                    f"file is {len(prefix)} bytes, shorter than the 8-byte header length"
                )
            (length,) = struct.unpack("<Q", prefix)
            if length == 0 or length > max_header_bytes:
                raise UnreadableHeaderError(f"header length {length} is outside 1..{max_header_bytes} bytes")
            if 8 + length > size:
                raise UnreadableHeaderError(f"header length {length} is past the end of the {size}-byte file")
            raw = fh.read(length)
    except OSError as exc:
        raise UnreadableHeaderError(f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) < length:
        raise UnreadableHeaderError("file is truncated inside the header")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableHeaderError(f"header is not UTF-8 JSON: {exc}") from exc
    return parse_header(doc)


def parse_header(doc: Any) -> Header:
    if not isinstance(doc, dict):
        raise UnreadableHeaderError("header is not a JSON object")
    tensors: dict[str, TensorInfo] = {}
    metadata: dict[str, str] = {}
    for name, entry in doc.items():
        if name == "__metadata__":
            if isinstance(entry, dict):
                metadata = {str(k): str(v) for k, v in entry.items()}
            continue
        if not isinstance(entry, dict):
            raise UnreadableHeaderError(f"tensor {name!r} is not an object")
        dtype, shape = entry.get("dtype"), entry.get("shape")
        if not isinstance(dtype, str) or not isinstance(shape, list):
            raise UnreadableHeaderError(f"tensor {name!r} has no dtype or shape")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise UnreadableHeaderError(f"tensor {name!r} has a bad shape {shape!r}")
        tensors[name] = TensorInfo(dtype, tuple(shape))
    return Header(tensors, metadata)
