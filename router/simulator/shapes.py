"""What flows along the links, as far as the simulation needs it: sizes, batch and a colour recipe.

Inference is static (from the inputs alone), so the run plan knows every sampler's size before the
first node runs, and an output node knows what PNG to draw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from router.simulator.graph import is_link, node_inputs

JsonDict = dict[str, Any]
PixelKind = Literal["IMAGE", "LATENT", "MASK"]
FillKind = Literal["solid", "gradient", "file"]

DEFAULT_SIZE_PX = 512
LATENT_MULTIPLE_PX = 8
SAMPLERS: frozenset[str] = frozenset({"KSampler", "KSamplerAdvanced"})


@dataclass(frozen=True)
class Fill:
    """How to draw an image: a solid colour, a seeded gradient, or an uploaded file resized."""

    kind: FillKind
    rgb: tuple[int, int, int] = (0, 0, 0)
    seed: int = 0
    path: str = ""


@dataclass(frozen=True)
class Pixels:
    kind: PixelKind
    width: int
    height: int
    batch: int
    fill: Fill


@dataclass(frozen=True)
class SamplerWork:
    steps: int
    width: int
    height: int
    batch: int


Outputs = tuple[Any, ...]
ImageSize = Callable[[str], tuple[int, int] | None]


def color_to_rgb(color: int) -> tuple[int, int, int]:
    return ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _floor_multiple(px: int) -> int:
    return max(LATENT_MULTIPLE_PX, px // LATENT_MULTIPLE_PX * LATENT_MULTIPLE_PX)


class ShapeInference:
    """Outputs per node, computed on demand and memoised."""

    def __init__(
        self, prompt: Mapping[str, Any], output_counts: Mapping[str, int], image_size: ImageSize
    ) -> None:
        self._prompt = prompt
        self._output_counts = output_counts
        self._image_size = image_size
        self._memo: dict[str, Outputs] = {}
        self._visiting: set[str] = set()

    def outputs(self, node_id: str) -> Outputs:
        if node_id in self._memo:
            return self._memo[node_id]
        if node_id in self._visiting or node_id not in self._prompt:
            return ()
        self._visiting.add(node_id)
        try:
            result = self._infer(node_id)
        finally:
            self._visiting.discard(node_id)
        self._memo[node_id] = result
        return result

    def inputs(self, node_id: str) -> dict[str, Any]:
        return node_inputs(self._prompt, node_id)

    def value(self, node_id: str, name: str) -> Any:
        """An input's value: the literal, or what the linked node outputs (None if unknown)."""
        value: Any = node_inputs(self._prompt, node_id).get(name)
        if not is_link(value):
            return value
        outputs = self.outputs(str(value[0]))
        socket = int(value[1])
        return outputs[socket] if 0 <= socket < len(outputs) else None

    def pixels(self, node_id: str, name: str) -> Pixels | None:
        value = self.value(node_id, name)
        return value if isinstance(value, Pixels) else None

    def sampler_work(self, node_id: str) -> SamplerWork:
        inputs = node_inputs(self._prompt, node_id)
        latent = self.pixels(node_id, "latent_image") or _default_pixels("LATENT")
        steps = _int(inputs.get("steps"), 1)
        if self._prompt[node_id].get("class_type") == "KSamplerAdvanced":
            start = _int(inputs.get("start_at_step"), 0)
            end = _int(inputs.get("end_at_step"), steps)
            steps = max(0, min(steps, end) - start)
        return SamplerWork(steps, latent.width, latent.height, latent.batch)

    def _infer(self, node_id: str) -> Outputs:
        class_type = self._prompt[node_id].get("class_type", "")
        handler = _HANDLERS.get(class_type)
        result = handler(self, node_id) if handler is not None else ()
        count = self._output_counts.get(class_type, len(result))
        return tuple(result[i] if i < len(result) else None for i in range(count))


def _default_pixels(kind: PixelKind) -> Pixels:
    return Pixels(kind, DEFAULT_SIZE_PX, DEFAULT_SIZE_PX, 1, Fill("solid", (128, 128, 128)))


