"""The status page's charts from indexes (connector/status/charts.py): every chart reads one range of
one index, bucketed, without touching the tables' rows.

- deliveries (destination, state, updated_at, created_at): delivered and dead per destination over
  time, what left the queue when, and how long it had waited;
- deliveries (state, created_at): what joined the queue when, and the oldest still waiting;
- delivery_attempts (started_at, delivery_id, duration_ms): CRM call latency over time;

and chart_buckets, the counts of closed 15-minute intervals the 24-hour and 7-day charts add up
(connector/status/chart_rollups.py), created empty: the charts count what they need as they need it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_deliveries_destination_state_updated_at", "deliveries", ["destination", "state", "updated_at", "created_at"]),
    ("ix_deliveries_state_created_at", "deliveries", ["state", "created_at"]),
    ("ix_delivery_attempts_started_at", "delivery_attempts", ["started_at", "delivery_id", "duration_ms"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    op.create_table(
        "chart_buckets",
        sa.Column("series", sa.String(16), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Float),
        sa.Column("peak", sa.Float),
        sa.PrimaryKeyConstraint("series", "destination", "bucket_start", name=op.f("pk_chart_buckets")),
    )
    op.create_index("ix_chart_buckets_bucket_start", "chart_buckets", ["bucket_start"])


def downgrade() -> None:
    op.drop_table("chart_buckets")
    for name, table, _columns in INDEXES:
        op.drop_index(name, table)
