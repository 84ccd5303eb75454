"""Worker bookkeeping: per-resource ordering, delivery routing columns, attempt details.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("resource_type", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("resource_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("sequence_key", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("position", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("target_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("operation", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("replayed_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("replayed_by", sa.String(length=128), nullable=True))
    op.create_index("ix_deliveries_destination_resource", "deliveries", ["destination", "resource_type", "resource_id"])
    op.create_index("ix_deliveries_lease_expires_at", "deliveries", ["lease_expires_at"])
    op.create_index("ix_deliveries_destination_target_key", "deliveries", ["destination", "target_key"])
    op.create_index("ix_deliveries_event_id", "deliveries", ["event_id"])

    with op.batch_alter_table("delivery_attempts") as batch:
        batch.add_column(sa.Column("error_class", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("requests", sa.JSON(), nullable=True))

    op.create_table(
        "resource_versions",
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=255), nullable=False),
        sa.Column("sequence_key", sa.String(length=100), nullable=False),
        sa.Column("event_id", Id, nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("destination", "resource_type", "resource_id", name=op.f("pk_resource_versions")),
    )


def downgrade() -> None:
    op.drop_table("resource_versions")
    with op.batch_alter_table("delivery_attempts") as batch:
        batch.drop_column("requests")
        batch.drop_column("worker")
        batch.drop_column("error_class")
    op.drop_index("ix_deliveries_event_id", "deliveries")
    op.drop_index("ix_deliveries_destination_target_key", "deliveries")
    op.drop_index("ix_deliveries_lease_expires_at", "deliveries")
    op.drop_index("ix_deliveries_destination_resource", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        for column in ("replayed_by", "replayed_at", "operation", "target_key", "position", "sequence_key", "resource_id",
                       "resource_type"):
            batch.drop_column(column)
