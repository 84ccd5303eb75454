"""The ledger schema: migrations match the models, and SQLite is set up for durability."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connector.config import ConfigError, settings_from_mapping
from connector.ledger import Base, create_ledger_engine
from connector.ledger.migrate import is_current, upgrade
from connector.ledger.search import SEARCH_TABLES


def test_migrations_produce_exactly_the_models(db_url):
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": db_url}}, environ={}))
    assert not is_current(engine)
    upgrade(engine)
    assert is_current(engine)
    with engine.connect() as connection:
        # The payload search's tables differ by backend (an FTS5 table on SQLite): not models.
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_name": lambda name, kind,
                                             _parent: kind != "table" or name not in SEARCH_TABLES})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_sqlite_runs_in_wal_with_full_sync_and_a_busy_timeout(sqlite_url):
    engine = create_ledger_engine(
        settings_from_mapping({"database": {"url": sqlite_url, "busy_timeout_ms": 1234}}, environ={})
    )
    with engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 2  # FULL
        assert pragma("busy_timeout") == 1234
        assert pragma("foreign_keys") == 1
    engine.dispose()


def test_sqlite_synchronous_can_be_relaxed(sqlite_url):
    engine = create_ledger_engine(
        settings_from_mapping({"database": {"url": sqlite_url, "sqlite_synchronous": "NORMAL"}}, environ={})
    )
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    engine.dispose()


def test_unsupported_database_backends_are_refused():
    with pytest.raises(ConfigError, match="the 'mysql' backend is not supported"):
        create_ledger_engine(settings_from_mapping({"database": {"url": "mysql://root@127.0.0.1/test"}}, environ={}))
