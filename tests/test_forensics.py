"""Failure forensics: every attempt keeps what it sent and what the CRM answered (issue 14).

The real client libraries talk to both emulators over real sockets; the worker stores each attempt
in the ledger (SQLite, and PostgreSQL when TEST_DATABASE_URL is set); the assertions read the
stored attempts, as the status page and the JSON API do.
"""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
import sqlalchemy as sa
from markupsafe import escape

from connector import create_app
from connector.config import settings_from_mapping
from connector.destinations.error_codes import advice
from connector.ledger.migrate import upgrade
from connector.runtime import EXTENSION_KEY
from tests.crm import PROJECT_ROOT
from tests.test_batch_isolation import BAD, GOOD, review
from tests.test_worker import delivery, drain, ingest, ledger, make_settings  # noqa: F401

HUBSPOT_CONTACT = "hubspot_contact_from_review"
SALESFORCE_CONTACT = "salesforce_contact_from_review"


def stored_attempts(engine: sa.Engine, delivery_id: int) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT outcome, http_status, error, requests FROM delivery_attempts WHERE delivery_id = :d "
            "ORDER BY id"), {"d": delivery_id}).all()
    return [{"outcome": outcome, "http_status": status, "error": error,
             "requests": requests if isinstance(requests, list) else json.loads(requests or "[]")}
            for outcome, status, error, requests in rows]


def only_request(engine: sa.Engine, mapping: str, event_id: int) -> tuple[dict, dict]:
    """The one attempt of a delivery, and the one request it sent."""
    [attempt] = stored_attempts(engine, delivery(engine, mapping, event_id).id)
    [sent] = attempt["requests"]
    return attempt, sent


def test_failed_attempts_carry_request_and_response(ledger, crms):
    settings, engine = ledger
    good = ingest(engine, review("review-good", GOOD, 100))
    bad = ingest(engine, review("review-bad", BAD, 101))
    drain(settings, engine)

    # HubSpot refused the bad shopper's contact with a 400 for its own batch (the good one landed).
    attempt, sent = only_request(engine, HUBSPOT_CONTACT, bad)
    assert attempt["outcome"] == "dead" and attempt["http_status"] == 400
    assert sent["method"] == "POST" and sent["path"] == "/crm/v3/objects/contacts/batch/upsert"
    assert [item["id"] for item in sent["body"]["inputs"]] == [BAD]
    answer = sent["response"]
    assert answer["status"] == 400 and answer["truncated"] is False
    assert answer["body"]["category"] == "VALIDATION_ERROR"
    # The headers that matter, and only those.
    assert set(answer["headers"]) >= {"X-HubSpot-Correlation-Id", "X-HubSpot-RateLimit-Remaining",
                                      "X-HubSpot-RateLimit-Daily-Remaining"}
    assert answer["headers"]["X-HubSpot-Correlation-Id"] == answer["body"]["correlationId"]
    assert not {"Content-Type", "Content-Length", "Date", "Server"} & set(answer["headers"])
    # The CRM's error, parsed per field.
    assert [(e["record"], e["field"], e["code"]) for e in answer["errors"]] == [(BAD, "email", "INVALID_EMAIL")]

    # Salesforce answered 200 for the collection and failed the bad record inside it.
    attempt, sent = only_request(engine, SALESFORCE_CONTACT, bad)
    assert attempt["outcome"] == "dead"
    assert sent["method"] == "POST" and sent["path"].endswith("/composite/sobjects")
    assert [record["Email"] for record in sent["body"]["records"]] == [BAD]
    answer = sent["response"]
    assert answer["status"] == 200 and answer["headers"]["Sforce-Limit-Info"].startswith("api-usage=")
    [own] = answer["body"]
    assert own["success"] is False
    assert [(e["field"], e["code"]) for e in answer["errors"]] == [("Email", "INVALID_EMAIL_ADDRESS")]

    # Each delivery keeps its own share: never the other shopper's email, error or answer.
    for mapping in (HUBSPOT_CONTACT, SALESFORCE_CONTACT):
        good_attempt, good_sent = only_request(engine, mapping, good)
        assert good_attempt["outcome"] == "delivered" and good_sent["response"]["status"] == 200
        assert BAD not in json.dumps(good_attempt, ensure_ascii=False)
        bad_attempt, _ = only_request(engine, mapping, bad)
        assert GOOD not in json.dumps(bad_attempt, ensure_ascii=False)
    # Nothing that authenticates a call is kept.
    with engine.connect() as connection:
        everything = json.dumps([str(r) for r in connection.execute(sa.text(
            "SELECT requests FROM delivery_attempts")).scalars()])
    assert "test-token" not in everything and "00Dtest!token" not in everything
    assert "authorization" not in everything.lower()


