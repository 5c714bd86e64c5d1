"""Merging an inventory into the raw catalog: add, disable, never delete, never touch edits."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from router.catalog.loader import parse_catalog
from router.catalog.update.inventory import Inventory, scan_models_dir
from router.catalog.update.jsonlayout import dump, read_layout
from router.catalog.update.merge import merge_inventory, new_model_id
from tests.support.safetensors_files import comfyui_layout, write_family_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def doc() -> dict[str, Any]:
    return json.loads((ROOT / "models_config.json").read_text())


@pytest.fixture
def models_root(tmp_path: Path, doc: dict[str, Any]) -> Path:
    return comfyui_layout(tmp_path / "models", {m["id"]: m["files"] for m in doc["models"]})


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in doc["models"]}


def test_catalog_round_trips_byte_identical_through_the_layout_writer() -> None:
    text = (ROOT / "models_config.json").read_text()
    assert dump(json.loads(text), read_layout(text)) == text


def test_complete_layout_changes_nothing(doc: dict[str, Any], models_root: Path) -> None:
    new, changes = merge_inventory(doc, scan_models_dir(models_root))
    assert new == doc
    assert not changes.any


@pytest.mark.parametrize(
    ("folder", "family", "template", "slot"),
    [
        pytest.param("checkpoints", "sdxl", "sdxl-base", "ckpt_name", id="sdxl-checkpoint"),
        pytest.param("diffusion_models", "flux1", "flux1-dev-fp16", "unet_name", id="flux-diffusion-model"),
        pytest.param("unet", "qwen-image", "qwen-image-fp8", "unet_name", id="qwen-in-unet-alias"),
        pytest.param("checkpoints", "sd15", "sd15", "ckpt_name", id="sd15-checkpoint"),
    ],
)
def test_new_file_becomes_a_disabled_conservative_entry(
    doc: dict[str, Any], models_root: Path, folder: str, family: str, template: str, slot: str
) -> None:
    write_family_file(models_root / folder / "New Model v2.safetensors", family)

    new, changes = merge_inventory(doc, scan_models_dir(models_root))

    entry = by_id(new)["new-model-v2"]
    tpl = by_id(doc)[template]
    assert entry["family"] == family
    assert entry["files"][slot] == "New Model v2.safetensors"
    assert entry["enabled"] is False
    assert entry["calibrated"] is False
    assert entry["time"]["base_s"] == pytest.approx(tpl["time"]["base_s"] * 1.5)
    assert entry["time"]["per_step_s"] == pytest.approx(tpl["time"]["per_step_s"] * 1.5)
    steps = {t: s["steps"] for t, s in entry["tiers"].items()}
    assert steps == {t: s["steps"] for t, s in tpl["tiers"].items()}
    assert all(entry["tiers"][t]["quality"] < tpl["tiers"][t]["quality"] for t in tpl["tiers"])
    assert entry["vram_mb"] >= tpl["vram_mb"]
    assert "hosted_usd_per_image" not in entry
    assert list(entry)[:3] == ["id", "family", "description"]
    assert [a.split(" ")[0] for a in changes.added] == ["new-model-v2"]
    parse_catalog(json.dumps(new))  # the result is a valid catalog


def test_enable_new_adds_enabled_entries(doc: dict[str, Any], models_root: Path) -> None:
    write_family_file(models_root / "checkpoints" / "x.safetensors", "sdxl")
    new, _ = merge_inventory(doc, scan_models_dir(models_root), enable_new=True)
    assert by_id(new)["x"]["enabled"] is True


@pytest.mark.parametrize(
    ("make", "note"),
    [
        pytest.param(lambda p: write_family_file(p, "unknown"), "family not recognised", id="unknown-family"),
        pytest.param(lambda p: p.write_bytes(b"\x01"), "header unreadable", id="corrupt-header"),
    ],
)
def test_unusable_files_are_not_added_but_noted(
    doc: dict[str, Any], models_root: Path, make: Any, note: str
) -> None:
    make(models_root / "checkpoints" / "odd.safetensors")
    new, changes = merge_inventory(doc, scan_models_dir(models_root))
    assert "odd" not in by_id(new)
    assert any("odd.safetensors" in n and note in n for n in changes.notes)


@pytest.mark.parametrize(
    ("remove", "disabled"),
    [
        pytest.param("checkpoints/v1-5-pruned-emaonly.safetensors", {"sd15"}, id="checkpoint"),
        pytest.param("vae/ae.safetensors", {"flux1-dev-fp16", "flux1-dev-fp8", "flux1-schnell"}, id="vae"),
        pytest.param(
            "checkpoints/sd_xl_base_1.0.safetensors", {"sdxl-base", "faceswap-reactor"}, id="shared-ckpt"
        ),
    ],
)
def test_vanished_file_disables_its_entries_and_deletes_nothing(
    doc: dict[str, Any], models_root: Path, remove: str, disabled: set[str]
) -> None:
    (models_root / remove).unlink()

    new, changes = merge_inventory(doc, scan_models_dir(models_root))

    assert [m["id"] for m in new["models"]] == [m["id"] for m in doc["models"]]
    assert {m["id"] for m in new["models"] if m.get("enabled") is False} == disabled
    assert {d.split(":")[0] for d in changes.disabled} == disabled
    for model_id in disabled:  # only `enabled` changed
        rest = {k: v for k, v in by_id(new)[model_id].items() if k != "enabled"}
        assert rest == by_id(doc)[model_id]


def test_unscanned_folder_disables_nothing(doc: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)  # only checkpoints/ exists, and it is empty
    new, changes = merge_inventory(doc, scan_models_dir(root))
    disabled = {m["id"] for m in new["models"] if m.get("enabled") is False}
    assert disabled == {m["id"] for m in doc["models"] if "ckpt_name" in m["files"]}
    assert all("checkpoints/" in d for d in changes.disabled)


def test_rename_disables_old_entry_and_adds_new(doc: dict[str, Any], models_root: Path) -> None:
    old = models_root / "checkpoints" / "sd_xl_base_1.0.safetensors"
    old.unlink()
    write_family_file(models_root / "checkpoints" / "sdxl_base_renamed.safetensors", "sdxl")

    new, changes = merge_inventory(doc, scan_models_dir(models_root))

    assert by_id(new)["sdxl-base"]["enabled"] is False
    assert by_id(new)["sdxl_base_renamed"]["files"] == {"ckpt_name": "sdxl_base_renamed.safetensors"}
    assert len(changes.added) == 1


def test_hand_edited_fields_survive(doc: dict[str, Any], models_root: Path) -> None:
    edited = copy.deepcopy(doc)
    sdxl = by_id(edited)["sdxl-base"]
    sdxl["vram_mb"] = 12345
    sdxl["tiers"]["standard"]["quality"] = 71
    sdxl["description"] = "operator's words"
    (models_root / "checkpoints" / "v1-5-pruned-emaonly.safetensors").unlink()
    write_family_file(models_root / "checkpoints" / "x.safetensors", "sdxl")

    new, _ = merge_inventory(edited, scan_models_dir(models_root))

    assert by_id(new)["sdxl-base"] == sdxl
    assert by_id(new)["x"]["vram_mb"] == 12345  # the template is the edited entry


def test_a_disabled_entry_whose_file_is_back_stays_disabled(doc: dict[str, Any], models_root: Path) -> None:
    edited = copy.deepcopy(doc)
    by_id(edited)["sd15"]["enabled"] = False
    new, changes = merge_inventory(edited, scan_models_dir(models_root))
    assert by_id(new)["sd15"]["enabled"] is False
    assert not changes.any
    assert any(n.startswith("sd15 is disabled") for n in changes.notes)


def test_merge_does_not_modify_its_input(doc: dict[str, Any], models_root: Path) -> None:
    before = copy.deepcopy(doc)
    (models_root / "vae" / "ae.safetensors").unlink()
    merge_inventory(doc, scan_models_dir(models_root))
    assert doc == before


def test_empty_inventory_from_nowhere_changes_nothing(doc: dict[str, Any]) -> None:
    new, changes = merge_inventory(doc, Inventory())
    assert new == doc
    assert not changes.any


@pytest.mark.parametrize(
    ("name", "taken", "expected"),
    [
        pytest.param("Juggernaut XL v9.safetensors", set(), "juggernaut-xl-v9", id="spaces-and-case"),
        pytest.param("sub/dir/model.ckpt", set(), "model", id="subfolder-and-suffix"),
        pytest.param("sd15.safetensors", {"sd15"}, "sd15-2", id="taken"),
        pytest.param("sd15.safetensors", {"sd15", "sd15-2"}, "sd15-3", id="taken-twice"),
        pytest.param("__.safetensors", set(), "model", id="nothing-left"),
        pytest.param("x" * 90 + ".safetensors", set(), "x" * 56, id="too-long"),
    ],
)
def test_new_model_id(name: str, taken: set[str], expected: str) -> None:
    assert new_model_id(name, taken) == expected
