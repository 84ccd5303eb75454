"""Claims by kind: due deliveries of one destination and mapping, oldest first, from an index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_destination_mapping_state_next_attempt_at", "deliveries",
                    ["destination", "mapping", "state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_destination_mapping_state_next_attempt_at", "deliveries")