# --- the event page and the JSON API --------------------------------------------------------------

PASSWORD, VIEWER = "forensics-admin-pw", "forensics-viewer-pw"


@pytest.fixture
def site(db_url, crms, monkeypatch):
    """The app on the ledger the worker writes to, both destinations pointing at the emulators."""
    monkeypatch.setenv("ADMIN_PW", PASSWORD)
    monkeypatch.setenv("VIEWER_PW", VIEWER)
    settings = settings_from_mapping({
        **make_settings(db_url, crms).model_dump(include={"database", "worker"}),
        "destinations": crms.destinations(),
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        "status": {"admin_password": "${ADMIN_PW}", "viewer_password": "${VIEWER_PW}"},
    })
    app = create_app(settings)
    app.config["TESTING"] = True
    engine = app.extensions[EXTENSION_KEY].engine
    upgrade(engine)
    yield app, settings, engine
    engine.dispose()


def signed_in(app, password: str):
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/status/login").text).group(1)
    assert client.post("/status/login", data={"password": password, "csrf_token": token}).status_code == 302
    return client


def section(page: str, mapping: str) -> str:
    """The attempts of one delivery on the event page."""
    match = re.search(rf'<section class="delivery"[^>]*data-mapping="{mapping}">(.*?)</section>', page, re.S)
    assert match, f"no attempts section for {mapping}"
    return match.group(1)


def blocks(html: str, test: str) -> list[str]:
    """The text of each <pre data-test=...> as a reader sees it (entities decoded)."""
    return [unescape(text) for text in re.findall(rf'<pre class="json" data-test="{test}">(.*?)</pre>', html, re.S)]


def test_the_event_page_shows_what_was_sent_and_answered_readably_with_what_to_do(site):
    app, settings, engine = site
    bad = ingest(engine, review("review-bad", BAD, 101))
    drain(settings, engine)
    page = signed_in(app, PASSWORD).get(f"/status/events/{bad}").text

    hubspot = section(page, HUBSPOT_CONTACT)
    assert "POST</span> <span class=\"mono\">/crm/v3/objects/contacts/batch/upsert" in hubspot
    assert 'data-test="response-status">HTTP 400<' in hubspot and "<dt>X-HubSpot-Correlation-Id</dt>" in hubspot
    # The request as indented JSON, not one escaped line.
    [sent] = blocks(hubspot, "request-body")
    assert json.loads(sent)["inputs"][0]["id"] == BAD and '\n  "inputs": [' in sent
    # HubSpot's message holds JSON in a text: the page lays it out instead of showing \" escapes.
    [answer] = blocks(hubspot, "response-body")
    assert '\\"' not in answer and '"message (as JSON)": [' in answer
    # Each error of the CRM on a line of its own, with what the operator should do about it.
    do = advice("hubspot", "INVALID_EMAIL").do
    [line] = re.findall(r"<li>(.*?)</li>", section(page, HUBSPOT_CONTACT), re.S)
    assert "email" in line and "INVALID_EMAIL" in line and f"What to do:</strong> {escape(do)}" in line
    salesforce = section(page, SALESFORCE_CONTACT)
    assert "INVALID_EMAIL_ADDRESS" in salesforce
    assert escape(advice("salesforce", "INVALID_EMAIL_ADDRESS").do) in salesforce
    # The replay buttons sit in the action bar at the top (status.css keeps it in view).
    bar = re.search(r'<div class="actions" data-test="actions">(.*?)\n</div>', page, re.S).group(1)
    assert 'data-test="replay-event"' in bar and f"Replay {HUBSPOT_CONTACT}" in bar

    # The JSON twin carries the same answers, and the advice with each error.
    detail = signed_in(app, PASSWORD).get(f"/api/events/{bad}").get_json()
    [contact] = [d for d in detail["deliveries"] if d["mapping"] == HUBSPOT_CONTACT]
    [error] = contact["attempts"][0]["requests"][0]["response"]["errors"]
    assert error["code"] == "INVALID_EMAIL" and error["advice"]["do"] == do

    # A viewer sees the same forensics, and no button that would only be refused.
    viewed = signed_in(app, VIEWER).get(f"/status/events/{bad}").text
    assert 'data-test="field-errors"' in viewed and "replay-event" not in viewed and "bar-replay" not in viewed


