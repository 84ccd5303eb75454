"""Alerts: the outbox they leave through, and the counts kept between their messages.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_outbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("condition", sa.String(32), nullable=False),
        sa.Column("group_key", sa.String(255), nullable=False),
        sa.Column("window_start", Timestamp, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("covered_until", Timestamp, nullable=False),
        sa.Column("message", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("sent_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_outbox")),
        sa.UniqueConstraint("target", "condition", "group_key", "window_start",
                            name=op.f("uq_alert_outbox_target_condition_group_key_window_start")),
    )
    op.create_index("ix_alert_outbox_state_next_attempt_at", "alert_outbox", ["state", "next_attempt_at"])
    op.create_index("ix_alert_outbox_condition_group_key_created_at", "alert_outbox",
                    ["condition", "group_key", "created_at"])
    op.create_table(
        "alert_counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("count", Id, nullable=False),
        sa.Column("first_at", Timestamp, nullable=True),
        sa.Column("last_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_alert_counters")),
    )


def downgrade() -> None:
    op.drop_table("alert_counters")
    op.drop_index("ix_alert_outbox_condition_group_key_created_at", "alert_outbox")
    op.drop_index("ix_alert_outbox_state_next_attempt_at", "alert_outbox")
    op.drop_table("alert_outbox")
