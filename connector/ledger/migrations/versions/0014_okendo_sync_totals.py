"""Okendo API runs keep what outlives a run: counts that are never reset (what /metrics exports as
counters, so `increase()` works across passes), the figures of the last finished run (what the
status page shows while the next runs or after it failed), and the failed runs in a row (how long
the reconciliation waits before trying again).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TOTALS = ("pages_total", "read_total", "stored_total", "missing_total", "different_total", "problems_total")


def upgrade() -> None:
    with op.batch_alter_table("okendo_syncs") as batch:
        # Server defaults: the runs already recorded start their totals at 0 (their past is not known).
        for column in (*TOTALS, "failures"):
            batch.add_column(sa.Column(column, sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_pass", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("okendo_syncs") as batch:
        for column in ("last_pass", "failures", *reversed(TOTALS)):
            batch.drop_column(column)
