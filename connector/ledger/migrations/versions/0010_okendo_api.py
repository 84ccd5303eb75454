"""Events read from Okendo's API: each event's origin, the pruned resources' last state, and the
backfill and reconciliation runs (connector.backfill).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A server default: existing rows are webhooks, and the receiver's insert need not name it.
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False, server_default="webhook"))
    op.create_table(
        "resource_states",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=False),
        sa.Column("sequence_key", sa.String(100), nullable=True),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "resource_id", name=op.f("pk_resource_states")),
    )
    op.create_table(
        "okendo_syncs",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cursor", sa.Text, nullable=True),
        sa.Column("options", sa.JSON, nullable=True),
        sa.Column("started_at", _UTC, nullable=True),
        sa.Column("updated_at", _UTC, nullable=True),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.Column("pages", sa.Integer, nullable=False),
        sa.Column("read", sa.Integer, nullable=False),
        sa.Column("stored", sa.Integer, nullable=False),
        sa.Column("missing", sa.Integer, nullable=False),
        sa.Column("different", sa.Integer, nullable=False),
        sa.Column("problems", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_okendo_syncs")),
    )


def downgrade() -> None:
    op.drop_table("okendo_syncs")
    op.drop_table("resource_states")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("origin")
