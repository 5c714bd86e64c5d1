"""Read and validate the catalog file; errors name the file, the JSON path and the problem."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from router.catalog.schema import Catalog


@dataclass(frozen=True)
class CatalogProblem:
    json_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.json_path}: {self.message}"


class CatalogError(Exception):
    """The catalog file cannot be used. `problems` lists every error found, not only the first."""

    def __init__(self, path: Path | str, problems: list[CatalogProblem]) -> None:
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid catalog {self.path}:\n{lines}")


def load_catalog(path: Path | str) -> Catalog:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(path, [CatalogProblem("$", f"cannot read file: {exc.strerror or exc}")]) from exc
    return parse_catalog(text, path)


def parse_catalog(text: str, path: Path | str = "<string>") -> Catalog:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise CatalogError(path, [CatalogProblem("$", f"not valid JSON at {where}: {exc.msg}")]) from exc
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = [CatalogProblem(json_path(err["loc"], raw), err["msg"]) for err in exc.errors()]
        raise CatalogError(path, problems) from exc


def json_path(loc: tuple[int | str, ...], raw: Any) -> str:
    """`("models", 3, "vram_mb")` -> `$.models[3].vram_mb`, with the model's id when known.

    Pydantic appends the union member name for some errors (e.g. `str`, `function-after`);
    those are not keys of the document, so they are dropped by walking the document.
    """
    out = "$"
    node: Any = raw
    for part in loc:
        if isinstance(part, int) and isinstance(node, list):
            out += f"[{part}]"
            node = node[part] if part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f"(id={node['id']})"
        elif isinstance(node, dict) and part in node:
            out += f".{part}"
            node = node[part]
        elif isinstance(node, dict):
            out += f".{part}"  # a missing or extra key
            node = None
        else:
            break
    return out
