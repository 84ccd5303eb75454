"""The real thing: gunicorn on a free port, real HTTP, several worker processes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from connector.ledger.database import normalize_url
from tests.servers import PROJECT_ROOT, gunicorn
from tests.signing import SECRET, sample_bytes, signed_headers


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    config = {
        "database": {"url": db_url},
        "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}", "max_body_bytes": 65536},
    }
    with gunicorn(tmp_path, config, env={"OKENDO_WEBHOOK_SECRETS": SECRET}) as running:
        engine = sa.create_engine(normalize_url(db_url))
        try:
            yield running.base_url, engine
        finally:
            engine.dispose()


def _messages(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT message_id FROM events ORDER BY id")).scalars())


def test_gunicorn_stores_acknowledges_and_deduplicates(server):
    base, engine = server
    body = sample_bytes("review.create")

    first = requests.post(f"{base}/webhooks/okendo", data=body, headers=signed_headers(body, "msg_g1"), timeout=5)
    again = requests.post(f"{base}/webhooks/okendo", data=body, headers=signed_headers(body, "msg_g1"), timeout=5)
    forged = requests.post(f"{base}/webhooks/okendo", data=body,
                           headers={**signed_headers(body, "msg_g2"), "webhook-signature": "v1,AAAA"}, timeout=5)

    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["event_id"] == first.json()["event_id"]
    assert forged.status_code == 401
    assert _messages(engine) == ["msg_g1"]


def test_gunicorn_refuses_oversize_bodies_declared_or_chunked(server):
    base, engine = server
    big = b'{"resource": {"body": "' + b"x" * 100_000 + b'"}}'

    declared = requests.post(f"{base}/webhooks/okendo", data=big, headers=signed_headers(big, "msg_big1"), timeout=5)
    # A generator body is sent with Transfer-Encoding: chunked, no Content-Length.
    chunked = requests.post(f"{base}/webhooks/okendo", data=(big[i:i + 8192] for i in range(0, len(big), 8192)),
                            headers=signed_headers(big, "msg_big2"), timeout=5)

    assert declared.status_code == 413
    assert chunked.status_code == 413
    assert _messages(engine) == []


def test_gunicorn_accepts_a_chunked_body_of_exactly_the_limit(server):
    base, engine = server
    head = b'{"resource": {"reviewId": "r-limit", "body": "'
    tail = b'"}, "resourceType": "review", "sequenceNumber": "7", "topic": "create"}'
    body = head + b"x" * (65536 - len(head) - len(tail)) + tail
    assert len(body) == 65536

    response = requests.post(f"{base}/webhooks/okendo", data=(body[i:i + 5000] for i in range(0, len(body), 5000)),
                             headers=signed_headers(body, "msg_limit"), timeout=5)

    assert response.status_code == 202
    assert _messages(engine) == ["msg_limit"]


def test_gunicorn_workers_racing_on_one_message_store_it_once(server):
    base, engine = server
    body = sample_bytes("loyalty_earning_transaction.create")
    headers = signed_headers(body, "msg_race_http")
    start = threading.Barrier(12)
    statuses: list[int] = []

    def deliver() -> None:
        start.wait()
        statuses.append(requests.post(f"{base}/webhooks/okendo", data=body, headers=headers, timeout=10).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 11 + [202]
    assert _messages(engine) == ["msg_race_http"]


def test_make_run_setup_delivers_in_dry_run_with_no_crm_credentials(tmp_path, monkeypatch):
    """What a newcomer gets: embedded delivery threads, destinations without credentials running dry."""
    for variable in ("HUBSPOT_ACCESS_TOKEN", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_CLIENT_ID"):
        monkeypatch.delenv(variable, raising=False)
    config = {
        "database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
        "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        "worker": {"poll_interval_s": 0.1},
    }
    with gunicorn(tmp_path, config, env={"OKENDO_WEBHOOK_SECRETS": SECRET}) as running:
        body = sample_bytes("review.create")
        assert requests.post(f"{running.base_url}/webhooks/okendo", data=body,
                             headers=signed_headers(body, "msg_dry"), timeout=5).status_code == 202
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
        deadline = time.monotonic() + 20
        while True:
            with engine.connect() as connection:
                rows = connection.execute(sa.text(
                    "SELECT d.mapping, d.state, a.requests FROM deliveries d "
                    "JOIN delivery_attempts a ON a.delivery_id = d.id ORDER BY d.id")).all()
            if len(rows) == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        engine.dispose()
    assert [(mapping, state) for mapping, state, _ in rows] == [
        ("hubspot_contact_from_review", "delivered"), ("hubspot_review_note", "delivered"),
        ("salesforce_contact_from_review", "delivered"), ("salesforce_review", "delivered")]
    first_request = json.loads(rows[0][2])[0] if isinstance(rows[0][2], str) else rows[0][2][0]
    assert first_request["dry_run"] is True and first_request["path"] == "/crm/v3/objects/contacts/batch/upsert"
