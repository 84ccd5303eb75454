"""/healthz and /readyz: what a load balancer sees, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector import create_app
from connector.health import MIGRATIONS_HINT, init_observability
from connector.ledger.migrate import head_revision, upgrade
from connector.runtime import EXTENSION_KEY
from tests.conftest import make_app
from tests.ledger_locks import ledger_locked
from tests.servers import free_port
from tests.signing import SECRET, sample_bytes, signed_headers


def observed(app):
    init_observability(app)
    return app


def engine_of(app) -> sa.Engine:
    return app.extensions[EXTENSION_KEY].engine


def unmigrated_app(db_url: str, **config):
    return observed(create_app({"database": {"url": db_url}, "receiver": {"secrets": [SECRET]}, **config}))


def test_healthz_answers_ok_without_touching_the_ledger(db_url):
    app = unmigrated_app(db_url)
    checkouts = []
    sa.event.listen(engine_of(app), "checkout", lambda *args: checkouts.append(args))

    response = app.test_client().get("/healthz")

    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
    assert checkouts == []
    engine_of(app).dispose()


def test_readyz_is_ok_on_a_migrated_ledger(app):
    observed(app)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "revision": head_revision()}


def test_readyz_is_503_with_the_hint_when_migrations_were_never_applied(db_url):
    app = unmigrated_app(db_url)
    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and body["problems"] == [MIGRATIONS_HINT]
    assert "run `connector db upgrade`" in body["problems"][0]
    assert body["revision"] is None and body["expected"] == head_revision()

    upgrade(engine_of(app))  # the hint's remedy makes it ready, in the same process
    assert app.test_client().get("/readyz").status_code == 200
    engine_of(app).dispose()


def test_readyz_is_503_when_the_ledger_is_behind_the_code(db_url):
    app = unmigrated_app(db_url)
    upgrade(engine_of(app), "0001")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["problems"] == [MIGRATIONS_HINT] and response.get_json()["revision"] == "0001"
    engine_of(app).dispose()


def test_readyz_is_503_naming_the_error_class_never_the_dsn_when_postgres_is_unreachable():
    password = "pw-n0t-for-logs"
    url = f"postgresql://connector:{password}@127.0.0.1:{free_port()}/ledger"
    app = unmigrated_app(url, database={"url": url, "connect_timeout_s": 1})

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "problems": ["ledger unreachable: OperationalError"]}
    text = response.get_data(as_text=True)
    assert password not in text and "connector:" not in text and "127.0.0.1" not in text
    # Liveness does not depend on the ledger.
    assert app.test_client().get("/healthz").status_code == 200


def test_readyz_is_503_when_the_sqlite_file_cannot_be_opened(tmp_path: Path):
    directory = tmp_path / "not-a-file.db"
    directory.mkdir()  # SQLite cannot open a directory as its database
    app = unmigrated_app(f"sqlite:///{directory}")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["problems"] == ["ledger unreachable: OperationalError"]


def test_probes_need_no_login_even_with_a_status_password(db_url, monkeypatch):
    monkeypatch.setenv("TEST_ADMIN_PASSWORD", "correct horse battery")
    app = observed(make_app(db_url))
    protected = observed(create_app({"database": {"url": db_url}, "receiver": {"secrets": [SECRET]},
                                     "status": {"admin_password": "${TEST_ADMIN_PASSWORD}"}}))
    remote = {"REMOTE_ADDR": "203.0.113.5"}  # a load balancer's address, not loopback
    # The status page refuses this client; the probes do not.
    assert protected.test_client().get("/api/stats", environ_base=remote).status_code in (401, 403)
    for probe in (app, protected):
        client = probe.test_client()
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path, environ_base=remote).status_code == 200, path
    engine_of(app).dispose()
    engine_of(protected).dispose()


def test_init_observability_twice_is_harmless(app):
    init_observability(app)
    init_observability(app)
    assert app.test_client().get("/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_are_get_only(app, path):
    observed(app)
    assert app.test_client().post(path).status_code == 405


def _timed_get(client, path: str):
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def test_readyz_says_ledger_busy_within_a_second_while_another_process_holds_the_lock(db_url):
    app = observed(make_app(db_url))
    client = app.test_client()
    with ledger_locked(db_url):
        ready, took = _timed_get(client, "/readyz")
        alive, _ = _timed_get(client, "/healthz")
    assert ready.status_code == 503 and took < 1.0
    [problem] = ready.get_json()["problems"]
    assert problem.startswith("ledger busy: its write lock was not free") and "webhooks are answered 503" in problem
    assert alive.status_code == 200  # liveness never depends on the ledger: nothing restarts the server
    assert client.get("/readyz").status_code == 200  # ready again as soon as the lock is gone
    engine_of(app).dispose()


def test_readyz_says_ledger_busy_while_this_process_has_a_webhook_write_stalled(db_url):
    app = observed(make_app(db_url))
    client = app.test_client()
    body = sample_bytes("review.create")
    with ledger_locked(db_url):
        webhook = client.post("/webhooks/okendo", data=body, headers=signed_headers(body, "msg_stalled"))
        # Its write goes on waiting for the lock (busy_timeout_ms): the probe says so without waiting itself.
        ready, took = _timed_get(client, "/readyz")
    assert webhook.status_code == 503
    assert ready.status_code == 503 and took < 0.1
    [problem] = ready.get_json()["problems"]
    assert problem.startswith("ledger busy: the webhook write in progress has taken")
    engine_of(app).dispose()


@pytest.mark.postgres
def test_a_read_behind_a_locked_postgres_table_is_503_at_once_and_other_database_errors_stay_500(postgres_url):
    app = observed(make_app(postgres_url))
    client = app.test_client()
    with ledger_locked(postgres_url):  # the events table, as an ALTER TABLE or a VACUUM FULL holds it
        stats, took = _timed_get(client, "/api/stats")
    assert stats.status_code == 503 and took < 1.0
    assert stats.headers["Retry-After"] == "5"
    assert stats.get_json()["error"].startswith("ledger busy")
    assert client.get("/api/stats").status_code == 200

    with engine_of(app).begin() as connection:  # a broken ledger is not a busy one
        connection.exec_driver_sql("DROP TABLE deliveries CASCADE")
    app.config["TESTING"] = False  # answer with a 500 instead of raising into the test
    assert client.get("/api/stats").status_code == 500
    engine_of(app).dispose()
