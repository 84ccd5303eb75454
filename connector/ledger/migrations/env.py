"""Alembic environment: runs on the connection `connector.ledger.migrate` hands it."""

from alembic import context

from connector.ledger.models import Base
from connector.ledger.search import SEARCH_TABLES

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # The payload search's tables (connector.ledger.search) differ by backend and are not models:
    # autogenerate must not offer to drop them.
    include_name=lambda name, kind, _parent: kind != "table" or name not in SEARCH_TABLES,
)
with context.begin_transaction():
    context.run_migrations()
