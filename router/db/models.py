"""SQLAlchemy 2.0 typed tables (DESIGN.md section 4). Timestamps are timezone-aware UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT autoincrement on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonDoc = JSON().with_variant(JSONB(), "postgresql")
UtcTime = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcTime, index=True)
    client_id: Mapped[str | None] = mapped_column(String(128), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    urgency: Mapped[str] = mapped_column(String(32))
    deadline_s: Mapped[float] = mapped_column(Float)
    quality_target: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(16), index=True)
    model_name: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(16))
    backend: Mapped[str | None] = mapped_column(String(64))
    selection_reason: Mapped[str | None] = mapped_column(Text)
    reason_code: Mapped[str | None] = mapped_column(String(64))
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    deadline_met: Mapped[bool | None] = mapped_column(Boolean)
    estimated_cost_usd: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[list[Any] | None] = mapped_column(JsonDoc)
    finished_at: Mapped[datetime | None] = mapped_column(UtcTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)


class ModelUsageLog(Base):
    """One row per attempt on a backend (a degraded job has several)."""

    __tablename__ = "model_usage_log"
    __table_args__ = (
        Index("ix_model_usage_log_model_started", "model_name", "started_at"),
        Index("ix_model_usage_log_backend_started", "backend", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    source: Mapped[str] = mapped_column(String(16), default="router")  # router | direct
    prompt_id: Mapped[str | None] = mapped_column(String(64))
    # The router process that owns a running attempt ("host:pid:boot id"), so that a restarted
    # router re-attaches to its own dead predecessor's prompts and never to a live replica's.
    runner: Mapped[str | None] = mapped_column(String(160))
    started_at: Mapped[datetime] = mapped_column(UtcTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcTime)
    backend: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(16))
    purpose: Mapped[str | None] = mapped_column(String(64))
    steps: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    estimated_s: Mapped[float | None] = mapped_column(Float)
    actual_s: Mapped[float | None] = mapped_column(Float)
    queue_s: Mapped[float | None] = mapped_column(Float)
    load_s: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    estimated_cost_usd: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    hosted_usd: Mapped[float | None] = mapped_column(Float)
    quality_score: Mapped[float | None] = mapped_column(Float)
    selection_reason: Mapped[str | None] = mapped_column(Text)
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)


class VramUsageLog(Base):
    """One row per GPU (source nvml), per host (source host) or per backend (source comfyui) per sample."""

    __tablename__ = "vram_usage_log"
    __table_args__ = (
        Index("ix_vram_usage_log_ts", "ts"),
        Index("ix_vram_usage_log_source_ts", "source", "ts"),
        Index("ix_vram_usage_log_backend_ts", "backend", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UtcTime)
    host: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))  # nvml | host | comfyui
    backend: Mapped[str | None] = mapped_column(String(64))
    gpu_index: Mapped[int | None] = mapped_column(Integer)
    gpu_uuid: Mapped[str | None] = mapped_column(String(96))
    gpu_name: Mapped[str | None] = mapped_column(String(128))
    mig_profile: Mapped[str | None] = mapped_column(String(64))
    vram_total_mb: Mapped[float | None] = mapped_column(Float)
    vram_used_mb: Mapped[float | None] = mapped_column(Float)
    vram_free_mb: Mapped[float | None] = mapped_column(Float)
    gpu_util_pct: Mapped[float | None] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    power_w: Mapped[float | None] = mapped_column(Float)
    ram_total_mb: Mapped[float | None] = mapped_column(Float)
    ram_used_mb: Mapped[float | None] = mapped_column(Float)
    cpu_pct: Mapped[float | None] = mapped_column(Float)
    queue_pending: Mapped[int | None] = mapped_column(Integer)
    queue_running: Mapped[int | None] = mapped_column(Integer)
    up: Mapped[bool | None] = mapped_column(Boolean)  # comfyui rows: did the backend answer
    error: Mapped[str | None] = mapped_column(Text)
    processes: Mapped[list[Any] | None] = mapped_column(JsonDoc)  # nvml rows: [{pid, used_mb}]


class VramUsageMinute(Base):
    """1-minute aggregates of vram_usage_log (monitor/rollup.py, every complete minute), kept longer
    than the raw rows (retention). One row per minute and series (migration 0003's unique index)."""

    __tablename__ = "vram_usage_minute"
    __table_args__ = (
        Index("ix_vram_usage_minute_ts", "ts"),
        Index(
            "ux_vram_usage_minute_series",
            "ts",
            "host",
            "source",
            text("COALESCE(backend, '')"),
            text("COALESCE(gpu_uuid, '')"),
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UtcTime)
    host: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str | None] = mapped_column(String(64))
    gpu_uuid: Mapped[str | None] = mapped_column(String(96))
    gpu_name: Mapped[str | None] = mapped_column(String(128))
    samples: Mapped[int] = mapped_column(Integer)
    vram_total_mb: Mapped[float | None] = mapped_column(Float)
    vram_used_mb: Mapped[float | None] = mapped_column(Float)
    vram_used_max_mb: Mapped[float | None] = mapped_column(Float)
    gpu_util_pct: Mapped[float | None] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    power_w: Mapped[float | None] = mapped_column(Float)
    ram_used_mb: Mapped[float | None] = mapped_column(Float)
    cpu_pct: Mapped[float | None] = mapped_column(Float)
    queue_pending: Mapped[float | None] = mapped_column(Float)
    up_share: Mapped[float | None] = mapped_column(Float)
    # Added by migration 0003 for the dashboards' panels.
    gpu_index: Mapped[int | None] = mapped_column(Integer)
    vram_free_mb: Mapped[float | None] = mapped_column(Float)
    ram_total_mb: Mapped[float | None] = mapped_column(Float)
    queue_pending_max: Mapped[float | None] = mapped_column(Float)
    queue_running_max: Mapped[float | None] = mapped_column(Float)


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcTime, index=True)


class ApiKey(Base):
    """An API key by its SHA-256 digest (the key itself is shown once, never stored), bound to a
    client; `scopes` is space-separated (`client`, `admin`). Managed by `comfy-router keys`."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the key
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    scopes: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcTime)


class QuotaCounter(Base):
    """One counter per (scope, subject, window start), updated by one atomic upsert so that every
    router process sees the same count. scope: requests_min | images_day | gpu_usd_day |
    hosted_usd_day | running; subject: `client:<id>`, `backend:<id>` or `global`."""

    __tablename__ = "quota_counters"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UtcTime, primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UtcTime)


class SpendAlert(Base):
    """A spend cap's warning (share of the cap reached) or pause (cap reached): once per window."""

    __tablename__ = "spend_alerts"
    __table_args__ = (Index("ux_spend_alerts_once", "subject", "kind", "window_start", "level", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcTime, index=True)
    subject: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # gpu_usd | hosted_usd
    window_start: Mapped[datetime] = mapped_column(UtcTime)
    level: Mapped[str] = mapped_column(String(16))  # warning | paused
    spent_usd: Mapped[float] = mapped_column(Float)
    cap_usd: Mapped[float] = mapped_column(Float)


class QuotaHold(Base):
    """A running slot held by one job (subject `client:<id>`) or attempt (`backend:<id>`), so that
    a slot held by a router that died is reclaimed after `expires_at` (COMFY_ROUTER_HOLD_MAX_S)."""

    __tablename__ = "quota_holds"
    __table_args__ = (Index("ix_quota_holds_subject_expires", "subject", "expires_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(UtcTime)
    expires_at: Mapped[datetime] = mapped_column(UtcTime)
