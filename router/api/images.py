"""Input images (images[], mask, face_image) really decoded with Pillow before anything reaches ComfyUI.

Cheap checks run first for every image (count, base64, byte size: 413), then each image is opened,
checked from its header alone (format, width, height, pixel count) and only then decoded: a small
file that declares a huge canvas (a decompression bomb) is refused before any pixel is allocated.
`verify()` checks the container (PNG chunk CRCs...) but not the pixel data, so a re-opened image
is also fully `load()`ed: that is what catches truncated or corrupt pixel streams.

The pixel limit is ours, per call, from the catalog's InputLimits; Pillow's module-wide
`MAX_IMAGE_PIXELS` is left alone (changing a global per request is not thread-safe under gunicorn's
threads) and stays a second line of defence whose DecompressionBombError is caught like any other.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from router.api.errors import ApiError, field_error
from router.catalog.schema import InputLimits

# How much bigger than the largest output an input may be, in pixels (an upscale or img2img
# source is often larger than what is rendered; 4x the output's pixels is a 2x larger side).
INPUT_PIXELS_PER_OUTPUT_PIXEL = 4


@dataclass(frozen=True)
class InputImage:
    """One decoded input: the bytes as sent (uploaded to ComfyUI unchanged) and what Pillow read."""

    field: str  # "images.0", "mask", "face_image"
    data: bytes
    format: str  # Pillow's name: "PNG", "JPEG", "WEBP"...
    width: int
    height: int

    @property
    def size_text(self) -> str:
        return f"{self.width}x{self.height}"


def check_input_images(
    images: Sequence[str], face_image: str | None, mask: str | None, limits: InputLimits
) -> list[InputImage]:
    """Every input image decoded and checked, in request order. Raises ApiError (413 or 422)."""
    if len(images) > limits.max_images:
        raise field_error("images", f"{len(images)} images is over the limit of {limits.max_images}")
    named = [(f"images.{i}", b64) for i, b64 in enumerate(images)]
    named += [(name, b64) for name, b64 in (("face_image", face_image), ("mask", mask)) if b64 is not None]
    # All sizes before any decoding: a request with one oversized image is a 413 whatever the others hold.
    raw = [(name, image_bytes(name, b64, limits)) for name, b64 in named]
    decoded = [decode_image(name, data, limits) for name, data in raw]
    _check_mask_matches_image(decoded)
    return decoded


def image_bytes(field: str, b64: str, limits: InputLimits) -> bytes:
    """The decoded base64 (a `data:` URL prefix allowed); 422 if not base64, 413 if over the byte limit."""
    text = b64.split(",", 1)[1] if b64.startswith("data:") else b64
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise field_error(field, "not valid base64") from exc
    if len(data) > limits.max_image_bytes:
        raise ApiError(
            413,
            "image_too_large",
            f"{field}: {len(data)} bytes is over the limit of {limits.max_image_bytes} bytes",
            [{"field": field, "message": "too large"}],
        )
    return data


def decode_image(field: str, data: bytes, limits: InputLimits) -> InputImage:
    """Open, check the header, verify, then decode every pixel. Raises ApiError 422 `invalid_image`."""
    with _open(field, data, limits) as img:
        fmt, (width, height) = str(img.format), img.size
        _check_dimensions(field, width, height, limits)
        _run_decoder(field, fmt, img.verify)
    with _open(field, data, limits) as img:
        _run_decoder(field, fmt, img.load)
    return InputImage(field=field, data=data, format=fmt, width=width, height=height)


def max_input_pixels(limits: InputLimits) -> int:
    return limits.max_pixels * INPUT_PIXELS_PER_OUTPUT_PIXEL


def invalid_image(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_image", f"{field}: {message}", [{"field": field, "message": message}])


def _open(field: str, data: bytes, limits: InputLimits) -> Image.Image:
    formats: list[str] = list(limits.image_formats)
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise invalid_image(field, f"declares too many pixels (decompression bomb): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise invalid_image(field, _unaccepted_message(data, limits)) from exc
    except Exception as exc:  # Pillow's plugins raise many types on hostile headers: all are bad input
        raise invalid_image(field, f"corrupt or truncated image: {exc}") from exc


def _unaccepted_message(data: bytes, limits: InputLimits) -> str:
    """Names the format when Pillow knows it but the catalog does not accept it (GIF, BMP...)."""
    expected = _expected(limits)
    try:
        with Image.open(io.BytesIO(data)) as other:
            # Only the header is read (no load), so this costs nothing even for a hostile file.
            return f"{other.format} is not accepted: {expected} expected"
    except Exception:  # not an image at all, or a broken one: the same answer
        return f"not an image: {expected} expected"


def _expected(limits: InputLimits) -> str:
    names = list(limits.image_formats)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _check_dimensions(field: str, width: int, height: int, limits: InputLimits) -> None:
    if max(width, height) > limits.max_image_side_px:
        raise invalid_image(
            field, f"{width}x{height} is over the limit of {limits.max_image_side_px} px per side"
        )
    pixels, limit = width * height, max_input_pixels(limits)
    if pixels > limit:
        raise invalid_image(field, f"{width}x{height} ({pixels} pixels) is over the limit of {limit} pixels")


def _run_decoder(field: str, fmt: str, step: Callable[[], object]) -> None:
    try:
        step()
    except Image.DecompressionBombError as exc:
        raise invalid_image(field, f"declares too many pixels (decompression bomb): {exc}") from exc
    except Exception as exc:  # any decoder failure on untrusted bytes is the sender's broken file
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise invalid_image(field, f"truncated: the {fmt} data ends early ({text})") from exc
        raise invalid_image(field, f"corrupt {fmt} data: {text}") from exc


def _check_mask_matches_image(decoded: Sequence[InputImage]) -> None:
    by_field = {img.field: img for img in decoded}
    mask, image = by_field.get("mask"), by_field.get("images.0")
    if mask is None or image is None or (mask.width, mask.height) == (image.width, image.height):
        return
    raise invalid_image(
        "mask",
        f"the mask is {mask.size_text} but images.0 is {image.size_text}; "
        "an inpaint mask must have the size of the image it masks",
    )
