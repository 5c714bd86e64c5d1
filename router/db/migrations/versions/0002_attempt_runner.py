"""model_usage_log.runner: which router process owns a running attempt

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_usage_log") as batch:
        batch.add_column(sa.Column("runner", sa.String(length=160), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_usage_log") as batch:
        batch.drop_column("runner")