def _empty_image(inf: ShapeInference, node_id: str) -> Outputs:
    inputs = inf.inputs(node_id)
    fill = Fill("solid", color_to_rgb(_int(inputs.get("color"), 0)))
    size = (_int(inputs.get("width"), DEFAULT_SIZE_PX), _int(inputs.get("height"), DEFAULT_SIZE_PX))
    return (Pixels("IMAGE", size[0], size[1], _int(inputs.get("batch_size"), 1), fill),)


def _empty_latent(inf: ShapeInference, node_id: str) -> Outputs:
    inputs = inf.inputs(node_id)
    size = (_int(inputs.get("width"), DEFAULT_SIZE_PX), _int(inputs.get("height"), DEFAULT_SIZE_PX))
    fill = Fill("solid", (128, 128, 128))
    return (Pixels("LATENT", size[0], size[1], _int(inputs.get("batch_size"), 1), fill),)


def _load_image(inf: ShapeInference, node_id: str) -> Outputs:
    name = str(inf.inputs(node_id).get("image", ""))
    size = inf._image_size(name) or (DEFAULT_SIZE_PX, DEFAULT_SIZE_PX)
    image = Pixels("IMAGE", size[0], size[1], 1, Fill("file", path=name))
    return (image, replace(image, kind="MASK"))


def _load_image_mask(inf: ShapeInference, node_id: str) -> Outputs:
    return (_load_image(inf, node_id)[1],)


def _image_scale(inf: ShapeInference, node_id: str) -> Outputs:
    source = inf.pixels(node_id, "image") or _default_pixels("IMAGE")
    inputs = inf.inputs(node_id)
    width, height = _int(inputs.get("width"), 0), _int(inputs.get("height"), 0)
    if width == 0 and height == 0:
        width, height = source.width, source.height
    elif width == 0:
        width = max(1, round(source.width * height / source.height))
    elif height == 0:
        height = max(1, round(source.height * width / source.width))
    return (replace(source, width=width, height=height),)


def _passthrough(name: str, kind: PixelKind) -> Callable[[ShapeInference, str], Outputs]:
    def handler(inf: ShapeInference, node_id: str) -> Outputs:
        return (inf.pixels(node_id, name) or _default_pixels(kind),)

    return handler


def _encode(inf: ShapeInference, node_id: str) -> Outputs:
    image = inf.pixels(node_id, "pixels") or _default_pixels("IMAGE")
    return (
        Pixels(
            "LATENT", _floor_multiple(image.width), _floor_multiple(image.height), image.batch, image.fill
        ),
    )


def _repeat_latent(inf: ShapeInference, node_id: str) -> Outputs:
    latent = inf.pixels(node_id, "samples") or _default_pixels("LATENT")
    return (replace(latent, batch=latent.batch * max(1, _int(inf.inputs(node_id).get("amount"), 1))),)


def _sampler(inf: ShapeInference, node_id: str) -> Outputs:
    latent = inf.pixels(node_id, "latent_image") or _default_pixels("LATENT")
    inputs = inf.inputs(node_id)
    seed = _int(inputs.get("seed", inputs.get("noise_seed")), 0)
    return (replace(latent, fill=Fill("gradient", seed=seed)),)


def _decode(inf: ShapeInference, node_id: str) -> Outputs:
    latent = inf.pixels(node_id, "samples") or _default_pixels("LATENT")
    return (replace(latent, kind="IMAGE"),)


def _face_swap(inf: ShapeInference, node_id: str) -> Outputs:
    image = inf.pixels(node_id, "input_image") or _default_pixels("IMAGE")
    return (image, None, image)


_HANDLERS: dict[str, Callable[[ShapeInference, str], Outputs]] = {
    "EmptyImage": _empty_image,
    "EmptyLatentImage": _empty_latent,
    "EmptySD3LatentImage": _empty_latent,
    "LoadImage": _load_image,
    "LoadImageMask": _load_image_mask,
    "ImageScale": _image_scale,
    "ImageBlur": _passthrough("image", "IMAGE"),
    "VAEEncode": _encode,
    "VAEEncodeForInpaint": _encode,
    "SetLatentNoiseMask": _passthrough("samples", "LATENT"),
    "RepeatLatentBatch": _repeat_latent,
    "KSampler": _sampler,
    "KSamplerAdvanced": _sampler,
    "VAEDecode": _decode,
    "ReActorFaceSwap": _face_swap,
    "ReActorRestoreFace": _passthrough("image", "IMAGE"),
}