# --- the error-code table -------------------------------------------------------------------------

DOCUMENTED_CODES = {
    "hubspot": ["PROPERTY_DOESNT_EXIST", "INVALID_EMAIL", "VALIDATION_ERROR", "OBJECT_NOT_FOUND", "RATE_LIMITS",
                "INVALID_AUTHENTICATION", "MISSING_SCOPES", "CONFLICT", "TEN_SECONDLY_ROLLING", "DAILY"],
    "salesforce": ["INVALID_FIELD", "REQUIRED_FIELD_MISSING", "STRING_TOO_LONG", "INVALID_EMAIL_ADDRESS",
                   "DUPLICATE_VALUE", "DUPLICATES_DETECTED", "MALFORMED_ID", "INVALID_CROSS_REFERENCE_KEY",
                   "NOT_FOUND", "INVALID_TYPE", "INVALID_SESSION_ID", "REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW",
                   "FIELD_CUSTOM_VALIDATION_EXCEPTION"],
}


def test_every_documented_error_code_says_what_to_do():
    for kind, codes in DOCUMENTED_CODES.items():
        for code in codes:
            found = advice(kind, code)
            assert found is not None and found.do and found.means, f"{kind} {code} has no advice"
    assert "connector setup hubspot" in advice("hubspot", "PROPERTY_DOESNT_EXIST").do
    assert advice("hubspot", "NO_SUCH_CODE") is None and advice("salesforce", None) is None


def test_a_broken_error_code_table_names_the_file_and_the_key(tmp_path):
    from connector.destinations.error_codes import load

    table = tmp_path / "error_codes.yaml"
    table.write_text("hubspot:\n  INVALID_EMAIL:\n    means: 'an email HubSpot refuses'\n")
    with pytest.raises(ValueError, match=r"error_codes\.yaml: hubspot\.INVALID_EMAIL needs a `means` and a `do`"):
        load(table)
    table.write_text("hubspot:\n  INVALID_EMAIL:\n    means: it says: this\n")
    with pytest.raises(ValueError, match=r"error_codes\.yaml: not valid YAML"):
        load(table)


# --- when a failure's share of the call cannot be told apart --------------------------------------


def test_a_failed_lookup_for_a_batch_keeps_the_call_and_its_error_but_no_other_shoppers_data(ledger, crms):
    settings, engine = ledger
    shoppers = ["ada.lovelace@example.com", "grace.hopper@example.com"]
    events = [ingest(engine, review(f"review-{n}", email, 100 + n)) for n, email in enumerate(shoppers)]
    crms.salesforce.fail_server_error(times=20, path="/query")  # the Contacts are looked up by email first
    drain(settings, engine, rounds=3)

    for event_id, email in zip(events, shoppers):
        attempt, sent = only_request(engine, SALESFORCE_CONTACT, event_id)
        assert attempt["outcome"] == "retry" and attempt["http_status"] == 500
        assert sent["method"] == "GET" and sent["path"].endswith("/query/") and "?" not in sent["path"]
        assert sent["response"]["status"] == 500 and sent["response"]["body"][0]["errorCode"] == "UNKNOWN_EXCEPTION"
        other = next(o for o in shoppers if o != email)
        assert other not in json.dumps(attempt) and email not in json.dumps(sent)
