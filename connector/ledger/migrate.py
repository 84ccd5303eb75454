"""Apply and inspect the ledger's Alembic migrations from code (CLI, tests, /readyz).

Alembic is imported only to migrate. Serving processes just compare the ledger's revision with
HEAD_REVISION: importing Alembic (with Mako and Pygments) costs every process about 10 MB.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from connector.ledger.database import write_transaction

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# The newest script in migrations/versions. tests/test_migrations.py fails when a new script is
# added and this is not moved to it.
HEAD_REVISION = "0014"

# Where Alembic keeps the revision a database is at: one row, one column
# (https://alembic.sqlalchemy.org/en/latest/api/runtime.html#alembic.runtime.migration.MigrationContext).
_VERSION_TABLE = "alembic_version"


def _alembic_config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    config = _alembic_config()
    with write_transaction(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def head_revision() -> str:
    return HEAD_REVISION


def scripts_head() -> str | None:
    """The head as Alembic reads it from the scripts (what HEAD_REVISION must say)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def read_revision(connection: Connection) -> str | None:
    """The revision the ledger is at; None before its first migration."""
    if not sa.inspect(connection).has_table(_VERSION_TABLE):
        return None
    revisions = connection.exec_driver_sql(f"SELECT version_num FROM {_VERSION_TABLE}").scalars().all()
    if len(revisions) > 1:  # Alembic's branches: this project's migrations are one line
        raise RuntimeError(f"the ledger's {_VERSION_TABLE} table holds several revisions: {', '.join(revisions)}")
    return revisions[0] if revisions else None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return read_revision(connection)


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == HEAD_REVISION
