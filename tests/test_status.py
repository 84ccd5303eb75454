"""The status page and its JSON API through the Flask test client: auth, CSRF, filters,
keyset pagination, escaping, replay."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import flask
import pytest
import sqlalchemy as sa

from connector import create_app
from connector.config import settings_from_mapping
from connector.ledger.migrate import upgrade
from connector.ledger.models import utcnow
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from connector.worker.runner import Worker
from tests.crm import PROJECT_ROOT
from tests.signing import SECRET, signed_headers

PASSWORD = "correct horse battery staple"


def build_app(db_url: str, password: str | None = PASSWORD):
    settings = settings_from_mapping({
        "database": {"url": db_url},
        "receiver": {"secrets": [SECRET]},
        "destinations": {"hubspot": {"type": "hubspot", "portal_id": "4242"}, "salesforce": {"type": "salesforce"}},
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        "status": {"admin_password": "${ADMIN}"},
    }, environ={"ADMIN": password} if password else {})
    app = create_app(settings)
    app.config["TESTING"] = True
    upgrade(app.extensions[EXTENSION_KEY].engine)
    return app


def post_event(client, body: bytes, message_id: str):
    return client.post("/webhooks/okendo", data=body, headers=signed_headers(body, message_id))


def drain(app) -> None:
    rt = app.extensions[EXTENSION_KEY]
    worker = Worker(rt.settings, rt.mappings, rt.engine, prune_enabled=False)
    while worker.run_once():
        pass


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(client) -> None:
    token = csrf_from(client.get("/status/login").text)
    response = client.post("/status/login", data={"password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302


@pytest.fixture
def app(db_url):
    app = build_app(db_url)
    yield app
    app.extensions[EXTENSION_KEY].engine.dispose()


@pytest.fixture
def seeded(app):
    client = app.test_client()
    for name in ("review.create", "review.update", "loyalty_customer.create", "survey_response.create"):
        assert post_event(client, sample_bytes(name), f"msg-{name}").status_code == 202
    drain(app)
    return app


def sql(app, statement: str, **params):
    with app.extensions[EXTENSION_KEY].engine.begin() as connection:
        return connection.execute(sa.text(statement), params)


# --- authentication and CSRF --------------------------------------------------------------


def test_pages_and_api_require_authentication(app):
    client = app.test_client()
    page = client.get("/status/events")
    assert page.status_code == 302 and page.headers["Location"].startswith("/status/login")
    api = client.get("/api/stats")
    assert api.status_code == 401 and api.headers["WWW-Authenticate"].startswith("Basic")
    assert client.post("/api/replay", json={"state": "dead"}).status_code == 401


def test_a_wrong_password_is_refused_and_the_right_one_signs_in(app):
    client = app.test_client()
    token = csrf_from(client.get("/status/login").text)
    wrong = client.post("/status/login", data={"password": "nope", "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong password." in wrong.text
    sign_in(client)
    assert client.get("/status").status_code == 200


def test_the_api_takes_http_basic_with_the_admin_password(app):
    client = app.test_client()
    good = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    bad = base64.b64encode(b"admin:guess").decode()
    assert client.get("/api/stats", headers={"Authorization": f"Basic {good}"}).status_code == 200
    assert client.get("/api/stats", headers={"Authorization": f"Basic {bad}"}).status_code == 401


def test_without_a_password_only_loopback_is_served_and_the_page_says_so(sqlite_url):
    app = build_app(sqlite_url, password=None)
    local = app.test_client().get("/status")
    assert local.status_code == 200 and "only answers" in local.text and "CONNECTOR_ADMIN_PASSWORD" in local.text
    remote = app.test_client().get("/status", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 403
    assert app.test_client().get("/api/stats", environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 403


def test_a_post_without_the_csrf_token_is_refused(seeded):
    client = seeded.test_client()
    sign_in(client)
    refused = client.post("/status/events/1/replay")
    assert refused.status_code == 400 and "CSRF" in refused.text
    api_refused = client.post("/api/events/1/replay")  # a session-authenticated API call needs it too
    assert api_refused.status_code == 400
    token = csrf_from(client.get("/status/events/1").text)
    accepted = client.post("/status/events/1/replay", data={"csrf_token": token})
    assert accepted.status_code == 302
    assert sql(seeded, "SELECT count(*) FROM deliveries WHERE event_id = 1 AND state = 'pending'").scalar_one() == 4


# --- what the pages show ------------------------------------------------------------------------


def test_overview_counts_per_state_destination_and_topic(seeded):
    client = seeded.test_client()
    sign_in(client)
    page = client.get("/status").text
    # review.create waited beside its update: superseded (stale), only the update's state was sent.
    assert re.search(r'data-destination="hubspot">.*?data-state="delivered"><a[^>]*>5</a>', page, re.S)
    assert re.search(r'<td[^>]*>hubspot <span class="state">dry-run</span></td>', page)  # no credentials: runs dry
    stats = client.get("/api/stats").get_json()
    assert stats["deliveries_by_destination"]["hubspot"] == {"delivered": 5, "stale": 2} or \
        sum(stats["deliveries_by_destination"]["hubspot"].values()) == 7
    assert stats["events_by_state"] == {"planned": 4}
    assert sum(minute["events"] for minute in stats["per_minute"]) == 4
    assert stats["queue_depth"] == 0
    assert stats["deliveries_by_topic"]["survey_response.create"] == {"delivered": 4}


def test_review_html_is_shown_escaped(app):
    client = app.test_client()
    document = json.loads(sample_bytes("review.create"))
    document["resource"]["body"] = '<script>window.pwned = 1</script><img src=x onerror="alert(1)">'
    post_event(client, json.dumps(document).encode(), "msg-xss")
    drain(app)
    sign_in(client)
    page = client.get("/status/events/1").text
    assert "<script>window.pwned" not in page and '<img src=x onerror' not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page


def test_event_detail_shows_deliveries_attempts_operations_and_record_links(seeded):
    sql(seeded, "UPDATE deliveries SET crm_record_id = '901' WHERE mapping = 'hubspot_contact_from_review'")
    client = seeded.test_client()
    sign_in(client)
    page = client.get("/status/events/2").text  # review.update: the create before it was superseded
    assert "hubspot_review_note" in page and "salesforce_review" in page
    assert "https://app.hubspot.com/contacts/4242/record/0-1/901" in page
    assert "/crm/v3/objects/contacts/batch/upsert" in page  # the (dry-run) request of the attempt
    assert "superseded by sequence" in client.get("/status/events/1").text
    detail = client.get("/api/events/2").get_json()
    assert [d["mapping"] for d in detail["deliveries"]][:2] == ["hubspot_contact_from_review", "hubspot_review_note"]
    assert detail["deliveries"][0]["attempts"][0]["outcome"] == "delivered"
    assert {o["mapping"] for o in detail["operations"]} >= {"hubspot_contact_from_review", "salesforce_review"}


def test_filters(seeded):
    sql(seeded, "UPDATE deliveries SET state = 'dead', last_error = 'boom' WHERE mapping = 'salesforce_review' "
                "AND event_id = 2")
    client = seeded.test_client()
    sign_in(client)

    def ids(**args):
        return [e["id"] for e in client.get("/api/events", query_string=args).get_json()["events"]]

    assert ids() == [4, 3, 2, 1]
    assert ids(state="dead") == [2]
    assert ids(state="dead", destination="hubspot") == []
    assert ids(topic="review") == [2, 1] and ids(topic="review.update") == [2]
    assert ids(text="omar.lindqvist@example.org") == [4]
    assert ids(text="30087cea-f3ab-40c4-9bf9-dd72e8285b6d") == [2, 1]
    assert ids(since=(utcnow() + timedelta(minutes=1)).isoformat()) == []
    assert client.get("/status/events?state=bogus").status_code == 400
    assert 'data-event-id="2"' in client.get("/status/events?state=dead").text


def test_keyset_pagination_walks_every_event_once(app):
    client = app.test_client()
    for i in range(120):
        document = json.loads(sample_bytes("review.create"))
        document["resource"]["reviewId"] = f"r-{i}"
        post_event(client, json.dumps(document).encode(), f"msg-page-{i}")
    sign_in(client)
    seen, url = [], "/api/events"
    while url:
        page = client.get(url).get_json()
        seen.extend(e["id"] for e in page["events"])
        url = page["next"]
    assert seen == list(range(120, 0, -1))
    html = client.get("/status/events").text
    assert html.count("data-event-id=") == 50 and 'data-test="next-page"' in html


# --- replay ------------------------------------------------------------------------------------------


def test_bulk_replay_shows_the_count_then_replays_on_confirmation(seeded):
    sql(seeded, "UPDATE deliveries SET state = 'dead' WHERE destination = 'salesforce'")
    client = seeded.test_client()
    sign_in(client)
    confirm = client.get("/status/replay?state=dead")
    assert re.search(r'data-test="replay-count"><strong>7</strong>', confirm.text)
    assert sql(seeded, "SELECT count(*) FROM deliveries WHERE state = 'dead'").scalar_one() == 7  # nothing yet
    done = client.post("/status/replay", data={"state": "dead", "confirm": "yes", "csrf_token": csrf_from(confirm.text)})
    assert done.status_code == 302
    assert sql(seeded, "SELECT count(*) FROM deliveries WHERE state = 'pending' AND replayed_by LIKE 'admin (%'"
               ).scalar_one() == 7


def test_rows_a_worker_holds_are_not_replayed(seeded):
    future = utcnow() + timedelta(minutes=5)
    sql(seeded, "UPDATE deliveries SET state = 'retrying', lease_owner = 'w1', lease_expires_at = :t WHERE id = 1",
        t=future)
    client = seeded.test_client()
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
    held = client.post("/api/deliveries/1/replay", headers=basic)
    assert held.status_code == 409 and held.get_json() == {"replayed": 0, "held_by_a_worker": 1}
    preview = client.post("/api/replay", json={"state": "retrying", "dry_run": True}, headers=basic).get_json()
    assert preview == {"would_replay": 0, "held_by_a_worker": 1}
    sign_in(client)
    page = client.get("/status/events/1").text
    assert re.search(r'<button type="submit" class="secondary" disabled', page)


def test_a_replayed_dead_delivery_is_delivered_again_and_an_older_one_ends_stale(seeded):
    survey = sql(seeded, "SELECT min(id) FROM deliveries WHERE event_id = 4").scalar_one()
    older = sql(seeded, "SELECT min(id) FROM deliveries WHERE event_id = 1").scalar_one()  # review.create
    sql(seeded, "UPDATE deliveries SET state = 'dead', last_error = 'x' WHERE id IN (:a, :b)", a=survey, b=older)
    client = seeded.test_client()
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
    for delivery_id in (survey, older):
        assert client.post(f"/api/deliveries/{delivery_id}/replay", headers=basic).get_json() == {
            "replayed": 1, "held_by_a_worker": 0}
    drain(seeded)
    assert sql(seeded, "SELECT state FROM deliveries WHERE id = :i", i=survey).scalar_one() == "delivered"
    # Its review was updated since: replaying the create cannot overwrite the newer state.
    assert sql(seeded, "SELECT state FROM deliveries WHERE id = :i", i=older).scalar_one() == "stale"


# --- staying fast at a million events -----------------------------------------------------------------


@pytest.mark.parametrize("args", [{}, {"state": "planned"}, {"state": "dead"}, {"state": "dead", "destination": "hubspot"},
                                  {"topic": "review.create"}, {"text": "a@example.com"}, {"before": "500"}])
def test_every_list_query_uses_an_index(sqlite_url, args):
    """No filter of the event list scans the events table: SQLite's query plan names an index."""
    from connector.status import queries
    from connector.status.views import event_filter

    app = build_app(sqlite_url)
    engine = app.extensions[EXTENSION_KEY].engine
    plans: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def capture(connection, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT"):
            plans.append("\n".join(row[3] for row in cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)))

    with app.test_request_context(query_string=args), engine.connect() as connection:
        queries.list_events(connection, event_filter(flask.request.args))
    assert plans
    for plan in plans:
        # Never a sort of the whole table (sorting the few rows an index found is fine).
        assert not ("TEMP B-TREE" in plan and re.search(r"\bSCAN (events|deliveries)\b", plan)), plan
        if args and set(args) != {"before"}:
            # A filter is answered from an index, not by reading rows until enough match.
            assert not re.search(r"\bSCAN (events|deliveries)\b(?! USING)", plan), plan
        # Unfiltered: a walk down the rowid from the newest event, stopped by LIMIT.


def test_bulk_replay_acts_on_exactly_what_the_filtered_list_shows(seeded):
    client = seeded.test_client()
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
    listed = client.get("/api/events", query_string={"text": "msg-review.update"}, headers=basic).get_json()["events"]
    assert [e["id"] for e in listed] == [2]  # found by its message id
    preview = client.post("/api/replay", json={"text": "msg-review.update", "dry_run": True}, headers=basic).get_json()
    assert preview == {"would_replay": 4, "held_by_a_worker": 0}  # that event's four deliveries
