"""Initial ledger: events, deliveries, delivery attempts, record links.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("webhook_timestamp", Timestamp, nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=True),
        sa.Column("topic", sa.String(length=32), nullable=True),
        sa.Column("resource_id", sa.String(length=255), nullable=True),
        sa.Column("sequence_number", sa.String(length=100), nullable=True),
        sa.Column("customer_email", sa.String(length=320), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("verified_by_secret", sa.SmallInteger(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("message_id", name=op.f("uq_events_message_id")),
    )
    op.create_index(op.f("ix_events_customer_email"), "events", ["customer_email"])
    op.create_index(op.f("ix_events_received_at"), "events", ["received_at"])
    op.create_index(op.f("ix_events_resource_id"), "events", ["resource_id"])
    op.create_index("ix_events_resource_type_topic_id", "events", ["resource_type", "topic", "id"])
    op.create_index("ix_events_state_id", "events", ["state", "id"])

    op.create_table(
        "record_links",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("crm_object", sa.String(length=128), nullable=False),
        sa.Column("source_type", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=255), nullable=False),
        sa.Column("crm_record_id", sa.String(length=255), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_links")),
        sa.UniqueConstraint(
            "destination",
            "crm_object",
            "source_type",
            "source_id",
            name=op.f("uq_record_links_destination_crm_object_source_type_source_id"),
        ),
    )

    op.create_table(
        "deliveries",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("event_id", Id, nullable=False),
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("crm_record_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_deliveries_event_id_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "event_id", "mapping", "destination", name=op.f("uq_deliveries_event_id_mapping_destination")
        ),
    )
    op.create_index("ix_deliveries_destination_state", "deliveries", ["destination", "state"])
    op.create_index("ix_deliveries_state_next_attempt_at", "deliveries", ["state", "next_attempt_at"])

    op.create_table(
        "delivery_attempts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("delivery_id", Id, nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.SmallInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index(op.f("ix_delivery_attempts_delivery_id"), "delivery_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_table("deliveries")
    op.drop_table("record_links")
    op.drop_table("events")
