"""api_keys, quota_counters, quota_holds, spend_alerts: keys bound to clients, shared quota counters
and running slots, spend alerts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("scopes", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    op.create_index("ix_api_keys_client_id", "api_keys", ["client_id"])
    # The primary key is the upsert's conflict target: one row per (scope, subject, window).
    op.create_table(
        "quota_counters",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("window_start", UTC_TIME, nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("scope", "subject", "window_start"),
    )
    op.create_table(
        "quota_holds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_quota_holds_subject_expires", "quota_holds", ["subject", "expires_at"])
    op.create_table(
        "spend_alerts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("window_start", UTC_TIME, nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.Column("cap_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_spend_alerts_created_at", "spend_alerts", ["created_at"])
    op.create_index(
        "ux_spend_alerts_once", "spend_alerts", ["subject", "kind", "window_start", "level"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ux_spend_alerts_once", table_name="spend_alerts")
    op.drop_index("ix_spend_alerts_created_at", table_name="spend_alerts")
    op.drop_table("spend_alerts")
    op.drop_index("ix_quota_holds_subject_expires", table_name="quota_holds")
    op.drop_table("quota_holds")
    op.drop_table("quota_counters")
    op.drop_index("ix_api_keys_client_id", table_name="api_keys")
    op.drop_table("api_keys")
