"""Fixtures in the style of Flask's tutorial: `app`, `client`, `runner`.

`db_url` runs each ledger test on SQLite, and on PostgreSQL too when
TEST_DATABASE_URL is set (CI always sets it). Each PostgreSQL test gets a
schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from connector import create_app
from connector.ledger.migrate import upgrade
from connector.runtime import EXTENSION_KEY
from tests.signing import SECRET

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


def _postgres_schema_url() -> Iterator[str]:
    if not TEST_DATABASE_URL:
        pytest.skip("TEST_DATABASE_URL is not set (make test in CI sets it)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(sa.engine.make_url(TEST_DATABASE_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.engine.make_url(TEST_DATABASE_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        # A webhook write still running (a test that locked the ledger ends as the write gets the
        # lock) would deadlock with DROP SCHEMA: every app of the test stores what it holds first.
        close_apps_made()
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_schema_url()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


_apps_made: list[Flask] = []


def close_apps_made() -> None:
    """Close every app `make_app` built: intakes store what they hold, connections go back."""
    while _apps_made:
        _apps_made.pop().extensions[EXTENSION_KEY].close()


def make_app(db_url: str, **receiver: Any) -> Flask:
    database = receiver.pop("database", {})
    app = create_app(
        {
            "database": {"url": db_url, **database},
            "receiver": {"secrets": [SECRET], **receiver},
        }
    )
    app.config["TESTING"] = True
    upgrade(app.extensions[EXTENSION_KEY].engine)
    _apps_made.append(app)
    return app


@pytest.fixture(autouse=True)
def _close_apps_made() -> Iterator[None]:
    yield
    close_apps_made()


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    yield make_app(db_url)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def ledger(app: Flask) -> sa.Engine:
    return app.extensions[EXTENSION_KEY].engine


@pytest.fixture
def crms(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Both CRM emulators, with the environment a destination needs to reach them."""
    from tests.crm import crm_emulators

    with crm_emulators(tmp_path) as emulators:
        for name, value in emulators.environ.items():
            monkeypatch.setenv(name, value)
        yield emulators


def event_rows(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT * FROM events ORDER BY id")))
