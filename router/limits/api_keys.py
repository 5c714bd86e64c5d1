"""The `api_keys` table: keys bound to a client and scopes, stored as SHA-256 digests only."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from router.db.database import Database
from router.db.models import ApiKey

SCOPES = frozenset({"client", "admin"})
KEY_PREFIX = "crk_"  # makes a leaked key recognisable to secret scanners


def digest_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRow:
    id: int
    client_id: str
    scopes: frozenset[str]
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


def _row(k: ApiKey) -> KeyRow:
    return KeyRow(k.id, k.client_id, frozenset(k.scopes.split()), k.label, k.created_at, k.revoked_at)


def add_key(
    db: Database, client_id: str, scopes: frozenset[str], now: datetime, label: str | None = None
) -> tuple[KeyRow, str]:
    """A new random key for `client_id`; the key is returned once and only its digest is stored."""
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        digest=digest_hex(key),
        client_id=client_id,
        scopes=" ".join(sorted(scopes or {"client"})),
        label=label,
        created_at=now,
    )
    with db.session() as s:
        s.add(row)
        s.flush()
        return _row(row), key


def list_keys(db: Database) -> list[KeyRow]:
    with db.session() as s:
        return [_row(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(db: Database, key_id: int, now: datetime) -> KeyRow | None:
    with db.session() as s:
        k = s.get(ApiKey, key_id)
        if k is None:
            return None
        if k.revoked_at is None:
            k.revoked_at = now
        return _row(k)


def find_active(db: Database, digest: str) -> KeyRow | None:
    with db.session() as s:
        k = s.scalar(select(ApiKey).where(ApiKey.digest == digest, ApiKey.revoked_at.is_(None)))
        return _row(k) if k is not None else None


def any_active(db: Database) -> bool:
    with db.session() as s:
        return bool(s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))))
