"""Shared rate limits: one request window and one set of concurrency leases per CRM account,
used by every process on the ledger.

On PostgreSQL both tables are UNLOGGED: every CRM request updates a row, and an unlogged table's
commit waits for no WAL flush (measured on a 2-CPU test host: 0.75-1.0 ms a grant instead of 1.4 ms). After a crash PostgreSQL
empties them, which only forgets pauses and slots of the moment
(https://www.postgresql.org/docs/current/sql-createtable.html#SQL-CREATETABLE-UNLOGGED). On SQLite
the limiter keeps these tables in a file beside the ledger instead (connector.ledger.rate_limits).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_windows",
        sa.Column("account_key", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("next_slot_at", sa.Float, nullable=False),
        sa.Column("paused_until", sa.Float, nullable=False),
        sa.Column("paused_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("account_key", name=op.f("pk_rate_limit_windows")),
    )
    op.create_table(
        "rate_limit_leases",
        sa.Column("account_key", sa.String(64), nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account_key", "slot", name=op.f("pk_rate_limit_leases")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rate_limit_windows SET UNLOGGED")
        op.execute("ALTER TABLE rate_limit_leases SET UNLOGGED")


def downgrade() -> None:
    op.drop_table("rate_limit_leases")
    op.drop_table("rate_limit_windows")
