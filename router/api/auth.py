"""API keys: `Authorization: Bearer <key>` on every route but health, readiness and metrics.

Keys come from COMFY_ROUTER_API_KEYS (comma-separated entries) and from the `api_keys` table
(`comfy-router keys add|list|revoke`). An entry of COMFY_ROUTER_API_KEYS is

    [SCOPES@]CLIENT:SECRET   a key bound to CLIENT, e.g. `acme:k3y`, `admin@ops:sha256:<hex>`
    SECRET                   an unbound key (any client_id in the body), scope `client`

where SECRET is the key itself or `sha256:<64 hex digits>` (its digest, so the environment need
not hold the key), SCOPES is `client` (default) or `admin` (also `client+admin`), and CLIENT is
1-128 of `A-Z a-z 0-9 . _ -`. Write a key holding `:` or `@` with its client (`acme:a:b`).

Only SHA-256 digests are kept; environment keys are compared in constant time against every
entry, table keys are looked up by digest (cached for TTL_S, so a revocation takes up to TTL_S).
Auth is on when an environment key is configured or the table held an unrevoked key at its last
check. `/admin/*` needs the `admin` scope (403). A key bound to a client acts only as that client
(403 for another `client_id`), unless it also has the `admin` scope. No key is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, g, has_request_context, request

from router.api.errors import ApiError
from router.db.database import Database
from router.limits.api_keys import any_active, find_active

log = logging.getLogger(__name__)

OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
SCOPES = frozenset({"client", "admin"})
TTL_S = 5.0
_HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
_BOUND = re.compile(r"(?:(?P<scopes>[a-z]+(?:\+[a-z]+)*)@)?(?P<client>[A-Za-z0-9._-]{1,128}):(?P<secret>.+)")
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class KeyEntry:
    digest: bytes
    client_id: str | None  # None: unbound (the body's client_id is taken as given)
    scopes: frozenset[str]


@dataclass(frozen=True)
class Principal:
    client_id: str | None
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


def parse_keys(spec: str | None) -> tuple[KeyEntry, ...]:
    """COMFY_ROUTER_API_KEYS -> entries. A ValueError names the entry by position, never its text."""
    out = []
    for n, raw in enumerate((spec or "").split(","), start=1):
        entry = raw.strip()
        if entry:
            out.append(_parse_entry(entry, n))
    return tuple(out)


def _parse_entry(entry: str, n: int) -> KeyEntry:
    if _HASHED.fullmatch(entry):
        return KeyEntry(bytes.fromhex(entry[7:]), None, frozenset({"client"}))
    if entry.startswith("sha256:"):
        raise ValueError(f"COMFY_ROUTER_API_KEYS entry {n}: sha256: must be followed by 64 hex digits")
    m = _BOUND.fullmatch(entry)
    if m is None:
        if ":" in entry:
            raise ValueError(
                f"COMFY_ROUTER_API_KEYS entry {n}: write a key containing ':' as CLIENT:KEY "
                "(CLIENT: 1-128 of A-Z a-z 0-9 . _ -)"
            )
        return KeyEntry(hashlib.sha256(entry.encode()).digest(), None, frozenset({"client"}))
    scopes = frozenset((m["scopes"] or "client").split("+"))
    if not scopes <= SCOPES:
        raise ValueError(
            f"COMFY_ROUTER_API_KEYS entry {n}: unknown scope(s) {sorted(scopes - SCOPES)}; "
            f"known: {sorted(SCOPES)}"
        )
    secret = m["secret"]
    hashed = _HASHED.fullmatch(secret)
    if hashed:
        digest = bytes.fromhex(hashed[1])
    elif secret.startswith("sha256:"):
        raise ValueError(f"COMFY_ROUTER_API_KEYS entry {n}: sha256: must be followed by 64 hex digits")
    else:
        digest = hashlib.sha256(secret.encode()).digest()
    return KeyEntry(digest, m["client"], scopes)


# Kept for callers of the earlier API: the digests of COMFY_ROUTER_API_KEYS.
def digests(spec: str | None) -> tuple[bytes, ...]:
    return tuple(e.digest for e in parse_keys(spec))


class Authenticator:
    def __init__(
        self,
        entries: tuple[KeyEntry, ...],
        database: Database | None,
        *,
        ttl_s: float = TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.entries = entries
        self.db = database
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._table_has_keys = False
        self._table_checked_until = float("-inf")
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def enabled(self) -> bool:
        return bool(self.entries) or self._table_keys_exist()

    def _table_keys_exist(self) -> bool:
        if self.db is None:
            return False
        now = self._monotonic()
        if now < self._table_checked_until:
            return self._table_has_keys
        try:
            self._table_has_keys = any_active(self.db)
        except Exception as exc:  # keep the last answer: a database outage must not open the door
            log.warning(
                "could not check the api_keys table (%s); keeping auth %s",
                type(exc).__name__,
                "on" if self._table_has_keys else "off",
            )
        self._table_checked_until = now + self.ttl_s
        return self._table_has_keys

    def authenticate(self, key: str) -> Principal | None:
        presented = hashlib.sha256(key.encode()).digest()
        # Compare against every entry so the time taken does not say which one came close.
        found: KeyEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.digest):
                found = entry
        if found is not None:
            return Principal(found.client_id, found.scopes)
        return self._from_table(presented.hex())

    def _from_table(self, digest: str) -> Principal | None:
        if self.db is None:
            return None
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            row = find_active(self.db, digest)
        except Exception as exc:
            log.warning("could not look an API key up in api_keys: %s", type(exc).__name__)
            raise ApiError(
                503, "auth_unavailable", "cannot check the API key: the database is unreachable"
            ) from None
        principal = Principal(row.client_id, row.scopes) if row is not None else None
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (now + self.ttl_s, principal)
        return principal


def require_api_key(app: Flask, auth: Authenticator | tuple[bytes, ...]) -> None:
    if isinstance(auth, tuple):  # the earlier signature: bare digests, unbound, client scope
        auth = Authenticator(tuple(KeyEntry(d, None, frozenset({"client"})) for d in auth), None)
    checker = auth

    @app.before_request
    def _check() -> None:
        g.principal = None
        if request.path in OPEN_ROUTES or not checker.enabled():
            return  # no keys configured: open, as `make run` is
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "unauthorized", "send `Authorization: Bearer <API key>`")
        principal = checker.authenticate(key.strip())
        if principal is None:
            raise ApiError(401, "unauthorized", "the API key is not valid")
        if request.path.startswith("/admin/") and not principal.is_admin:
            raise ApiError(403, "forbidden", f"{request.path} needs an API key with the admin scope")
        g.principal = principal


def bound_client() -> str | None:
    """The client the request's key is bound to, unless it is an admin key (which sees all).
    None outside a request too (a callback sent when the job ends reads the job for its owner)."""
    if not has_request_context():
        return None
    principal: Principal | None = g.get("principal")
    if principal is None or principal.is_admin:
        return None
    return principal.client_id


def may_see(job_client_id: str | None) -> bool:
    """Whether the request's key may read a job of `job_client_id`: a key bound to a client sees
    that client's jobs only; admin keys, unbound keys and an open router see every job."""
    client = bound_client()
    return client is None or job_client_id == client


def acting_client(body_client_id: str | None) -> str | None:
    """The client a request acts as: the key's client; 403 when the body names another one."""
    principal: Principal | None = g.get("principal")
    if principal is None or principal.client_id is None:
        return body_client_id
    if body_client_id is None or body_client_id == principal.client_id:
        return principal.client_id
    if principal.is_admin:
        return body_client_id  # an admin key may act for any client (operators, n8n on their behalf)
    raise ApiError(
        403,
        "client_mismatch",
        f"this API key belongs to client {principal.client_id!r} and cannot act as client "
        f"{body_client_id!r}: drop client_id or use that client's key",
    )
