"""API keys: `Authorization: Bearer <key>` on every route but health, readiness and metrics.

Keys come from COMFY_ROUTER_API_KEYS (comma-separated). Each entry is a key, or `sha256:<hex>`
of a key so that the environment need not hold the key itself. Only SHA-256 digests are kept
in memory and compared in constant time; no key is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, request

from router.api.errors import ApiError

OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def digests(spec: str | None) -> tuple[bytes, ...]:
    out = []
    for raw in (spec or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith("sha256:"):
            out.append(bytes.fromhex(entry.removeprefix("sha256:")))
        else:
            out.append(hashlib.sha256(entry.encode()).digest())
    return tuple(out)


def require_api_key(app: Flask, allowed: tuple[bytes, ...]) -> None:
    if not allowed:
        return  # no keys configured: open, as `make run` is

    @app.before_request
    def _check() -> None:
        if request.path in OPEN_ROUTES:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "unauthorized", "send `Authorization: Bearer <API key>`")
        presented = hashlib.sha256(key.strip().encode()).digest()
        # Compare against every key so the time taken does not say which one came close.
        matched = False
        for digest in allowed:
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            raise ApiError(401, "unauthorized", "the API key is not valid")
