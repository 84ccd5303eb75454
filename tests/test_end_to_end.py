"""End to end: a backlog of signed events posted over HTTP to gunicorn (with its embedded
delivery threads) drains into both CRM emulators with no loss, no duplicate and the newest
state of every resource.

The suite posts 1,000 events on each backend; `E2E_EVENTS=10000` runs the full-size check.
"""

from __future__ import annotations

import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import sqlalchemy as sa

from connector.ledger.database import normalize_url
from tests.crm import PROJECT_ROOT, crm_emulators
from tests.servers import gunicorn
from tests.signing import SECRET, signed_headers
from tests.workload import build_plan, work_left

EVENTS = int(os.environ.get("E2E_EVENTS", "1000"))
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"


def post_all(base_url: str, messages: list[tuple[str, bytes]]) -> tuple[dict[int, int], int]:
    """Post like Svix: 16 at a time, and a message that was not acknowledged is sent again
    (a new attempt, freshly signed). Returns the final statuses and how many retries it took."""
    statuses: dict[int, int] = {}
    retries = 0

    def post(chunk: list[tuple[str, bytes]]) -> tuple[list[int], int]:
        codes, again = [], 0
        with requests.Session() as session:
            for message_id, body in chunk:
                for attempt in range(10):
                    code = session.post(f"{base_url}/webhooks/okendo", data=body,
                                        headers=signed_headers(body, message_id), timeout=30).status_code
                    if code < 300:
                        break
                    again += 1
                    time.sleep(0.5)
                codes.append(code)
        return codes, again

    chunks = [messages[i::16] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        for codes, again in pool.map(post, chunks):
            retries += again
            for code in codes:
                statuses[code] = statuses.get(code, 0) + 1
    return statuses, retries


def test_a_signed_backlog_drains_into_both_crms_exactly_once(db_url, tmp_path, monkeypatch):
    plan = build_plan(EVENTS, random.Random(7))
    unique = len({message_id for message_id, _ in plan.messages})
    with crm_emulators(tmp_path) as crms:
        for name, value in crms.environ.items():
            monkeypatch.setenv(name, value)
        config = {
            "database": {"url": db_url},
            "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
            "destinations": crms.destinations(hubspot={"rate_limit": {"requests": None}, "search_settle_s": 3},
                                              salesforce={"rate_limit": {"max_concurrency": 8}}),
            "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                                   str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
            "worker": {"threads": 2, "batch_size": 400, "poll_interval_s": 0.2, "lease_s": 60},
        }
        # Answers lost after the CRM made the record, and a HubSpot search that lags behind writes.
        crms.hubspot.search_lag = 2.0
        crms.hubspot.fail_lost_answer(path="/notes/batch/create", times=2)
        crms.salesforce.fail_lost_answer(path="/composite/sobjects$", method="POST", times=2)
        with gunicorn(tmp_path, config, env={"OKENDO_WEBHOOK_SECRETS": SECRET, **crms.environ}) as server:
            started = time.monotonic()
            statuses, retries = post_all(server.base_url, plan.messages)
            ingest_seconds = time.monotonic() - started
            engine = sa.create_engine(normalize_url(db_url))
            deadline = time.monotonic() + 600
            while (left := work_left(engine)) > 0:
                assert time.monotonic() < deadline, f"{left} still undelivered\n{server.log()[-3000:]}"
                time.sleep(0.5)
            drain_seconds = time.monotonic() - started
            with engine.connect() as connection:
                stored = connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
                states = dict(connection.execute(sa.text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())
                dead = connection.execute(sa.text("SELECT mapping, last_error FROM deliveries WHERE state = 'dead'")).all()
            engine.dispose()

        # No loss, no double storage: every message once; every post acknowledged.
        assert statuses == {202: unique, 200: len(plan.messages) - unique}
        assert stored == unique
        assert set(states) <= {"delivered", "stale", "skipped", "dead"}
        # Only the refused shoppers' own writes are dead, each with its own address and nobody else's.
        assert sorted(mapping for mapping, _ in dead) == sorted(
            ["hubspot_contact_from_review", "salesforce_contact_from_review", "salesforce_review"]
            * len(plan.refused_emails)), dead[:5]
        for _, error in dead:
            named = [email for email in plan.refused_emails if email in error]
            assert len(named) == 1 and "@example.com" not in error, error

        # No duplicate and the newest state, in HubSpot...
        contacts = crms.hubspot.records("contacts")
        assert len(contacts) == plan.shoppers
        assert len({c["properties"]["email"] for c in contacts}) == plan.shoppers
        notes = [n["properties"] for n in crms.hubspot.records("notes")]
        keys = [n["okendo_source_key"] for n in notes]
        assert len(keys) == len(set(keys)), f"a note was written twice: {sorted(k for k in keys if keys.count(k) > 1)}"
        assert {k.split(":", 1)[1] for k in keys if k.startswith("review:")} == plan.live_reviews | plan.refused_reviews
        assert all("Store reply" in n["hs_note_body"] for n in notes  # the update's reply: the newest state
                   if n["okendo_source_key"].split(":", 1)[1] in plan.live_reviews)
        assert not any(character in n["hs_note_body"] for n in notes for character in ("\x00", "\x07", "\r"))
        flagged = {n["okendo_source_key"].split(":", 1)[1] for n in notes if "contains profanity" in n["hs_note_body"]}
        assert flagged == plan.flagged_reviews & plan.live_reviews
        assert all("Other: my friend" in n["hs_note_body"] for n in notes
                   if n["okendo_source_key"].startswith("survey_response:"))
        transaction_keys = {k.split(":", 1)[1] for k in keys if k.startswith("loyalty_")}
        assert transaction_keys == plan.live_transactions
        assert {k.split(":", 1)[1] for k in keys if k.startswith("survey_response:")} == plan.surveys
        # ...and in Salesforce.
        sf_contacts = crms.salesforce.records("Contact")
        assert len(sf_contacts) == plan.shoppers == len({c["Email"] for c in sf_contacts})
        reviews = crms.salesforce.records("Okendo_Review__c")
        assert {r["Okendo_Review_Id__c"] for r in reviews} == plan.live_reviews and len(reviews) == len(plan.live_reviews)
        assert all(r["Reply__c"] for r in reviews)
        assert all(r["Rating__c"] == plan.newest_ratings[r["Okendo_Review_Id__c"]] for r in reviews)  # newest state
        assert {r["Okendo_Review_Id__c"] for r in reviews if r["Contains_Profanity__c"]} == \
            plan.flagged_reviews & plan.live_reviews
        assert all(r["Contact__c"] for r in reviews)
        transactions = crms.salesforce.records("Okendo_Loyalty_Transaction__c")
        assert {t["Okendo_Transaction_Id__c"] for t in transactions} == plan.live_transactions
        assert len(transactions) == len(plan.live_transactions)
        surveys = crms.salesforce.records("Okendo_Survey_Response__c")
        assert len(surveys) == len(plan.surveys) and all("Other: my friend" in r["Answers__c"] for r in surveys)
        assert all(t["Contact__c"] for t in transactions)  # members from before the connector got a Contact

        report = {
            "backend": sa.engine.make_url(db_url).get_backend_name(), "events_posted": len(plan.messages),
            "events_stored": stored, "deliveries": states, "ingest_seconds": round(ingest_seconds, 1),
            "posts_retried_after_503": retries,
            "drain_seconds_from_first_post": round(drain_seconds, 1),
            "hubspot_api_calls": len(crms.hubspot.requests), "salesforce_api_calls": len(crms.salesforce.requests),
            "crm_calls_per_event": round((len(crms.hubspot.requests) + len(crms.salesforce.requests)) / stored, 4),
        }
    ARTIFACTS.mkdir(exist_ok=True)
    Path(ARTIFACTS / f"drain-{report['backend']}.json").write_text(json.dumps(report, indent=2))
    print("\nend-to-end drain:", json.dumps(report))
