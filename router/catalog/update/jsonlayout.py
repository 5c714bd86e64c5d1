"""Write the catalog back in the layout the operator gave it, so the diff shows only real changes.

`models_config.json` is hand-formatted: small objects on one line (`"time": {...}`), large ones
expanded. `read_layout` records, for every object and array of the original text, whether it was
written on one line; `dump` writes a document with 2-space indentation, putting each container on
one line exactly when the original did. Containers the original did not have (a new model, a new
`calibration`) follow the layout of the same path in a sibling (another model's `tiers.draft`),
else go on one line when that fits in `width` characters.
"""

from __future__ import annotations

import json
import re
from typing import Any

Path_ = tuple[str | int, ...]
Layout = dict[Path_, bool]  # path -> written on one line

_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


def read_layout(text: str) -> Layout:
    """Which containers of `text` (valid JSON) are on one line. Paths index arrays by position."""
    layout: Layout = {}

    def skip(i: int) -> int:
        m = _WS.match(text, i)
        return m.end() if m else i

    def string(i: int) -> tuple[str, int]:
        m = _STRING.match(text, i)
        if m is None:
            raise ValueError(f"bad string at offset {i}")
        return str(json.loads(m.group())), m.end()

    def value(i: int, path: Path_) -> int:
        i = skip(i)
        ch = text[i]
        if ch == "{":
            start = i
            i = skip(i + 1)
            if text[i] != "}":
                while True:
                    key, i = string(skip(i))
                    i = skip(i)
                    i = value(i + 1, (*path, key))  # past ':'
                    i = skip(i)
                    if text[i] == ",":
                        i += 1
                        continue
                    break
            layout[path] = "\n" not in text[start:i]
            return i + 1
        if ch == "[":
            start = i
            i = skip(i + 1)
            index = 0
            if text[i] != "]":
                while True:
                    i = skip(value(i, (*path, index)))
                    index += 1
                    if text[i] == ",":
                        i += 1
                        continue
                    break
            layout[path] = "\n" not in text[start:i]
            return i + 1
        if ch == '"':
            return string(i)[1]
        m = _SCALAR.match(text, i)
        if m is None:
            raise ValueError(f"unexpected character {ch!r} at offset {i}")
        return m.end()

    value(0, ())
    return layout


def _pattern(path: Path_) -> Path_:
    return tuple("*" if isinstance(p, int) else p for p in path)


def dump(doc: Any, layout: Layout | None = None, *, width: int = 110) -> str:
    """`doc` as JSON text ending in a newline, honouring `layout` (see the module docstring)."""
    layout = layout or {}
    by_pattern: dict[Path_, bool] = {}
    for path, inline in layout.items():
        by_pattern.setdefault(_pattern(path), inline)

    def compact(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False)

    def inline_at(path: Path_, v: Any, indent: int) -> bool:
        if path in layout:
            return layout[path]
        if _pattern(path) in by_pattern:
            return by_pattern[_pattern(path)]
        return indent + len(compact(v)) <= width

    def render(v: Any, path: Path_, indent: int) -> str:
        if not isinstance(v, dict | list) or not v or inline_at(path, v, indent):
            return compact(v)
        pad = " " * (indent + 2)
        if isinstance(v, dict):
            items = [f"{pad}{compact(k)}: {render(x, (*path, k), indent + 2)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
        items = [f"{pad}{render(x, (*path, n), indent + 2)}" for n, x in enumerate(v)]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"

    return render(doc, (), 0) + "\n"
