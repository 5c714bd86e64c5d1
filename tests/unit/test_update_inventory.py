"""Inventory of model files: safetensors headers only, never weights, never pickles."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest

from router.catalog.update.inventory import Inventory, detect_family, query_comfyui, scan_models_dir
from router.catalog.update.safetensors_header import UnreadableHeaderError, read_header
from tests.support.safetensors_files import FAMILY_KEYS, comfyui_layout, write_family_file, write_safetensors


def test_header_gives_parameters_dominant_dtype_bytes_and_metadata(tmp_path: Path) -> None:
    path = write_safetensors(
        tmp_path / "m.safetensors",
        {"a": ("F8_E4M3", (100, 10)), "b": ("F32", (10,)), "c": ("F8_E4M3", (5, 2, 3))},
        metadata={"modelspec.title": "test"},
    )
    header = read_header(path)
    assert header.parameters == 1000 + 10 + 30
    assert header.dominant_dtype == "F8_E4M3"
    assert header.weight_bytes == 1000 + 40 + 30
    assert header.metadata == {"modelspec.title": "test"}


@pytest.mark.parametrize("family", ["flux1", "sdxl", "sd15", "qwen-image"])
def test_family_detected_from_tensor_names(family: str) -> None:
    assert detect_family(FAMILY_KEYS[family]) == family


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param(["double_blocks.0.x"], None, id="flux-double-blocks-alone-is-not-enough"),
        pytest.param(
            ["model.diffusion_model.double_blocks.0.x", "model.diffusion_model.single_blocks.0.x"],
            "flux1",
            id="flux-inside-a-full-checkpoint",
        ),
        pytest.param(["label_emb.0.0.weight", "input_blocks.0.0.weight"], "sdxl", id="sdxl-unet-only"),
        pytest.param(
            ["cond_stage_model.transformer.x", "conditioner.embedders.1.model.x"], "sdxl", id="sdxl-over-sd15"
        ),
        pytest.param(["transformer_blocks.0.attn.to_q.weight"], None, id="transformer-without-img-txt-mod"),
        pytest.param(FAMILY_KEYS["unknown"], None, id="unknown"),
    ],
)
def test_family_detection_edge_cases(keys: list[str], expected: str | None) -> None:
    assert detect_family(keys) == expected


def _corrupt(path: Path, kind: str) -> None:
    good = b'{"w": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}}'
    content = {
        "empty": b"",
        "shorter-than-length-field": b"\x01\x02\x03",
        "truncated-header": struct.pack("<Q", 1000) + good[:20],
        "bad-json": struct.pack("<Q", 12) + b"{not json!!}" + b"\0" * 8,
        "absurd-length": struct.pack("<Q", 2**62) + good,
        "zero-length": struct.pack("<Q", 0) + good,
        "header-is-a-list": struct.pack("<Q", 2) + b"[]",
        "negative-shape": struct.pack("<Q", 44) + b'{"w": {"dtype": "F16", "shape": [-1, 2]}}   ',
        "not-utf8": struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc",
    }[kind]
    path.write_bytes(content)


CORRUPTIONS = [
    "empty",
    "shorter-than-length-field",
    "truncated-header",
    "bad-json",
    "absurd-length",
    "zero-length",
    "header-is-a-list",
    "negative-shape",
    "not-utf8",
]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupted_header_is_reported_not_raised_by_the_scan(tmp_path: Path, kind: str) -> None:
    root = comfyui_layout(tmp_path / "models")
    _corrupt(root / "checkpoints" / "broken.safetensors", kind)
    write_family_file(root / "checkpoints" / "good.safetensors", "sdxl")
    with pytest.raises(UnreadableHeaderError):
        read_header(root / "checkpoints" / "broken.safetensors")

    inv = scan_models_dir(root)

    broken = inv.files[("checkpoints", "broken.safetensors")]
    assert broken.unreadable
    assert broken.family is None
    assert any("checkpoints/broken.safetensors" in p for p in inv.problems)
    assert inv.files[("checkpoints", "good.safetensors")].family == "sdxl"


def _payload(marker: Path) -> bytes:
    """A pickle that creates `marker` when loaded (Path.touch is called by the unpickler)."""

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[Path]]:
            return (Path.touch, (marker,))

    return pickle.dumps(Evil())


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickle_files_are_listed_but_never_loaded(tmp_path: Path, suffix: str) -> None:
    proof = tmp_path / "proof-the-payload-works"
    pickle.loads(_payload(proof))  # the test's own payload: proves it is live
    assert proof.exists()

    marker = tmp_path / "pwned"
    root = comfyui_layout(tmp_path / "models")
    (root / "checkpoints" / f"evil{suffix}").write_bytes(_payload(marker))

    inv = scan_models_dir(root)

    listed = inv.files[("checkpoints", f"evil{suffix}")]
    assert listed.size_bytes == (root / "checkpoints" / f"evil{suffix}").stat().st_size
    assert listed.parameters is None
    assert listed.family is None
    assert not marker.exists()


def test_scan_maps_folder_aliases_and_subfolders(tmp_path: Path) -> None:
    root = comfyui_layout(tmp_path / "models")
    write_family_file(root / "unet" / "flux" / "a.safetensors", "flux1")
    write_safetensors(root / "clip" / "t5.safetensors", {"w": ("F16", (2,))})
    (root / "checkpoints" / "notes.txt").write_text("not a model")

    inv = scan_models_dir(root)

    assert inv.files[("diffusion_models", "flux/a.safetensors")].family == "flux1"
    assert inv.has("text_encoders", "t5.safetensors")
    assert not inv.has("checkpoints", "notes.txt")
    assert {"checkpoints", "diffusion_models", "text_encoders", "vae"} <= inv.scanned_folders
    assert [f.name for f in inv.main_models()] == ["flux/a.safetensors"]


def test_vram_estimate_is_weights_times_overhead(tmp_path: Path) -> None:
    root = comfyui_layout(tmp_path / "models")
    write_safetensors(
        root / "diffusion_models" / "big.safetensors",
        {"double_blocks.0.w": ("BF16", (1024, 1024)), "single_blocks.0.w": ("BF16", (1024, 1024))},
    )
    f = scan_models_dir(root).files[("diffusion_models", "big.safetensors")]
    assert f.weight_bytes == 4 * 1024 * 1024
    assert f.vram_estimate_mb == 6  # 4 MiB x 1.25, rounded up


def test_comfyui_folders_and_loader_choices_in_both_formats() -> None:
    folders = {"checkpoints": ["a.safetensors"], "vae": ["ae.safetensors"]}

    def list_folder(folder: str) -> list[str]:
        if folder not in folders:
            raise LookupError(f"404 /models/{folder}")
        return folders[folder]

    info = {
        "UNETLoader": {"input": {"required": {"unet_name": [["flux.safetensors"], {}]}}},
        "VAELoader": {"input": {"required": {"vae_name": ["COMBO", {"options": ["other_vae.safetensors"]}]}}},
    }
    inv = query_comfyui(list_folder, lambda: info, Inventory())

    assert inv.scanned_folders == {"checkpoints", "vae"}
    assert inv.has("checkpoints", "a.safetensors")
    assert inv.has("diffusion_models", "flux.safetensors")
    assert inv.has("vae", "other_vae.safetensors")
    assert all(f.sources == {"comfyui"} for f in inv.files.values())
    assert any("/models/loras" in p for p in inv.problems)
