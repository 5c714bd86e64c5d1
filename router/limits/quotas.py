"""The quota gate: admission checks before work starts, spend recorded when an attempt ends,
concurrency holds per client and per backend. Every number lives in `quota_counters`.

A refused admission rolls its whole transaction back, so a refused request consumes nothing.
A counter is kept only while its limit is set: with no limits configured the gate costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError

from router.api.errors import ApiError
from router.clock import Clock
from router.db.database import Database
from router.db.models import SpendAlert
from router.limits import counters
from router.limits.config import ClientLimits, LimitsSettings
from router.limits.windows import (
    NO_WINDOW,
    WindowKind,
    levels_reached,
    resets_at,
    retry_after_s,
    window_start,
)

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"  # the client of requests that name none
GLOBAL = "global"
SPEND_KINDS = ("gpu_usd", "hosted_usd")
DAY = timedelta(days=1)
UNAVAILABLE = (OperationalError, InterfaceError)  # the database cannot be reached (not a bug)


def client_subject(client_id: str | None) -> str:
    return f"client:{client_id or ANONYMOUS}"


def backend_subject(backend_id: str) -> str:
    return f"backend:{backend_id}"


class QuotaRefused(ApiError):  # noqa: N818 (a refusal answered as a 429, not a bug)
    """A 429 with a `Retry-After` header when the wait is known."""

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(429, code, message, details)
        retry = details.get("retry_after_s")
        self.headers = {"Retry-After": str(retry)} if retry is not None else {}


@dataclass
class Admission:
    """What an admitted run holds: a running slot (given back when the job ends) and images."""

    gate: QuotaGate
    client_id: str
    hold_id: str | None = None  # the running slot (a `quota_holds` row)
    images: int = 0
    images_window: datetime | None = None
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        """The job ended (or never started): give the running slot back. Idempotent."""
        if self._released:
            return
        self._released = True
        if self.hold_id is not None:
            self.gate.release_hold(self.hold_id)

    def refund(self) -> None:
        """Nothing ran for this admission (lost an Idempotency-Key race): give everything back."""
        self.release()
        if self.images and self.images_window is not None:
            self.gate.give_back(self.client_id, images=self.images, images_window=self.images_window)
            self.images = 0


class QuotaGate:
    def __init__(self, limits: LimitsSettings, database: Database, clock: Clock) -> None:
        self.limits = limits
        self.db = database
        self.clock = clock

    # --- admission --------------------------------------------------------------------------

    def check_request(self, client_id: str | None) -> None:
        """/select: the requests-per-minute limit and the spend caps. Raises QuotaRefused."""
        self._admit(client_id, images=0, run=False)

    def admit_run(self, client_id: str | None, images: int) -> Admission:
        """/select-and-run: also a running slot and `images` of the day's images."""
        return self._admit(client_id, images=images, run=True)

    def _admit(self, client_id: str | None, *, images: int, run: bool) -> Admission:
        try:
            return self._admit_once(client_id, images=images, run=run)
        except QuotaRefused as exc:
            # Slots held past hold_max_s belong to jobs of a router that died: reclaim, retry once.
            if exc.code != "concurrency_limited" or not self._reclaim(subject=exc.details["subject"]):
                raise
            return self._admit_once(client_id, images=images, run=run)

    def _admit_once(self, client_id: str | None, *, images: int, run: bool) -> Admission:
        client = client_id or ANONYMOUS
        lim = self.limits.for_client(client)
        admission = Admission(self, client)
        if not self._limits_anything(lim):
            return admission
        now = self.clock.now()
        subject = client_subject(client)
        try:
            with self.db.engine.begin() as conn:  # a raise below rolls every increment back
                if lim.requests_per_min is not None:
                    self._take(conn, "requests_min", subject, "minute", 1, lim.requests_per_min, now)
                if run:  # a decision alone spends nothing: /select is never paused
                    self._check_spend(conn, subject, lim, now)
                if run and lim.max_running is not None:
                    self._take(conn, "running", subject, "none", 1, lim.max_running, now)
                    admission.hold_id = counters.take_hold(conn, subject, now, self._expiry(now))
                if run and lim.images_per_day is not None:
                    self._take(conn, "images_day", subject, "day", images, lim.images_per_day, now)
                    admission.images, admission.images_window = images, window_start("day", now)
        except UNAVAILABLE as exc:
            # The router keeps serving while the database is down (jobs are spooled): the limits
            # cannot be counted then, and say so, rather than refuse every request.
            log.warning("quotas not checked for %s, the database is unreachable: %s", subject, _first(exc))
            return Admission(self, client)
        return admission

    def _limits_anything(self, lim: ClientLimits) -> bool:
        return any(v is not None for v in lim.model_dump().values()) or self._global_caps_set()

    def _global_caps_set(self) -> bool:
        return (
            self.limits.global_gpu_usd_per_day is not None
            or self.limits.global_hosted_usd_per_day is not None
        )

    def _take(
        self,
        conn: Connection,
        scope: str,
        subject: str,
        kind: WindowKind,
        amount: int,
        cap: int,
        now: datetime,
    ) -> None:
        start = window_start(kind, now)
        if counters.add(conn, scope, subject, start, amount, now, cap=cap) is not None:
            return
        used = counters.read(conn, [(scope, subject, start)]).get((scope, subject), 0.0)
        raise _refusal(scope, subject, kind, used, amount, cap, now)

    def _check_spend(self, conn: Connection, subject: str, lim: ClientLimits, now: datetime) -> None:
        caps = self._spend_caps(subject, lim)
        if not caps:
            return
        day = window_start("day", now)
        spent = counters.read(conn, [(f"{kind}_day", subj, day) for (subj, kind) in caps])
        for (subj, kind), cap in caps.items():
            used = spent.get((f"{kind}_day", subj), 0.0)
            if used >= cap - counters.EPS:
                who = "the whole router" if subj == GLOBAL else subj.removeprefix("client:")
                when = resets_at("day", now)
                assert when is not None
                raise QuotaRefused(
                    "spend_cap_reached",
                    f"the daily {_KIND_TEXT[kind]} cap of {who} is reached "
                    f"({used:.4f} of {cap:.4f} USD); new work is paused until {when.isoformat()}",
                    {
                        "subject": subj,
                        "kind": kind,
                        "spent_usd": round(used, 6),
                        "cap_usd": cap,
                        "resets_at": when.isoformat(),
                        "retry_after_s": retry_after_s("day", now),
                    },
                )

    def _spend_caps(self, subject: str, lim: ClientLimits) -> dict[tuple[str, str], float]:
        caps: dict[tuple[str, str], float | None] = {
            (subject, "gpu_usd"): lim.gpu_usd_per_day,
            (subject, "hosted_usd"): lim.hosted_usd_per_day,
            (GLOBAL, "gpu_usd"): self.limits.global_gpu_usd_per_day,
            (GLOBAL, "hosted_usd"): self.limits.global_hosted_usd_per_day,
        }
        return {k: v for k, v in caps.items() if v is not None}

    def give_back(self, client_id: str, *, images: int, images_window: datetime) -> None:
        subject = client_subject(client_id)
        try:
            with self.db.engine.begin() as conn:
                counters.subtract(conn, "images_day", subject, images_window, images, self.clock.now())
        except Exception:  # a lost give-back must not fail the job; the log says which counter
            log.exception("could not give back %s images of %s", images, subject)

    def _expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.limits.hold_max_s)

    def release_hold(self, hold_id: str) -> None:
        """Give a running slot back, once: a hold already reclaimed is not subtracted again."""
        try:
            with self.db.engine.begin() as conn:
                subject = counters.drop_hold(conn, hold_id)
                if subject is not None:
                    counters.subtract(conn, "running", subject, NO_WINDOW, 1, self.clock.now())
        except Exception:  # a lost give-back must not fail the job; hold_max_s reclaims it
            log.exception("could not give back running slot %s", hold_id)

    def _reclaim(self, *, subject: str | None = None, prefix: str | None = None) -> bool:
        """Free the running slots held past hold_max_s (their router died mid-job). Any freed?"""
        now = self.clock.now()
        try:
            with self.db.engine.begin() as conn:
                freed = counters.reclaim_expired(conn, now, subject=subject, prefix=prefix)
                for subj, n in freed.items():
                    counters.subtract(conn, "running", subj, NO_WINDOW, n, now)
        except UNAVAILABLE:
            return False
        for subj, n in freed.items():
            log.warning(
                "reclaimed %d running slot(s) of %s held longer than %.0f s (a router that died mid-job?)",
                n,
                subj,
                self.limits.hold_max_s,
            )
        return bool(freed)

    # --- spend ------------------------------------------------------------------------------

    def spent(self, client_id: str | None, gpu_usd: float, hosted_usd: float) -> None:
        """An attempt finished: add its spend to the client's and the global day, alert once per
        window at the warning share and at the cap. Kept only while some spend cap is set."""
        client = client_id or ANONYMOUS
        lim = self.limits.for_client(client)
        subject = client_subject(client)
        if not self._spend_caps(subject, lim) and not self._any_client_spend_cap():
            return
        now = self.clock.now()
        day = window_start("day", now)
        amounts = {"gpu_usd": gpu_usd, "hosted_usd": hosted_usd}
        caps = self._spend_caps(subject, lim)
        with self.db.engine.begin() as conn:
            for kind, amount in amounts.items():
                if amount <= 0:
                    continue
                for subj in (subject, GLOBAL):
                    total = counters.add(conn, f"{kind}_day", subj, day, amount, now)
                    cap = caps.get((subj, kind))
                    if total is not None and cap is not None:
                        self._alert(conn, subj, kind, day, total, cap, now)

    def _any_client_spend_cap(self) -> bool:
        lim = self.limits
        return (
            lim.gpu_usd_per_day is not None
            or lim.hosted_usd_per_day is not None
            or any(
                c.gpu_usd_per_day is not None or c.hosted_usd_per_day is not None
                for c in lim.clients.values()
            )
        )

    def _alert(
        self,
        conn: Connection,
        subject: str,
        kind: str,
        day: datetime,
        spent_usd: float,
        cap_usd: float,
        now: datetime,
    ) -> None:
        for level in levels_reached(spent_usd, cap_usd, self.limits.spend_warn_ratio):
            ins = _insert_alert(conn).values(
                created_at=now,
                subject=subject,
                kind=kind,
                window_start=day,
                level=level.value,
                spent_usd=spent_usd,
                cap_usd=cap_usd,
            )
            row = conn.execute(ins.on_conflict_do_nothing().returning(SpendAlert.id)).first()
            if row is not None:  # the first process to cross the line says it, once per window
                log.warning(
                    "spend %s: %s reached %.0f%% of its daily %s cap (%.4f of %.4f USD)%s",
                    level.value,
                    subject,
                    100 * spent_usd / cap_usd if cap_usd else 100.0,
                    kind,
                    spent_usd,
                    cap_usd,
                    "; new work is paused until the next UTC day" if level.value == "paused" else "",
                )

    # --- backends ---------------------------------------------------------------------------

    @contextmanager
    def backend_slot(self, backend_id: str) -> Iterator[None]:
        """Count an attempt as running on a backend while it runs (only when backend caps are set)."""
        if not self.limits.caps_backends:
            yield
            return
        subject = backend_subject(backend_id)
        now = self.clock.now()
        try:
            with self.db.engine.begin() as conn:
                counters.add(conn, "running", subject, NO_WINDOW, 1, now)
                hold_id = counters.take_hold(conn, subject, now, self._expiry(now))
        except UNAVAILABLE as exc:  # the attempt runs uncounted rather than not at all
            log.warning("running attempt on %s not counted: %s", backend_id, _first(exc))
            yield
            return
        try:
            yield
        finally:
            self.release_hold(hold_id)

    def backends_running(self) -> dict[str, int]:
        """Attempts running per backend; empty (no backend held back) while the database is down."""
        try:
            with self.db.engine.connect() as conn:
                rows = counters.current(conn, {"running": NO_WINDOW}, subject_prefix="backend:")
        except UNAVAILABLE as exc:
            log.warning("backend concurrency caps not applied, the database is unreachable: %s", _first(exc))
            return {}
        running = {subj.removeprefix("backend:"): int(v) for _, subj, _, v in rows}
        at_cap = any(n >= (self.limits.for_backend(b) or n + 1) for b, n in running.items())
        if at_cap and self._reclaim(prefix="backend:"):
            return self.backends_running()
        return running

    # --- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Current windows' counters, today's alerts and the configured limits (GET /admin/quotas)."""
        now = self.clock.now()
        windows = {
            "requests_min": window_start("minute", now),
            "images_day": window_start("day", now),
            "gpu_usd_day": window_start("day", now),
            "hosted_usd_day": window_start("day", now),
            "running": NO_WINDOW,
        }
        day = window_start("day", now)
        with self.db.engine.connect() as conn:
            rows = counters.current(conn, windows)
            alerts = conn.execute(
                select(SpendAlert).where(SpendAlert.window_start == day).order_by(SpendAlert.id)
            ).all()
        return {
            "now": now.isoformat(),
            "day_resets_at": (day + DAY).isoformat(),
            "limits": self.limits.model_dump(mode="json"),
            "counters": [
                {"scope": s, "subject": subj, "window_start": w.isoformat(), "value": v}
                for s, subj, w, v in rows
            ],
            "alerts": [
                {
                    "subject": a.subject,
                    "kind": a.kind,
                    "level": a.level,
                    "spent_usd": a.spent_usd,
                    "cap_usd": a.cap_usd,
                    "created_at": a.created_at.isoformat(),
                }
                for a in alerts
            ],
        }


