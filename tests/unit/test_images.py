"""router.api.images: whatever bytes arrive, the answer is a decoded image or a 422 naming the field."""

from __future__ import annotations

import base64
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from router.api.errors import ApiError
from router.api.images import InputImage, check_input_images, decode_image, max_input_pixels
from router.catalog.schema import InputLimits

LIMITS = InputLimits()


def encoded(fmt: str, width: int = 48, height: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


VALID = {fmt: encoded(fmt) for fmt in ("PNG", "JPEG", "WEBP")}


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid image with bytes flipped, cut or spliced in."""
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        match draw(st.sampled_from(["flip", "cut", "insert"])):
            case "flip":
                data[i] ^= draw(st.integers(1, 255))
            case "cut":
                del data[i:]
            case "insert":
                data[i:i] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048), damaged()))
def test_any_bytes_give_an_image_or_a_422_invalid_image(data: bytes) -> None:
    outcome: InputImage | ApiError
    try:
        outcome = decode_image("images.0", data, LIMITS)
    except ApiError as exc:  # anything else (a Pillow error leaking out) fails the test
        outcome = exc
    if isinstance(outcome, ApiError):
        assert (outcome.status, outcome.code) == (422, "invalid_image")
        message = outcome.message.removeprefix("images.0: ")
        assert message != outcome.message
        assert outcome.details == [{"field": "images.0", "message": message}]
    else:
        assert outcome.data == data  # the bytes as sent, never re-encoded
        assert outcome.format in LIMITS.image_formats
        assert 0 < outcome.width <= LIMITS.max_image_side_px
        assert 0 < outcome.height <= LIMITS.max_image_side_px


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_valid_images_report_format_and_size(fmt: str) -> None:
    img = decode_image("face_image", VALID[fmt], LIMITS)
    assert (img.field, img.format, img.width, img.height) == ("face_image", fmt, 48, 32)


@pytest.mark.parametrize(
    ("width", "height", "refused"),
    [(8192, 64, False), (8193, 64, True), (64, 8193, True), (4096, 4096, False), (4104, 4096, True)],
    ids=["side-at-limit", "width-over", "height-over", "pixels-at-limit", "pixels-over"],
)
def test_dimension_limits_are_inclusive(width: int, height: int, refused: bool) -> None:
    assert max_input_pixels(LIMITS) == 4096 * 4096
    data = encoded("PNG", width, height)
    if refused:
        with pytest.raises(ApiError, match=f"{width}x{height}"):
            decode_image("images.0", data, LIMITS)
    else:
        assert decode_image("images.0", data, LIMITS).width == width


def test_results_come_back_in_request_order_with_field_names() -> None:
    b64 = {fmt: base64.b64encode(data).decode() for fmt, data in VALID.items()}
    out = check_input_images([b64["PNG"], b64["WEBP"]], b64["JPEG"], None, LIMITS)
    assert [(i.field, i.format) for i in out] == [
        ("images.0", "PNG"),
        ("images.1", "WEBP"),
        ("face_image", "JPEG"),
    ]
