"""Input images are really decoded (Pillow) before anything reaches ComfyUI (issue #8, input limits).

Through the Flask test client on a real PostgreSQL: /select shares the checks with /select-and-run,
so most cases only decide (backends as declared); one case runs img2img on the simulator and reads
the uploaded input back from it, byte for byte.
"""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from router.api.app import create_app
from router.backends.state import DeclaredBackendState
from router.catalog import Catalog
from router.db.database import Database
from router.settings import Settings
from router.simulator import start_simulator
from router.simulator.testing import fast_catalog

DECLARED = DeclaredBackendState()


def encoded(fmt: str, width: int = 64, height: int = 64, *, mode: str = "RGB", noise: bool = False) -> bytes:
    """An image made by Pillow; `noise` makes it incompressible, so cutting it loses pixel data."""
    if noise:
        rng = random.Random(7)
        img = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    else:
        img = Image.new(mode, (width, height), 128 if mode == "L" else (200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def declared_png(width: int, height: int, rows: int = 64) -> bytes:
    """A valid-looking greyscale PNG whose header declares width x height; only `rows` rows of zeros.

    A few kilobytes that would decode to width x height bytes: the decompression bomb shape.
    """
    stream = zlib.compressobj(9)
    row = b"\0" * (1 + width)  # filter byte + one byte per grey pixel
    idat = b"".join(stream.compress(row) for _ in range(min(rows, height))) + stream.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def cut_idat_png() -> bytes:
    """Chunks and CRCs intact (verify() passes) but the compressed pixel stream stops halfway."""
    width = height = 64
    raw = b"".join(b"\0" + bytes(range(width)) for _ in range(height))
    idat = zlib.compress(raw)[: len(zlib.compress(raw)) // 2]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.fixture
def app(catalog: Catalog, pg_db: Database) -> Flask:
    return create_app(
        Settings(migrate_on_start=False), catalog=catalog, database=pg_db, backend_state=DECLARED
    )


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def select(client: FlaskClient, **body: Any) -> Any:
    return client.post("/select", json={"urgency": "batch", **body})


ACCEPTED: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("png", lambda: {"purpose": "img2img", "images": [b64(encoded("PNG"))]}),
    ("jpeg", lambda: {"purpose": "img2img", "images": [b64(encoded("JPEG"))]}),
    ("webp", lambda: {"purpose": "img2img", "images": [b64(encoded("WEBP"))]}),
    ("data-url", lambda: {"purpose": "img2img", "images": ["data:image/png;base64," + b64(encoded("PNG"))]}),
    (
        "large-but-within-limits",
        lambda: {"purpose": "img2img", "images": [b64(encoded("PNG", 4096, 2048))]},
    ),
    (
        "inpaint-mask-same-size",
        lambda: {
            "purpose": "inpaint",
            "images": [b64(encoded("PNG", 96, 64))],
            "mask": b64(encoded("PNG", 96, 64, mode="L")),
        },
    ),
    (
        "face-swap-jpeg-face",
        lambda: {"purpose": "face-swap", "images": [b64(encoded("PNG"))], "face_image": b64(encoded("JPEG"))},
    ),
]


@pytest.mark.parametrize("body", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_real_images_are_accepted(client: FlaskClient, body: Callable[[], dict[str, Any]]) -> None:
    r = select(client, **body())
    assert r.status_code == 200, r.json
    assert r.json["model"]


REFUSED: list[tuple[str, Callable[[], dict[str, Any]], int, str, str, str]] = [
    (
        "garbage-bytes",
        lambda: {"purpose": "img2img", "images": [b64(b"this is not an image at all" * 40)]},
        422,
        "invalid_image",
        "images.0",
        "not an image: PNG, JPEG or WEBP expected",
    ),
    (
        "empty-image",
        lambda: {"purpose": "img2img", "images": [""]},
        422,
        "invalid_image",
        "images.0",
        "not an image",
    ),
    (
        "truncated-png",
        lambda: {"purpose": "img2img", "images": [b64(half(encoded("PNG", 128, 128, noise=True)))]},
        422,
        "invalid_image",
        "images.0",
        "truncated",
    ),
    (
        "png-pixel-stream-cut-verify-passes",
        lambda: {"purpose": "img2img", "images": [b64(cut_idat_png())]},
        422,
        "invalid_image",
        "images.0",
        "truncated",
    ),
    (
        "truncated-jpeg",
        lambda: {"purpose": "img2img", "images": [b64(half(encoded("JPEG", 128, 128, noise=True)))]},
        422,
        "invalid_image",
        "images.0",
        "truncated",
    ),
    (
        "gif",
        lambda: {"purpose": "img2img", "images": [b64(encoded("GIF"))]},
        422,
        "invalid_image",
        "images.0",
        "GIF is not accepted: PNG, JPEG or WEBP expected",
    ),
    (
        "bmp-as-second-image",
        lambda: {"purpose": "img2img", "images": [b64(encoded("PNG")), b64(encoded("BMP"))]},
        422,
        "invalid_image",
        "images.1",
        "BMP is not accepted",
    ),
    (
        "decompression-bomb-100k-square",
        lambda: {"purpose": "img2img", "images": [b64(declared_png(100_000, 100_000))]},
        422,
        "invalid_image",
        "images.0",
        "decompression bomb",
    ),
    (
        "side-over-the-limit",
        lambda: {"purpose": "img2img", "images": [b64(declared_png(12_000, 12_000))]},
        422,
        "invalid_image",
        "images.0",
        "12000x12000 is over the limit of 8192 px per side",
    ),
    (
        "pixels-over-the-limit",
        lambda: {"purpose": "img2img", "images": [b64(declared_png(5000, 5000))]},
        422,
        "invalid_image",
        "images.0",
        "5000x5000 (25000000 pixels) is over the limit of 16777216 pixels",
    ),
    (
        "mask-size-mismatch",
        lambda: {
            "purpose": "inpaint",
            "images": [b64(encoded("PNG", 96, 64))],
            "mask": b64(encoded("PNG", 64, 64, mode="L")),
        },
        422,
        "invalid_image",
        "mask",
        "the mask is 64x64 but images.0 is 96x64",
    ),
    (
        "broken-mask",
        lambda: {"purpose": "inpaint", "images": [b64(encoded("PNG"))], "mask": b64(b"\x89PNG\r\n\x1a\nxx")},
        422,
        "invalid_image",
        "mask",
        "not an image",
    ),
    (
        "broken-face",
        lambda: {"purpose": "face-swap", "images": [b64(encoded("PNG"))], "face_image": b64(encoded("GIF"))},
        422,
        "invalid_image",
        "face_image",
        "GIF is not accepted",
    ),
    (
        "6mb-image",
        lambda: {"purpose": "img2img", "images": [b64(b"\0" * (6 * 1024 * 1024))]},
        413,
        "image_too_large",
        "images.0",
        "6291456 bytes is over the limit of 5242880 bytes",
    ),
    (
        # Sizes are checked before any decoding: a broken first image does not hide an oversized second.
        "6mb-second-image-after-a-broken-one",
        lambda: {"purpose": "img2img", "images": [b64(b"junk"), b64(b"\0" * (6 * 1024 * 1024))]},
        413,
        "image_too_large",
        "images.1",
        "over the limit",
    ),
    (
        "five-images",
        lambda: {"purpose": "img2img", "images": [b64(encoded("PNG"))] * 5},
        422,
        "validation_error",
        "images",
        "5 images is over the limit of 4",
    ),
    (
        "not-base64",
        lambda: {"purpose": "img2img", "images": ["%%%not base64%%%"]},
        422,
        "validation_error",
        "images.0",
        "not valid base64",
    ),
]


# 12000x12000 is over Pillow's own warning threshold (not its error one): our limit refuses it.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("body", "status", "code", "field", "message"),
    [r[1:] for r in REFUSED],
    ids=[r[0] for r in REFUSED],
)
def test_bad_images_are_refused_naming_the_field(
    client: FlaskClient,
    body: Callable[[], dict[str, Any]],
    status: int,
    code: str,
    field: str,
    message: str,
) -> None:
    r = select(client, **body())
    assert r.status_code == status, r.json
    err = r.json["error"]
    assert err["code"] == code
    assert [d["field"] for d in err["details"]] == [field]
    assert message in err["message"], err["message"]
    assert err["message"].startswith(f"{field}: ")


def test_limits_come_from_the_catalog(catalog: Catalog, pg_db: Database) -> None:
    """A catalog that accepts BMP and caps sides at 1024 px changes both answers."""
    limits = catalog.limits.model_copy(update={"image_formats": ("PNG", "BMP"), "max_image_side_px": 1024})
    app = create_app(
        Settings(migrate_on_start=False),
        catalog=catalog.model_copy(update={"limits": limits}),
        database=pg_db,
        backend_state=DECLARED,
    )
    client = app.test_client()
    assert select(client, purpose="img2img", images=[b64(encoded("BMP"))]).status_code == 200
    jpeg = select(client, purpose="img2img", images=[b64(encoded("JPEG"))])
    assert jpeg.status_code == 422
    assert "JPEG is not accepted: PNG or BMP expected" in jpeg.json["error"]["message"]
    wide = select(client, purpose="img2img", images=[b64(encoded("PNG", 1032, 64))])
    assert wide.status_code == 422
    assert "1032x64 is over the limit of 1024 px per side" in wide.json["error"]["message"]


def test_a_jpeg_reaches_comfyui_byte_for_byte_and_a_broken_one_never_does(
    catalog: Catalog, pg_db: Database, tmp_path: Any
) -> None:
    fast = fast_catalog(catalog)
    sim = start_simulator(fast, gpu="a100", port=0)
    try:
        backends = tuple(b.model_copy(update={"url": sim.url}) for b in fast.backends[:1])
        app = create_app(
            Settings(migrate_on_start=False, data_dir=tmp_path),
            catalog=fast.model_copy(update={"backends": backends}),
            database=pg_db,
        )
        jpeg = encoded("JPEG", 512, 512, noise=True)
        job = (
            app.test_client()
            .post(
                "/select-and-run",
                json={
                    "purpose": "img2img",
                    "urgency": "batch",
                    "prompt": "as a watercolour",
                    "images": [b64(jpeg)],
                    "width": 512,
                    "height": 512,
                },
            )
            .json
        )
        assert job["status"] == "succeeded", job
        uploaded = requests.get(
            f"{sim.url}/view", params={"filename": f"{job['id']}-image.png", "type": "input"}, timeout=10
        )
        assert uploaded.status_code == 200
        assert uploaded.content == jpeg
        broken = app.test_client().post(
            "/select-and-run",
            json={"purpose": "img2img", "urgency": "batch", "images": [b64(half(jpeg))]},
        )
        assert broken.status_code == 422, broken.json
        assert broken.json["error"]["code"] == "invalid_image"
        history = requests.get(f"{sim.url}/history", timeout=10).json()
        assert len(history) == 1  # only the first job was ever submitted
    finally:
        sim.stop()