def _first(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


_KIND_TEXT = {"gpu_usd": "GPU spend", "hosted_usd": "hosted-equivalent spend"}

_REFUSALS = {
    "requests_min": ("rate_limited", "requests per minute"),
    "images_day": ("quota_exceeded", "images per day"),
    "running": ("concurrency_limited", "generations running at once"),
}


def _refusal(
    scope: str, subject: str, kind: WindowKind, used: float, amount: int, cap: int, now: datetime
) -> QuotaRefused:
    code, what = _REFUSALS[scope]
    client = subject.removeprefix("client:")
    when = resets_at(kind, now)
    details: dict[str, Any] = {
        "subject": subject,
        "limit": cap,
        "used": int(used),
        "requested": amount,
        "resets_at": when.isoformat() if when else None,
        "retry_after_s": retry_after_s(kind, now),
    }
    if kind == "none":
        message = f"client {client} already has {int(used)} of {cap} {what}; retry when one finishes"
        details["retry_after_s"] = 1
    else:
        message = (
            f"client {client} used {int(used)} of {cap} {what}"
            + (f" and asked for {amount} more" if amount > 1 else "")
            + f"; the window resets at {when.isoformat() if when else '?'}"
        )
    return QuotaRefused(code, message, details)


def _insert_alert(conn: Connection) -> Any:
    table = cast(Table, SpendAlert.__table__)
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
