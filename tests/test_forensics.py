"""Failure forensics: every attempt keeps what it sent and what the CRM answered (issue 14).

The real client libraries talk to both emulators over real sockets; the worker stores each attempt
in the ledger (SQLite, and PostgreSQL when TEST_DATABASE_URL is set); the assertions read the
stored attempts, as the status page and the JSON API do.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from tests.test_batch_isolation import BAD, GOOD, review
from tests.test_worker import delivery, drain, ingest, ledger  # noqa: F401

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
