"""Paused destinations and the last remote check, on each destination's status row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("destination_status") as table:
        table.add_column(sa.Column("paused_at", Timestamp, nullable=True))
        table.add_column(sa.Column("paused_reason", sa.Text, nullable=True))
        table.add_column(sa.Column("paused_by", sa.String(128), nullable=True))
        table.add_column(sa.Column("remote_checked_at", Timestamp, nullable=True))
        table.add_column(sa.Column("remote_problems", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("destination_status") as table:
        for column in ("remote_problems", "remote_checked_at", "paused_by", "paused_reason", "paused_at"):
            table.drop_column(column)
