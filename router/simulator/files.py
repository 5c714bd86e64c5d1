"""ComfyUI's input, output and temp directories (in a private temp dir) and the PNGs the simulator draws.

Outputs are real PNGs of the rendered size: a solid colour (EmptyImage), a gradient derived from the
sampler's seed, or an uploaded image resized. File naming follows ComfyUI (`prefix_00001_.png`, the
counter continuing from the files already there), and so do the upload and `/view` path rules.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from router.simulator.shapes import Fill, Pixels

JsonDict = dict[str, Any]
DIR_TYPES: tuple[str, ...] = ("input", "output", "temp")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
_ANNOTATION = re.compile(r"^(?P<name>.*) \[(?P<type>input|output|temp)\]$")


class SavePathError(Exception):
    """A filename prefix that points outside the output folder (ComfyUI refuses it too)."""


@dataclass(frozen=True)
class SavedImage:
    filename: str
    subfolder: str
    type: str

    def as_ui(self) -> JsonDict:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


class FileStore:
    """The three ComfyUI directories under one private temp dir, removed by `close()`."""

    def __init__(self, root: Path | None = None) -> None:
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="comfy-sim-")) if root is None else root
        self.dirs = {kind: self.root / kind for kind in DIR_TYPES}
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        # A stock ComfyUI ships this file, so LoadImage's choice list is never empty.
        example = self.dirs["input"] / "example.png"
        if not example.exists():
            Image.new("RGB", (64, 64), (200, 200, 200)).save(example)

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def list_input_images(self) -> list[str]:
        base = self.dirs["input"]
        names = [
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        ]
        return sorted(names)

    def input_path(self, name: str) -> Path | None:
        """The file a LoadImage `image` value names (`sub/x.png`, or annotated `x.png [output]`)."""
        kind = "input"
        match = _ANNOTATION.match(name)
        if match:
            name, kind = match["name"], match["type"]
        base = self.dirs[kind].resolve()
        path = (base / name).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return None
        return path

    def image_exists(self, name: str) -> bool:
        return self.input_path(name) is not None

    def image_size(self, name: str) -> tuple[int, int] | None:
        path = self.input_path(name)
        if path is None:
            return None
        try:
            with Image.open(path) as img:
                return img.size
        except OSError:
            return None

    def view_path(self, filename: str, kind: str, subfolder: str | None) -> tuple[int, Path | None]:
        """(HTTP status, file) with ComfyUI's rules: 400 for bad names, 403 outside the dir, 404 missing."""
        match = _ANNOTATION.match(filename)
        if match:
            filename, kind = match["name"], match["type"]
        if not filename or filename.startswith("/") or ".." in filename:
            return 400, None
        if kind not in self.dirs:
            return 400, None
        base = self.dirs[kind].resolve()
        folder = base
        if subfolder is not None:
            folder = (base / subfolder).resolve()
            if not folder.is_relative_to(base):
                return 403, None
        path = folder / Path(filename).name
        return (200, path) if path.is_file() else (404, None)

    def save_upload(
        self, data: bytes, filename: str, subfolder: str, kind: str | None, overwrite: bool
    ) -> SavedImage | None:
        """Store an upload; a name clash gets ` (1)` unless the bytes are identical. None: bad path."""
        kind = kind if kind in self.dirs else "input"
        base = self.dirs[kind].resolve()
        folder = (base / subfolder).resolve() if subfolder else base
        if not folder.is_relative_to(base) or not (folder / filename).resolve().is_relative_to(base):
            return None
        folder.mkdir(parents=True, exist_ok=True)
        stem, suffix = Path(filename).stem, Path(filename).suffix
        path = folder / filename
        counter = 1
        while not overwrite and path.exists():
            if path.read_bytes() == data:
                return SavedImage(path.name, subfolder, kind)
            path = folder / f"{stem} ({counter}){suffix}"
            counter += 1
        path.write_bytes(data)
        return SavedImage(path.name, subfolder, kind)

    def save_images(
        self, images: list[Image.Image], prefix: str, kind: str, metadata: JsonDict | None = None
    ) -> list[SavedImage]:
        """Save as `prefix_NNNNN_.png`, continuing the counter of the files already in the folder."""
        if images:
            prefix = prefix.replace("%width%", str(images[0].width)).replace(
                "%height%", str(images[0].height)
            )
        base = self.dirs[kind].resolve()
        sub, _, name = prefix.replace("\\", "/").rpartition("/")
        folder = (base / sub).resolve()
        if not folder.is_relative_to(base):
            raise SavePathError(
                "**** ERROR: Saving image outside the output folder is not allowed."
                f"\n full_output_folder: {folder}\n         output_dir: {base}"
            )
        folder.mkdir(parents=True, exist_ok=True)
        counter = next_counter(folder, name)
        info = _png_info(metadata)
        saved: list[SavedImage] = []
        for image in images:
            filename = f"{name}_{counter:05}_.png"
            image.save(folder / filename, pnginfo=info, compress_level=4 if kind == "output" else 1)
            saved.append(SavedImage(filename, sub, kind))
            counter += 1
        return saved


def next_counter(folder: Path, name: str) -> int:
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)_")
    counters = [int(m[1]) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return max(counters, default=0) + 1


def temp_prefix(rng: random.Random) -> str:
    """PreviewImage's `ComfyUI_temp_xxxxx` prefix."""
    return "ComfyUI_temp_" + "".join(rng.choice(string.ascii_lowercase) for _ in range(5))


def _png_info(metadata: JsonDict | None) -> PngImagePlugin.PngInfo | None:
    if not metadata:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(key, json.dumps(value))
    return info


def render(pixels: Pixels, index: int, store: FileStore) -> Image.Image:
    """One image of a batch: cheap to draw, deterministic, and of the exact size."""
    size = (max(1, pixels.width), max(1, pixels.height))
    fill = pixels.fill
    if fill.kind == "file":
        source = store.input_path(fill.path)
        if source is not None:
            with Image.open(source) as img:
                return img.convert("RGB").resize(size)
        fill = Fill("solid", (128, 128, 128))
    if fill.kind == "solid":
        return Image.new("RGB", size, fill.rgb)
    return _gradient(size, fill.seed + index)


def _gradient(size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    start = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    end = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    mask = Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270))).resize(size)
    return Image.composite(end, start, mask)
