"""Full-text search in event payloads: the index (FTS5 on SQLite, tsvector with GIN on PostgreSQL)
and the mark of what it holds (connector.ledger.search).

The migration only creates them, empty: the worker indexes existing events in batches afterwards,
so an upgrade of a large ledger stays as fast as creating two tables.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_search_progress",
        sa.Column("id", sa.SmallInteger, nullable=False),
        # Every event with an id up to this one is indexed (those above it may be too).
        sa.Column("indexed_through", sa.BigInteger, nullable=False),
        # The version of the text extraction the index was built with (search.TEXT_VERSION).
        sa.Column("text_version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_search_progress")),
    )
    op.execute("INSERT INTO event_search_progress (id, indexed_through, text_version) VALUES (1, 0, 1)")
    if op.get_bind().dialect.name == "sqlite":
        # Contentless: the words only, the text stays in events.body (https://www.sqlite.org/fts5.html#contentless_tables).
        # unicode61 folds case and, with remove_diacritics 2, accents: "Zoe" finds "Zoë".
        op.execute("CREATE VIRTUAL TABLE event_search USING fts5("
                   "words, content='', tokenize='unicode61 remove_diacritics 2')")
    else:
        op.create_table(
            "event_search",
            # On delete cascade: whatever deletes an event takes its words with it.
            sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id", ondelete="CASCADE",
                                                                name=op.f("fk_event_search_event_id_events")),
                      nullable=False),
            sa.Column("words", postgresql.TSVECTOR, nullable=False),
            sa.PrimaryKeyConstraint("event_id", name=op.f("pk_event_search")),
        )
        op.create_index("ix_event_search_words", "event_search", ["words"], postgresql_using="gin")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE event_search")
    else:
        op.drop_index("ix_event_search_words", "event_search")
        op.drop_table("event_search")
    op.drop_table("event_search_progress")
