"""The status page's origin filter (webhook, backfill, reconcile) from an index: newest first by id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_origin_id", "events", ["origin", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_origin_id", "events")
