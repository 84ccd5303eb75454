"""Who may do what on the status page (issue 13): guessing is slowed per address and overall,
operators and viewers are separate, every sign-in and replay is in the audit log under its user,
and no secret reaches the ledger's copies or an error page."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import sqlalchemy as sa

from connector.config import settings_from_mapping
from connector import create_app
from connector.ledger.migrate import upgrade
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from tests.crm import PROJECT_ROOT
from tests.signing import SECRET
from tests.test_status import PASSWORD, csrf_from, drain, post_event

VIEWER = "look but do not touch"
ATTACKER, OPERATOR_DESK = "203.0.113.50", "198.51.100.7"


@pytest.fixture
def app(db_url):
    settings = settings_from_mapping({
        "database": {"url": db_url},
        "receiver": {"secrets": [SECRET]},
        "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        "status": {"admin_password": "${ADMIN}", "viewer_password": "${VIEWER}"},
    }, environ={"ADMIN": PASSWORD, "VIEWER": VIEWER})
    app = create_app(settings)
    app.config["TESTING"] = True
    upgrade(app.extensions[EXTENSION_KEY].engine)
    client = app.test_client()
    assert post_event(client, sample_bytes("review.create"), "msg-access-1").status_code == 202
    drain(app)
    yield app
    app.extensions[EXTENSION_KEY].engine.dispose()


def client_from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address  # Werkzeug's test client: defaults for every request
    return client


def log_in(client, password: str):
    token = csrf_from(client.get("/status/login").text)
    return client.post("/status/login", data={"password": password, "csrf_token": token})


def basic(password: str, user: str = "admin") -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def metric(app, name: str, kind: str) -> float:
    text = app.test_client().get("/metrics").text
    for line in text.splitlines():
        if line.startswith(f'okendo_connector_{name}_total{{kind="{kind}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_sixth_wrong_password_in_a_minute_is_refused_and_another_address_still_signs_in(app, caplog):
    before = metric(app, "status_sign_in_failures", "login")
    attacker = client_from(app, ATTACKER)
    with caplog.at_level(logging.WARNING, logger="connector.status.throttle"):
        for _ in range(5):
            assert log_in(attacker, "wrong guess").status_code == 401
    refused = log_in(attacker, "wrong guess")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert log_in(attacker, PASSWORD).status_code == 429  # not even the right one, from there, for now
    assert log_in(client_from(app, OPERATOR_DESK), PASSWORD).status_code == 302
    assert metric(app, "status_sign_in_failures", "login") - before == 5
    assert metric(app, "status_sign_in_throttled", "login") >= 2
    assert ATTACKER in caplog.text and "wrong guess" not in caplog.text


def test_http_basic_guesses_are_limited_too_and_a_success_resets_the_count(app):
    scripts = client_from(app, ATTACKER)
    for _ in range(4):
        assert scripts.get("/api/stats", headers=basic("nope")).status_code == 401
    assert scripts.get("/api/stats", headers=basic(PASSWORD)).status_code == 200  # resets this address
    for _ in range(5):
        assert scripts.get("/api/stats", headers=basic("nope")).status_code == 401
    refused = scripts.get("/api/stats", headers=basic("nope"))
    assert refused.status_code == 429 and refused.json["error"] == "too many attempts"
    assert refused.headers["Retry-After"]


def test_a_viewer_sees_everything_and_cannot_replay_even_with_a_valid_csrf_token(app):
    viewer = client_from(app, OPERATOR_DESK)
    assert log_in(viewer, VIEWER).status_code == 302
    page = viewer.get("/status/events/1")
    assert page.status_code == 200 and "harriet.quill@example.com" in page.text
    assert "replay-delivery" not in page.text  # no button that would only be refused
    token = csrf_from(viewer.get("/status/login").text if "csrf_token" not in page.text else page.text)
    assert viewer.post("/status/events/1/replay", data={"csrf_token": token}).status_code == 403
    assert viewer.post("/status/deliveries/1/replay", data={"csrf_token": token}).status_code == 403
    assert viewer.get("/status/replay?state=delivered").status_code == 403
    scripts = client_from(app, OPERATOR_DESK)
    assert scripts.get("/api/events/1", headers=basic(VIEWER, "viewer")).status_code == 200
    assert scripts.post("/api/events/1/replay", headers=basic(VIEWER, "viewer")).status_code == 403
    assert scripts.post("/api/replay", json={"state": "delivered"}, headers=basic(VIEWER, "viewer")).status_code == 403


def test_every_sign_in_and_replay_names_its_user_in_the_audit_log(app):
    operator = client_from(app, OPERATOR_DESK)
    assert log_in(client_from(app, ATTACKER), "wrong").status_code == 401
    assert log_in(operator, PASSWORD).status_code == 302
    token = csrf_from(operator.get("/status/events/1").text)
    assert operator.post("/status/events/1/replay", data={"csrf_token": token}).status_code == 302
    scripts = client_from(app, OPERATOR_DESK)
    assert scripts.post("/api/deliveries/1/replay", headers=basic(PASSWORD)).status_code == 200

    entries = operator.get("/api/audit").json["entries"]
    assert [(e["action"], e["user"], e["address"]) for e in reversed(entries)] == [
        ("sign_in_failed", "?", ATTACKER), ("sign_in", "admin", OPERATOR_DESK),
        ("replay", "admin", OPERATOR_DESK), ("replay", "admin", OPERATOR_DESK)]
    assert entries[1]["detail"]["what"] == "event 1" and entries[0]["detail"]["what"] == "delivery 1"
    assert PASSWORD not in json.dumps(entries) and "wrong" not in json.dumps(entries)
    page = operator.get("/status/audit").text
    assert page.count('data-action="replay"') == 2 and ATTACKER in page
    assert f"admin ({OPERATOR_DESK})" in operator.get("/status/events/1").text  # who replayed, on the event


def test_no_secret_is_kept_in_the_ledger_or_shown_on_an_error_page(app, monkeypatch):
    engine = app.extensions[EXTENSION_KEY].engine
    with engine.connect() as connection:
        headers = connection.execute(sa.text("SELECT headers FROM events")).scalars().all()
        requests = connection.execute(sa.text("SELECT requests FROM delivery_attempts")).scalars().all()
    stored = json.dumps([str(h) for h in headers] + [str(r) for r in requests])
    assert SECRET not in stored and SECRET.removeprefix("whsec_") not in stored
    assert "authorization" not in stored.lower() and "bearer" not in stored.lower()

    from connector.status import queries

    def broken(*args, **kwargs):
        raise RuntimeError(f"the ledger fell over while holding {PASSWORD}")

    monkeypatch.setattr(queries, "stats", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    operator = client_from(app, OPERATOR_DESK)
    log_in(operator, PASSWORD)
    failed = operator.get("/status")
    assert failed.status_code == 500
    assert PASSWORD not in failed.text and VIEWER not in failed.text and SECRET not in failed.text


def test_a_viewer_password_without_an_admin_password_is_refused_at_load_time(db_url):
    from connector.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"database": {"url": db_url}, "status": {"viewer_password": "${VIEWER}"}},
                              environ={"VIEWER": VIEWER})
    assert "viewer_password is set without admin_password" in str(caught.value)
    assert VIEWER not in str(caught.value)
