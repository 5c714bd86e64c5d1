"""The catalog: the shipped file is valid, and errors name the file, the JSON path and the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from router.catalog import Catalog, CatalogError, load_catalog
from tests.conftest import ROOT


def test_shipped_catalog_has_the_models_the_hub_needs(catalog: Catalog) -> None:
    families = {m.family for m in catalog.models}
    assert {"flux1", "sdxl", "sd15", "qwen-image", "faceswap"} <= families
    ids = {m.id for m in catalog.models}
    assert {
        "flux1-dev-fp16",
        "flux1-dev-fp8",
        "flux1-schnell",
        "sdxl-lightning-4step",
        "qwen-image-fp8",
    } <= ids
    assert {"inpaint", "face-swap", "text-rendering", "portrait"} <= set(catalog.purposes())
    for m in catalog.models:
        assert m.hosted_usd_per_image is not None and m.hosted_source, m.id
    assert catalog.model("flux1-dev-fp16").hosted_usd_per_image == 0.025  # type: ignore[union-attr]
    assert catalog.model("faceswap-reactor").hosted_usd_per_image == 0.2  # type: ignore[union-attr]
    assert {"time_sources", "vram_sources", "price_sources"} <= set(catalog.docs)


def test_exported_json_schema_is_up_to_date() -> None:
    current = json.loads((ROOT / "models_config.schema.json").read_text())
    assert current == Catalog.model_json_schema(by_alias=True), "run `make schema`"


def _mutate(raw: dict[str, Any], path: list[Any], value: Any) -> None:
    node = raw
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


CASES = [
    ("wrong-type", ["models", 0, "vram_mb"], "lots", "$.models[0](id=flux1-dev-fp16).vram_mb", "integer"),
    (
        "negative",
        ["models", 2, "load_s"],
        -1,
        "$.models[2](id=flux1-schnell).load_s",
        "greater than or equal",
    ),
    ("unknown-key", ["models", 1, "vram_gb"], 16, "$.models[1](id=flux1-dev-fp8).vram_gb", "Extra inputs"),
    (
        "bad-tier-name",
        ["models", 0, "tiers", "ultra"],
        {"steps": 1, "cfg": 1, "quality": 1},
        "$.models[0]",
        "ultra",
    ),
    (
        "quality-over-100",
        ["models", 3, "tiers", "high", "quality"],
        150,
        "tiers.high.quality",
        "less than or equal",
    ),
    ("backend-url", ["backends", 0, "url"], "not a url", "$.backends[0](id=a100).url", "URL"),
    ("default-urgency", ["default_urgency"], "soon", "$", "default_urgency"),
    ("duplicate-id", ["models", 1, "id"], "flux1-dev-fp16", "$", "duplicate id"),
]


@pytest.mark.parametrize(
    ("path", "value", "where", "what"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_catalog_errors_name_the_file_path_and_problem(
    tmp_path: Path, catalog_path: Path, path: list[Any], value: Any, where: str, what: str
) -> None:
    raw = json.loads(catalog_path.read_text())
    _mutate(raw, path, value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(CatalogError) as info:
        load_catalog(bad)
    text = str(info.value)
    assert str(bad) in text
    assert any(where in str(p) and what in str(p) for p in info.value.problems) or (
        where in text and what in text
    ), text


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "models": [\n    {"id": "x",}\n  ]\n}')
    with pytest.raises(CatalogError, match=r"broken.json.*\n.*line 3 column"):
        load_catalog(bad)


def test_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read file"):
        load_catalog(tmp_path / "nope.json")


def test_every_error_is_listed_not_only_the_first(tmp_path: Path, catalog_path: Path) -> None:
    raw = json.loads(catalog_path.read_text())
    raw["models"][0]["vram_mb"] = -1
    raw["models"][4]["load_s"] = "slow"
    bad = tmp_path / "two.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(CatalogError) as info:
        load_catalog(bad)
    assert len(info.value.problems) == 2


def test_catalog_check_command_reports_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": []}')
    out = subprocess.run(
        [sys.executable, "-m", "router", "catalog", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "bad.json" in out.stderr and "$.models" in out.stderr
