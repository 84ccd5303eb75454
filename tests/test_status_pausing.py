"""Pausing and resuming a destination from the status page and the API (issue 14): operators only,
with CSRF on the page, written in the audit log; the overview says who paused it, why and since when."""

from __future__ import annotations

import sqlalchemy as sa

from connector.runtime import EXTENSION_KEY
from connector.worker import pausing
from tests.test_status import PASSWORD, csrf_from
from tests.test_status_access import VIEWER, app, basic, client_from, log_in  # noqa: F401

DESK = "198.51.100.7"


def paused_now(app) -> dict[str, pausing.Pause]:
    with app.extensions[EXTENSION_KEY].engine.connect() as connection:
        return pausing.paused(connection)


def audit_actions(app) -> list[tuple[str, str]]:
    with app.extensions[EXTENSION_KEY].engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(
            "SELECT action, \"user\" FROM audit_log WHERE action IN ('pause', 'resume') ORDER BY id"))]


def test_an_operator_pauses_and_resumes_from_the_overview(app):
    client = client_from(app, DESK)
    log_in(client, PASSWORD)
    page = client.get("/status/").text
    assert 'data-paused="no" data-destination="hubspot"' in page and 'data-test="pause-button"' in page

    token = csrf_from(page)
    response = client.post("/status/destinations/hubspot/pause",
                           data={"reason": "HubSpot portal  migration\ntonight", "csrf_token": token})
    assert response.status_code == 302
    pause = paused_now(app)["hubspot"]
    assert pause.reason == "HubSpot portal migration tonight" and pause.by == f"admin ({DESK})"
    page = client.get("/status/").text
    assert 'data-paused="yes" data-destination="hubspot"' in page
    assert "HubSpot portal migration tonight" in page and f"by admin ({DESK}) since" in page
    assert "hubspot is paused (admin (198.51.100.7)): HubSpot portal migration tonight" in page  # the warning
    assert 'data-test="resume"' in page

    response = client.post("/status/destinations/hubspot/resume", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302 and paused_now(app) == {}
    assert "resumed" in client.get("/status/").text
    assert audit_actions(app) == [("pause", "admin"), ("resume", "admin")]


def test_a_pause_without_the_csrf_token_is_refused(app):
    client = client_from(app, DESK)
    log_in(client, PASSWORD)
    assert client.post("/status/destinations/hubspot/pause", data={"reason": "x"}).status_code == 400
    assert paused_now(app) == {}


def test_a_viewer_sees_a_pause_but_cannot_pause_or_resume(app):
    pausing.pause(app.extensions[EXTENSION_KEY].engine, "salesforce", "sandbox refresh", "ops")
    client = client_from(app, DESK)
    log_in(client, VIEWER)
    page = client.get("/status/").text
    assert "sandbox refresh" in page and 'data-test="resume"' not in page and 'data-test="pause-button"' not in page
    token = csrf_from(page)
    assert client.post("/status/destinations/salesforce/resume", data={"csrf_token": token}).status_code == 403
    api = client_from(app, DESK)  # no session: HTTP Basic, as a script calls it
    assert api.post("/api/destinations/hubspot/pause", headers=basic(VIEWER, "viewer")).status_code == 403
    assert set(paused_now(app)) == {"salesforce"}


def test_the_api_pauses_and_resumes_for_an_operator(app):
    client = client_from(app, DESK)
    response = client.post("/api/destinations/hubspot/pause", json={"reason": "rate limit dispute"},
                           headers=basic(PASSWORD))
    assert response.status_code == 200 and response.json == {"destination": "hubspot", "paused": True,
                                                             "changed": True}
    again = client.post("/api/destinations/hubspot/pause", json={}, headers=basic(PASSWORD))
    assert again.json["changed"] is False and paused_now(app)["hubspot"].reason == "rate limit dispute"
    stats = client.get("/api/stats", headers=basic(PASSWORD)).json
    assert stats["destinations"]["hubspot"]["paused_reason"] == "rate limit dispute"
    assert client.post("/api/destinations/hubspot/resume", headers=basic(PASSWORD)).json["changed"] is True
    assert client.post("/api/destinations/nowhere/pause", headers=basic(PASSWORD)).status_code == 404
    assert paused_now(app) == {}
