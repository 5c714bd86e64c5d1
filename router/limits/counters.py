"""Shared counters in `quota_counters`: each check-and-increment is ONE statement
(`INSERT ... ON CONFLICT DO UPDATE ... WHERE value + amount <= cap RETURNING value`), so two
router processes can never both take the last unit: PostgreSQL serialises the conflicting rows
and re-checks the WHERE on the newest version; SQLite serialises writers. A refused increment
returns no row and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, case, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from router.db.models import QuotaCounter, QuotaHold

TABLE = cast(Table, QuotaCounter.__table__)
EPS = 1e-9  # spend is a float sum: a cap is reached when within a nano-dollar


def _insert(conn: Connection) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(TABLE)
    if name == "sqlite":
        return sqlite.insert(TABLE)
    raise NotImplementedError(f"quota counters need PostgreSQL or SQLite, not {name}")


def add(
    conn: Connection,
    scope: str,
    subject: str,
    window_start: datetime,
    amount: float,
    now: datetime,
    cap: float | None = None,
) -> float | None:
    """Add `amount` unless that would pass `cap`; the new value, or None when refused."""
    if cap is not None and amount > cap + EPS:
        return None
    ins = _insert(conn).values(
        scope=scope, subject=subject, window_start=window_start, value=amount, updated_at=now
    )
    new_value = TABLE.c.value + ins.excluded.value
    stmt = ins.on_conflict_do_update(
        index_elements=[TABLE.c.scope, TABLE.c.subject, TABLE.c.window_start],
        set_={"value": new_value, "updated_at": ins.excluded.updated_at},
        where=(new_value <= cap + EPS) if cap is not None else None,
    ).returning(TABLE.c.value)
    row = conn.execute(stmt).first()
    return None if row is None else float(row[0])


def subtract(
    conn: Connection, scope: str, subject: str, window_start: datetime, amount: float, now: datetime
) -> None:
    """Give units back (a finished generation, a refunded image); never below zero."""
    conn.execute(
        update(TABLE)
        .where(
            TABLE.c.scope == scope,
            TABLE.c.subject == subject,
            TABLE.c.window_start == window_start,
        )
        .values(value=case((TABLE.c.value < amount, 0.0), else_=TABLE.c.value - amount), updated_at=now)
    )


def read(conn: Connection, keys: Iterable[tuple[str, str, datetime]]) -> dict[tuple[str, str], float]:
    """Values of the given counters by (scope, subject); a counter never written is absent."""
    wanted = list(keys)
    if not wanted:
        return {}
    cond = or_(
        *(
            and_(TABLE.c.scope == s, TABLE.c.subject == subj, TABLE.c.window_start == w)
            for s, subj, w in wanted
        )
    )
    rows = conn.execute(select(TABLE.c.scope, TABLE.c.subject, TABLE.c.value).where(cond))
    return {(r.scope, r.subject): float(r.value) for r in rows}


def current(
    conn: Connection, windows: dict[str, datetime], subject_prefix: str | None = None
) -> list[tuple[str, str, datetime, float]]:
    """Every counter of the current windows (scope -> window start), for /admin/quotas."""
    cond = or_(*(and_(TABLE.c.scope == s, TABLE.c.window_start == w) for s, w in windows.items()))
    q = select(TABLE.c.scope, TABLE.c.subject, TABLE.c.window_start, TABLE.c.value).where(cond)
    if subject_prefix is not None:
        q = q.where(TABLE.c.subject.startswith(subject_prefix, autoescape=True))
    return [
        (r.scope, r.subject, r.window_start, float(r.value))
        for r in conn.execute(q.order_by(TABLE.c.scope, TABLE.c.subject))
    ]


# --- running slots held by one job or attempt (reclaimed when their router died) -----------------

HOLDS = cast(Table, QuotaHold.__table__)


def take_hold(conn: Connection, subject: str, now: datetime, expires_at: datetime) -> str:
    hold_id = str(uuid.uuid4())
    conn.execute(insert(HOLDS).values(id=hold_id, subject=subject, acquired_at=now, expires_at=expires_at))
    return hold_id


def drop_hold(conn: Connection, hold_id: str) -> str | None:
    """Delete a hold; its subject, or None when it was already gone (reclaimed, or given back)."""
    row = conn.execute(delete(HOLDS).where(HOLDS.c.id == hold_id).returning(HOLDS.c.subject)).first()
    return None if row is None else str(row[0])


def reclaim_expired(
    conn: Connection, now: datetime, subject: str | None = None, prefix: str | None = None
) -> dict[str, int]:
    """Delete holds past their expiry (of one subject, or of subjects with a prefix): count per subject."""
    q = delete(HOLDS).where(HOLDS.c.expires_at < now)
    if subject is not None:
        q = q.where(HOLDS.c.subject == subject)
    if prefix is not None:
        q = q.where(HOLDS.c.subject.startswith(prefix, autoescape=True))
    out: dict[str, int] = {}
    for (subj,) in conn.execute(q.returning(HOLDS.c.subject)):
        out[subj] = out.get(subj, 0) + 1
    return out
