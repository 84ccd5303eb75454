"""Status page: delivery-state indexes for event filters, and what workers learned of each CRM.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_state_event_id", "deliveries", ["state", "event_id"])
    op.create_index("ix_deliveries_destination_state_event_id", "deliveries", ["destination", "state", "event_id"])
    op.create_table(
        "destination_status",
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("quota", sa.JSON(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("destination", name=op.f("pk_destination_status")),
    )


def downgrade() -> None:
    op.drop_table("destination_status")
    op.drop_index("ix_deliveries_destination_state_event_id", "deliveries")
    op.drop_index("ix_deliveries_state_event_id", "deliveries")
