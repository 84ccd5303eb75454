"""POST /webhooks/okendo through the Flask test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import event_rows, make_app
from tests.ledger_locks import ledger_locked
from tests.signing import (
    OTHER_SECRET,
    SAMPLE_PATHS,
    SECRET,
    UNKNOWN_SECRET,
    raw_hmac_headers,
    sample_bytes,
    signed_headers,
)

URL = "/webhooks/okendo"

# sample -> (resource id, customer email as the ledger should index it)
EXPECTED_KEYS = {
    "review.create": ("30087cea-f3ab-40c4-9bf9-dd72e8285b6d", "harriet.quill@example.com"),
    "review.delete": ("30087cea-f3ab-40c4-9bf9-dd72e8285b6d", None),
    "loyalty_customer.delete": ("a824f9e1-543f-4355-b0c2-f9cbca993795", None),
    "loyalty_adjustment_transaction.delete": ("eab47bc5-eec6-4024-a195-16bebfaeea45", None),
    "survey_response.create": ("2a2d408e-bbf4-494a-b29b-08ae3914f1a7", "omar.lindqvist@example.org"),
}


def post(client, body: bytes, headers: dict[str, str]):
    return client.post(URL, data=body, headers=headers)


@pytest.mark.parametrize("family", ["webhook", "svix"])
@pytest.mark.parametrize("sample", SAMPLE_PATHS, ids=lambda path: path.stem)
def test_every_sample_is_verified_stored_and_acknowledged(client, ledger, sample, family):
    body = sample.read_bytes()
    envelope = json.loads(body)
    response = post(client, body, signed_headers(body, f"msg_{sample.stem}", family=family))

    assert response.status_code == 202, response.get_json()
    [row] = event_rows(ledger)
    assert response.get_json() == {"event_id": row.id, "state": "received"}
    assert row.message_id == f"msg_{sample.stem}"
    assert bytes(row.body) == body  # the exact bytes that were signed
    assert row.state == "received" and row.state_reason is None
    assert row.resource_type == envelope["resourceType"]
    assert row.topic == envelope["topic"]
    assert row.sequence_number == envelope["sequenceNumber"]
    assert row.verified_by_secret == 1
    assert row.webhook_timestamp is not None and row.received_at is not None
    headers = row.headers if isinstance(row.headers, dict) else json.loads(row.headers)
    assert headers[f"{family}-id"] == f"msg_{sample.stem}"
    if sample.stem in EXPECTED_KEYS:
        assert (row.resource_id, row.customer_email) == EXPECTED_KEYS[sample.stem]
    else:
        assert row.resource_id


def test_the_benchmarks_presigned_requests_are_each_stored_as_a_new_event(client, ledger):
    """`make bench` measures ingest with these requests: each must be a verified new event (202), never
    a redelivery or a 401, or the benchmark measures the wrong path."""
    from bench.signed import signed_requests

    requests = signed_requests(32, "t")
    answers = [post(client, body, headers).status_code for headers, body in requests]

    assert answers == [202] * 32
    rows = event_rows(ledger)
    assert len({row.resource_id for row in rows}) == 32
    assert len({row.customer_email for row in rows if row.customer_email}) == 2  # 16 topics per shopper


def test_redelivery_is_recorded_once_with_the_same_event_id(client, ledger):
    body = sample_bytes("review.create")
    first = post(client, body, signed_headers(body, "msg_dup"))
    # Svix signs each retry with a new timestamp; the message id stays.
    again = post(client, body, signed_headers(body, "msg_dup", age=timedelta(seconds=30)))

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json() == {"event_id": first.get_json()["event_id"], "duplicate": True}
    assert len(event_rows(ledger)) == 1


def test_same_message_posted_concurrently_is_stored_once(app, ledger):
    body = sample_bytes("loyalty_customer.create")
    headers = signed_headers(body, "msg_race")
    start = threading.Barrier(8)
    results: list[tuple[int, int]] = []

    def deliver() -> None:
        client = app.test_client()
        start.wait()
        response = client.post(URL, data=body, headers=headers)
        results.append((response.status_code, response.get_json()["event_id"]))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 7 + [202]
    assert len({event_id for _, event_id in results}) == 1
    assert len(event_rows(ledger)) == 1


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != name}


BODY = sample_bytes("review.create")


def _bad_requests():
    good = signed_headers(BODY, "msg_bad")
    yield "missing id", BODY, _without(good, "webhook-id"), "missing_headers"
    yield "missing timestamp", BODY, _without(good, "webhook-timestamp"), "missing_headers"
    yield "missing signature", BODY, _without(good, "webhook-signature"), "missing_headers"
    yield "no headers at all", BODY, {"content-type": "application/json"}, "missing_headers"
    yield "unknown secret", BODY, signed_headers(BODY, "msg_bad", secrets=(UNKNOWN_SECRET,)), "no_matching_signature"
    yield "tampered body", BODY.replace(b'"rating": 4', b'"rating": 5'), good, "no_matching_signature"
    yield "id not the signed one", BODY, {**good, "webhook-id": "msg_other"}, "no_matching_signature"
    yield "signature without comma", BODY, {**good, "webhook-signature": "garbage"}, "malformed_signature_header"
    yield "signature not base64", BODY, {**good, "webhook-signature": "v1,abc"}, "malformed_signature_header"
    yield "timestamp not a number", BODY, {**good, "webhook-timestamp": "yesterday"}, "malformed_timestamp"
    yield "timestamp too old", BODY, signed_headers(BODY, "msg_bad", age=timedelta(minutes=6)), "timestamp_too_old"
    yield "timestamp too new", BODY, signed_headers(BODY, "msg_bad", age=timedelta(minutes=-6)), "timestamp_too_new"
    latin1 = "Très bien".encode("latin-1")
    yield "signed body not UTF-8", latin1, raw_hmac_headers(latin1, "msg_bad"), "body_not_utf8"


BAD_REQUEST_NAMES = [case[0] for case in _bad_requests()]


@pytest.mark.parametrize("case", BAD_REQUEST_NAMES)
def test_every_verification_failure_is_401_and_stores_nothing(client, ledger, case, caplog):
    # Signed now, not at collection time: the signatures carry the current time.
    _, body, headers, reason = next(bad for bad in _bad_requests() if bad[0] == case)
    response = post(client, body, headers)

    assert response.status_code == 401
    assert response.get_json() == {"error": "signature verification failed", "reason": reason}
    assert event_rows(ledger) == []
    # Logged with its reason, and never with the secret or the body.
    assert reason in caplog.text
    assert SECRET not in caplog.text and "Harriet" not in caplog.text


def test_rotation_accepts_either_secret_and_a_header_with_both(db_url):
    app = make_app(db_url, secrets=[SECRET, OTHER_SECRET])
    client = app.test_client()
    body = sample_bytes("review.update")

    by_old = post(client, body, signed_headers(body, "msg_old", secrets=(SECRET,)))
    by_new = post(client, body, signed_headers(body, "msg_new", secrets=(OTHER_SECRET,)))
    # During rotation Svix sends one signature per secret, space-separated.
    by_both = post(client, body, signed_headers(body, "msg_both", secrets=(UNKNOWN_SECRET, OTHER_SECRET)))
    by_neither = post(client, body, signed_headers(body, "msg_neither", secrets=(UNKNOWN_SECRET,)))

    assert [r.status_code for r in (by_old, by_new, by_both, by_neither)] == [202, 202, 202, 401]
    engine = app.extensions["connector"].engine
    assert [(row.message_id, row.verified_by_secret) for row in event_rows(engine)] == [
        ("msg_old", 1),
        ("msg_new", 2),
        ("msg_both", 2),
    ]


def test_rotation_accepts_a_comma_separated_secret_list_from_the_environment(sqlite_url, monkeypatch):
    monkeypatch.setenv("OKENDO_WEBHOOK_SECRETS", f"{SECRET}, {OTHER_SECRET}")
    app = make_app(sqlite_url, secrets="${OKENDO_WEBHOOK_SECRETS}")
    body = sample_bytes("review.create")
    response = post(app.test_client(), body, signed_headers(body, "msg_env", secrets=(OTHER_SECRET,)))
    assert response.status_code == 202


def test_oversize_body_is_413_and_not_stored(db_url):
    app = make_app(db_url, max_body_bytes=4096)
    client = app.test_client()
    body = json.dumps({"resource": {"reviewId": "r", "body": "x" * 5000}, "resourceType": "review",
                       "sequenceNumber": "1", "topic": "create"}).encode()

    response = post(client, body, signed_headers(body, "msg_big"))

    assert response.status_code == 413
    assert response.get_json()["error"] == "body too large"
    assert event_rows(app.extensions["connector"].engine) == []


@pytest.mark.parametrize(
    "body,state,reason",
    [
        (b"this is not json", "invalid", "body is not JSON"),
        (b'["a", "list"]', "invalid", "body is a JSON list, expected an object"),
        (b'{"resourceType": "review", "topic": "create", "sequenceNumber": "1"}', "invalid",
         "envelope key(s) missing: resource"),
        (b'{"resource": {"reviewId": "r1"}, "resourceType": "review", "topic": "create", "sequenceNumber": "12a"}',
         "invalid", "sequenceNumber must be a string of at most 100 digits"),
        (b'{"resource": {}, "resourceType": "review", "topic": "create", "sequenceNumber": "1"}', "invalid",
         "resource.reviewId is missing"),
        (b'{"resource": {"quizResponseId": "q1"}, "resourceType": "quiz_response", "topic": "create", '
         b'"sequenceNumber": "1"}', "unsupported", "unknown resourceType 'quiz_response'"),
        (b'{"resource": {"reviewId": "r1"}, "resourceType": "review", "topic": "moderate", "sequenceNumber": "1"}',
         "unsupported", "unknown topic 'moderate' for review"),
        (b'{"resource": {"reviewId": "r1"}, "resourceType": "' + b"x" * 500 + b'", "topic": "create", '
         b'"sequenceNumber": "1"}', "invalid", "resourceType must be a string of at most 64 characters"),
    ],
    ids=["not-json", "json-list", "missing-resource", "bad-sequence", "missing-id", "unknown-type",
         "unknown-topic", "huge-type"],
)
def test_signed_but_unusable_bodies_are_kept_with_a_reason(client, ledger, body, state, reason):
    response = post(client, body, signed_headers(body, "msg_unusable"))

    assert response.status_code == 202  # acknowledged, so Svix does not retry it for a day
    [row] = event_rows(ledger)
    assert (row.state, bytes(row.body)) == (state, body)
    assert row.state_reason.startswith(reason)
    assert response.get_json() == {"event_id": row.id, "state": state}


def test_sequence_numbers_beyond_64_bits_are_stored_exactly(client, ledger):
    sequence = "123456789012345678901234567890123"  # 33 digits: larger than any int64
    body = json.dumps({"resource": {"reviewId": "r-big"}, "resourceType": "review",
                       "sequenceNumber": sequence, "topic": "update", "version": "2025-02-01"}).encode()
    assert post(client, body, signed_headers(body, "msg_seq")).status_code == 202
    [row] = event_rows(ledger)
    assert (row.state, row.sequence_number) == ("received", sequence)


def test_no_secret_configured_refuses_events_with_503(sqlite_url):
    app = make_app(sqlite_url, secrets=[])
    body = sample_bytes("review.create")
    response = post(app.test_client(), body, signed_headers(body, "msg_nosecret"))
    assert response.status_code == 503
    assert "OKENDO_WEBHOOK_SECRETS" in response.get_json()["hint"]
    assert event_rows(app.extensions["connector"].engine) == []


def test_insecure_dev_mode_accepts_unsigned_events_and_warns(sqlite_url, caplog):
    app = make_app(sqlite_url, secrets=[], insecure_dev_mode=True)
    assert "INSECURE DEVELOPMENT MODE" in caplog.text
    body = sample_bytes("review.create")
    response = post(app.test_client(), body, {"webhook-id": "msg_unsigned"})
    assert response.status_code == 202
    [row] = event_rows(app.extensions["connector"].engine)
    assert row.verified_by_secret is None


def test_sqlite_locked_past_the_bound_is_503_and_the_retry_succeeds(sqlite_url):
    app = make_app(sqlite_url, database={"busy_timeout_ms": 200})
    client = app.test_client()
    body = sample_bytes("review.create")
    blocker = sa.create_engine(sqlite_url, connect_args={"isolation_level": None})
    with blocker.connect() as connection:
        connection.exec_driver_sql("BEGIN EXCLUSIVE")
        locked = post(client, body, signed_headers(body, "msg_locked"))
        connection.exec_driver_sql("ROLLBACK")
    retried = post(client, body, signed_headers(body, "msg_locked"))

    assert locked.status_code == 503
    assert locked.headers["Retry-After"] == "5"
    assert retried.status_code == 202
    assert [row.message_id for row in event_rows(app.extensions["connector"].engine)] == ["msg_locked"]


@pytest.mark.postgres
def test_postgres_locked_past_the_bound_is_503_and_the_retry_succeeds(postgres_url):
    app = make_app(postgres_url, database={"busy_timeout_ms": 200})
    client = app.test_client()
    body = sample_bytes("review.create")
    engine = app.extensions["connector"].engine
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        locked = post(client, body, signed_headers(body, "msg_locked"))
        transaction.rollback()
    retried = post(client, body, signed_headers(body, "msg_locked"))

    assert locked.status_code == 503
    assert retried.status_code == 202
    assert [row.message_id for row in event_rows(engine)] == ["msg_locked"]


def test_a_locked_ledger_answers_every_webhook_503_with_retry_after_within_the_bound(db_url, caplog):
    # busy_timeout_ms stays 5000: one write may wait for the lock five times longer than the bound.
    app = make_app(db_url, answer_within_s=1)
    body = sample_bytes("review.create")
    answers: list[tuple[int, str | None, float]] = []

    def deliver(n: int) -> None:
        started = time.monotonic()
        response = post(app.test_client(), body, signed_headers(body, f"msg_locked_{n}"))
        answers.append((response.status_code, response.headers.get("Retry-After"), time.monotonic() - started))

    with ledger_locked(db_url):
        threads = [threading.Thread(target=deliver, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert [(status, retry_after) for status, retry_after, _ in answers] == [(503, "5")] * 8
    assert max(took for _, _, took in answers) < 1.0
    # The log names the event and why; never another event's id.
    [line] = [r.getMessage() for r in caplog.records if "msg_locked_3" in r.getMessage()]
    assert "answered 503 within the 1 s bound" in line and "msg_locked_2" not in line


def test_database_unreachable_is_503(tmp_path):
    # A PostgreSQL URL on a port where nothing listens: the event cannot be stored.
    from connector import create_app

    app = create_app({
        "database": {"url": "postgresql://postgres@127.0.0.1:9/none", "connect_timeout_s": 1},
        "receiver": {"secrets": [SECRET]},
    })
    body = sample_bytes("review.create")
    response = post(app.test_client(), body, signed_headers(body, "msg_down"))
    assert response.status_code == 503
    assert response.get_json() == {"error": "ledger unavailable, retry later"}


def test_answers_are_json_with_the_security_headers_whatever_the_outcome(client):
    body = sample_bytes("review.create")
    accepted = post(client, body, signed_headers(body, "msg_headers"))
    refused = post(client, body, {"webhook-id": "msg_unsigned"})
    for response in (accepted, refused):
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
    assert (accepted.status_code, refused.status_code) == (202, 401)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_other_methods_are_405_naming_post_and_store_nothing(client, app, method):
    response = client.open(URL, method=method, data=b"{}")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert event_rows(app.extensions["connector"].engine) == []


def test_a_malformed_content_length_reads_no_body_and_is_refused(client, app):
    body = sample_bytes("review.create")
    response = client.post(URL, data=body, headers={**signed_headers(body, "msg_bad_length")},
                           environ_overrides={"CONTENT_LENGTH": "12abc"})
    assert response.status_code == 401  # the signature was made over a body that did not arrive
    assert event_rows(app.extensions["connector"].engine) == []


def test_behind_a_listed_proxy_a_refused_webhook_logs_the_forwarded_client(sqlite_url, caplog):
    from connector import create_app
    from connector.ledger.migrate import upgrade

    app = create_app({"database": {"url": sqlite_url}, "receiver": {"secrets": [SECRET]},
                      "status": {"trusted_proxies": 1}})
    upgrade(app.extensions["connector"].engine)
    with caplog.at_level("WARNING", logger="connector.receiver.views"):
        response = app.test_client().post(URL, data=b"{}", headers={"webhook-id": "msg_fwd", "X-Forwarded-For": "203.0.113.9"},
                                          environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 401
    assert "from 203.0.113.9" in caplog.text
