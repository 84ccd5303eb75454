"""The serving processes know the newest migration without reading the scripts through Alembic."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from connector.ledger.database import normalize_url
from connector.ledger.migrate import HEAD_REVISION, current_revision, scripts_head, upgrade
from tests.crm import PROJECT_ROOT


def test_head_revision_names_the_newest_migration_script():
    assert HEAD_REVISION == scripts_head(), (
        f"connector/ledger/migrate.py: HEAD_REVISION is {HEAD_REVISION!r} but the newest migration script "
        f"is {scripts_head()!r}: move HEAD_REVISION to it")


def test_the_ledger_revision_is_read_as_alembic_wrote_it(db_url):
    engine = sa.create_engine(normalize_url(db_url))
    assert current_revision(engine) is None  # an empty database: before the first migration
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    engine.dispose()


def test_serving_a_webhook_and_readyz_import_no_alembic(tmp_path):
    # Alembic, Mako and Pygments are about 10 MB in every gunicorn worker; svix's API client, with its
    # hundreds of models, about 13 MB more. Neither is needed to receive, verify and store a webhook.
    url = f"sqlite:///{tmp_path}/ledger.db"
    engine = sa.create_engine(normalize_url(url))
    upgrade(engine)  # migrating is the one thing that needs Alembic: done here, not in the server
    engine.dispose()
    script = f"""
import sys
from connector import create_app
from tests.signing import SECRET, sample_bytes, signed_headers
app = create_app({{"database": {{"url": "{url}"}}, "receiver": {{"secrets": [SECRET]}}}})
client = app.test_client()
body = sample_bytes("review.create")
print(client.post("/webhooks/okendo", data=body, headers=signed_headers(body, "msg-light")).status_code,
      client.get("/readyz").status_code)
print(sorted({{name.split(".")[0] for name in sys.modules}} & {{"alembic", "mako", "pygments", "svix", "httpx"}}))
"""
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=PROJECT_ROOT)
    assert loaded.stdout.splitlines() == ["202 200", "[]"], loaded.stdout + loaded.stderr


def _event_indexes(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return {index["name"] for index in sa.inspect(connection).get_indexes("events")}


def test_0011_adds_the_origin_index_and_its_downgrade_drops_it(db_url):
    from alembic import command

    from connector.ledger.database import write_transaction
    from connector.ledger.migrate import _alembic_config

    engine = sa.create_engine(normalize_url(db_url))
    upgrade(engine, "0010")
    assert "ix_events_origin_id" not in _event_indexes(engine)
    upgrade(engine, "0011")
    assert "ix_events_origin_id" in _event_indexes(engine)

    config = _alembic_config()
    with write_transaction(engine) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
    assert current_revision(engine) == "0010"
    assert "ix_events_origin_id" not in _event_indexes(engine)
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION and "ix_events_origin_id" in _event_indexes(engine)
    engine.dispose()
