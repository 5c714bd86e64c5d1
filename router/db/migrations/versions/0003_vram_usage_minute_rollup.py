"""vram_usage_minute as a rolling rollup: the columns the dashboards need, one row per minute and series

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def new_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("gpu_index", sa.Integer(), nullable=True),
        sa.Column("vram_free_mb", sa.Float(), nullable=True),
        sa.Column("ram_total_mb", sa.Float(), nullable=True),
        sa.Column("queue_pending_max", sa.Float(), nullable=True),
        sa.Column("queue_running_max", sa.Float(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("vram_usage_minute") as batch:
        for column in new_columns():
            batch.add_column(column)
    # A minute of a series is rolled up once: backend and gpu_uuid are NULL for some sources and
    # NULLs never collide in a unique index, hence COALESCE (an expression index, PostgreSQL and SQLite).
    op.create_index(
        "ux_vram_usage_minute_series",
        "vram_usage_minute",
        [
            sa.text("ts"),
            sa.text("host"),
            sa.text("source"),
            sa.text("COALESCE(backend, '')"),
            sa.text("COALESCE(gpu_uuid, '')"),
        ],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_vram_usage_minute_series", table_name="vram_usage_minute")
    with op.batch_alter_table("vram_usage_minute") as batch:
        for column in reversed(new_columns()):
            batch.drop_column(column.name)
