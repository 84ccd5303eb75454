"""The delivery worker, in process, against both CRM emulators, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from itertools import count

import pytest
import sqlalchemy as sa

from connector.config import Settings, settings_from_mapping
from connector.ledger import IncomingEvent, create_ledger_engine, record_event
from connector.ledger.migrate import upgrade
from connector.mapping.loader import load_mappings
from connector.receiver.envelope import classify
from connector.samples import sample_bytes
from connector.worker.replay import ReplayFilter, replay
from connector.worker.runner import Worker
from tests.crm import PROJECT_ROOT, STORY, Crms, make_reply_field_too_short, restore_reply_field
from tests.workload import work_left

REVIEW = "30087cea-f3ab-40c4-9bf9-dd72e8285b6d"
HARRIET = "harriet.quill@example.com"
_message_ids = count()



def make_settings(db_url: str, crms: Crms, *, sections: dict | None = None, **worker) -> Settings:
    """The test ledger, both emulators, the shipped mappings, a fast worker; `sections` adds others."""
    return settings_from_mapping({
        **(sections or {}),
        "database": {"url": db_url},
        "destinations": crms.destinations(),
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        "worker": {"batch_size": 200, "lease_s": 30, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                   "poll_interval_s": 0.05, **worker},
    })


@pytest.fixture
def ledger(db_url, crms):
    settings = make_settings(db_url, crms)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    yield settings, engine
    engine.dispose()


def ingest(engine: sa.Engine, body: bytes | str | dict, message_id: str | None = None) -> int:
    if isinstance(body, str):
        body = sample_bytes(body)
    elif isinstance(body, dict):
        body = json.dumps(body).encode()
    envelope = classify(body)
    return record_event(engine, IncomingEvent(
        message_id=message_id or f"msg_{next(_message_ids)}", body=body, headers={}, state=envelope.state,
        resource_type=envelope.resource_type, topic=envelope.topic, resource_id=envelope.resource_id,
        sequence_number=envelope.sequence_number, customer_email=envelope.customer_email)).event_id


def drain(settings: Settings, engine: sa.Engine, *, rounds: int = 200) -> Worker:
    worker = Worker(settings, load_mappings(settings), engine, prune_enabled=False)
    idle = 0
    for _ in range(rounds):
        if worker.run_once():
            idle = 0
            continue
        idle += 1
        if not work_left(engine) or idle > 40:
            break
        time.sleep(0.05)
    return worker




def states(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(sa.text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())


def delivery(engine: sa.Engine, mapping: str, event_id: int) -> sa.Row:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT * FROM deliveries WHERE mapping = :m AND event_id = :e"),
                                  {"m": mapping, "e": event_id}).one()


def attempts(engine: sa.Engine, delivery_id: int) -> list[sa.Row]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text(
            "SELECT * FROM delivery_attempts WHERE delivery_id = :d ORDER BY id"), {"d": delivery_id}))


def review_note(crms: Crms) -> dict | None:
    return crms.hubspot.find("notes", okendo_source_key=f"review:{REVIEW}")


def test_the_story_reaches_both_crms_once(ledger, crms):
    settings, engine = ledger
    for sample in STORY:
        ingest(engine, sample)
    drain(settings, engine)

    # Creates and updates waiting together: only the newest state of each resource is sent; a record
    # created and deleted while waiting (the review's note and record, the transactions') never reaches
    # the CRM, and its delete finds nothing to do.
    assert states(engine) == {"delivered": 10, "stale": 20, "skipped": 8}
    assert len(crms.hubspot.records("contacts")) == 2 and len(crms.salesforce.records("Contact")) == 2
    assert crms.hubspot.records("notes") and len(crms.hubspot.records("notes")) == 1  # the survey note remains
    assert crms.salesforce.records("Okendo_Review__c") == []
    [contact] = [c for c in crms.salesforce.records("Contact") if c["Email"] == HARRIET]
    assert contact["Okendo_Loyalty_Status__c"] == "removed" and contact["Okendo_Birthday__c"] == "06-18"
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM delivery_attempts")).scalar_one() == 38
        assert set(connection.execute(sa.text("SELECT state FROM events")).scalars()) == {"planned"}
        status = {row.destination: row for row in connection.execute(sa.text("SELECT * FROM destination_status"))}
    # What the status page shows per CRM: the last successful write and the quota the CRM reported.
    assert status["hubspot"].last_success_at is not None and status["salesforce"].last_success_at is not None
    hubspot_quota = status["hubspot"].quota if isinstance(status["hubspot"].quota, dict) else json.loads(status["hubspot"].quota)
    salesforce_quota = status["salesforce"].quota if isinstance(status["salesforce"].quota, dict) \
        else json.loads(status["salesforce"].quota)
    assert hubspot_quota["daily_remaining"] > 0 and salesforce_quota["api_limit"] == 15000


def test_redeliveries_are_applied_once(ledger, crms):
    settings, engine = ledger
    first = ingest(engine, "review.create", "msg_same")
    assert ingest(engine, "review.create", "msg_same") == first
    drain(settings, engine)
    assert states(engine) == {"delivered": 4}
    assert len(crms.hubspot.calls("POST", "/notes/batch/create")) == 1


def test_an_older_event_arriving_late_is_stale_and_the_newest_state_wins(ledger, crms):
    settings, engine = ledger
    update = ingest(engine, "review.update")
    drain(settings, engine)
    create = ingest(engine, "review.create")  # arrives after its update
    drain(settings, engine)

    stale = delivery(engine, "salesforce_review", create)
    assert stale.state == "stale"
    assert stale.last_error == "sequence 4100000201 is older than sequence 4100000388, already applied"
    [review] = crms.salesforce.records("Okendo_Review__c")
    assert review["Reply__c"].startswith("Thanks Harriet!")  # the update's state, not the create's
    assert "Store reply" in review_note(crms)["properties"]["hs_note_body"]
    assert delivery(engine, "salesforce_review", update).state == "delivered"


def test_sequence_numbers_compare_as_integers_not_text(ledger, crms):
    settings, engine = ledger
    newer = json.loads(sample_bytes("review.update"))
    newer["sequenceNumber"] = "10"
    older = json.loads(sample_bytes("review.create"))
    older["sequenceNumber"] = "9"  # as text "9" > "10"; as a number it is older
    ingest(engine, newer)
    drain(settings, engine)
    older_id = ingest(engine, older)
    drain(settings, engine)
    assert delivery(engine, "salesforce_review", older_id).state == "stale"


def test_a_scrambled_triple_ends_deleted(ledger, crms):
    settings, engine = ledger
    for sample in ("review.update", "review.delete", "review.create"):
        ingest(engine, sample)
        drain(settings, engine)
    assert crms.salesforce.records("Okendo_Review__c") == []
    assert review_note(crms) is None


def test_a_late_update_cannot_bring_a_deleted_record_back(ledger, crms):
    settings, engine = ledger
    ingest(engine, "review.create")
    drain(settings, engine)
    ingest(engine, "review.delete")
    drain(settings, engine)
    late = json.loads(sample_bytes("review.update"))
    late["sequenceNumber"] = "9999999999"  # even numbered after the delete
    late_id = ingest(engine, late)
    drain(settings, engine)
    assert crms.salesforce.records("Okendo_Review__c") == [] and review_note(crms) is None
    assert delivery(engine, "hubspot_review_note", late_id).last_error.startswith("the resource was deleted")


def test_429_storms_and_500s_end_in_success_with_every_attempt_recorded(ledger, crms):
    settings, engine = ledger
    crms.hubspot.fail_rate_limited(path="/batch/upsert", retry_after=0.05, times=8)
    crms.salesforce.fail_unavailable(times=6)
    crms.hubspot.fail_server_error(path="/notes/batch/create", times=4)
    event = ingest(engine, "review.create")
    drain(settings, engine)

    assert states(engine) == {"delivered": 4}
    contact = delivery(engine, "hubspot_contact_from_review", event)
    tries = attempts(engine, contact.id)
    assert [t.outcome for t in tries][-1] == "delivered" and len(tries) >= 2
    assert all(t.outcome == "retry" and t.error_class == "retry_soon" for t in tries[:-1])
    assert "429" in tries[0].error and "ten_secondly_rolling" in tries[0].error
    assert len(crms.hubspot.records("notes")) == 1


def test_permanent_errors_go_dead_with_the_crms_message_and_replay_after_the_fix(ledger, crms):
    settings, engine = ledger
    make_reply_field_too_short(crms.salesforce)  # the record's data, not the CRM's set-up
    event = ingest(engine, "review.update")
    drain(settings, engine)
    dead = delivery(engine, "salesforce_review", event)
    assert dead.state == "dead" and dead.attempts == 1
    assert "STRING_TOO_LONG" in dead.last_error and "Reply__c" in dead.last_error

    restore_reply_field(crms.salesforce)
    summary = replay(engine, ReplayFilter(states=("dead",)), by="ops@example.com")
    assert summary.requeued == 1
    drain(settings, engine)
    replayed = delivery(engine, "salesforce_review", event)
    assert (replayed.state, replayed.replayed_by) == ("delivered", "ops@example.com")
    assert crms.salesforce.records("Okendo_Review__c")[0]["Reply__c"].startswith("Thanks Harriet!")
    assert [t.outcome for t in attempts(engine, replayed.id)] == ["dead", "delivered"]


def test_retries_stop_at_the_configured_maximum(db_url, crms):
    settings = make_settings(db_url, crms, max_attempts=3)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    crms.hubspot.fail_server_error(path="/batch/upsert", times=100)
    event = ingest(engine, "loyalty_customer.create")
    drain(settings, engine)
    contact = delivery(engine, "hubspot_contact_from_loyalty_customer", event)
    assert (contact.state, contact.attempts) == ("dead", 3)
    assert "HTTP 500" in contact.last_error
    engine.dispose()


def test_backlogs_are_batched(ledger, crms):
    settings, engine = ledger
    for i in range(150):
        document = json.loads(sample_bytes("review.create"))
        document["resource"]["reviewId"] = f"review-{i}"
        document["resource"]["reviewer"]["email"] = f"shopper{i}@example.com"
        ingest(engine, document)
    drain(settings, engine)
    assert states(engine) == {"delivered": 600}
    upserts = crms.hubspot.calls("POST", "/contacts/batch/upsert")
    creates = crms.hubspot.calls("POST", "/notes/batch/create")
    assert sum(len(c.body["inputs"]) for c in upserts) == 150 and len(upserts) <= 4
    assert sum(len(c.body["inputs"]) for c in creates) == 150 and len(creates) <= 4
    collections = crms.salesforce.calls(path="/composite/sobjects")
    assert len(collections) <= 8
    # Each delivery's attempt keeps its own share of the batch call, not the whole batch again.
    for mapping, records in (("hubspot_contact_from_review", "inputs"), ("salesforce_review", "records")):
        row = delivery(engine, mapping, 1)
        [attempt] = attempts(engine, row.id)
        requests = attempt.requests if isinstance(attempt.requests, list) else json.loads(attempt.requests)
        assert len(requests[0]["body"][records]) == 1 and requests[0]["batch_size"] > 1
        assert "shopper0@example.com" in json.dumps(requests[0]["body"])


def test_a_claim_takes_one_kind_and_keeps_each_resource_and_event_in_order(ledger):
    settings, engine = ledger
    from connector.worker import claims
    from connector.worker.planner import plan_received

    create = ingest(engine, "review.create")
    other = json.loads(sample_bytes("review.create"))
    other["resource"]["reviewId"] = "another-review"
    other["resource"]["reviewer"]["email"] = "someone.else@example.com"
    second = ingest(engine, other)
    plan_received(engine, load_mappings(settings))

    first = claims.claim(engine, "worker:1", limit=200, lease_s=60)
    # One kind (destination and mapping), from both reviews' creates: a full batch for one CRM call.
    assert len({(c.destination, c.mapping) for c in first}) == 1
    assert {c.event_id for c in first} == {create, second}
    kind = (first[0].destination, first[0].mapping)
    # The same review's update arrives meanwhile: the create's deliveries still waiting end superseded,
    # the one a worker is delivering does not.
    update = ingest(engine, "review.update")
    plan_received(engine, load_mappings(settings))
    assert delivery(engine, kind[1], create).state == "pending"
    assert delivery(engine, "salesforce_review", create).state == "stale"
    # While those are out, nothing else of those reviews for that CRM may go: neither the create's
    # next mapping (its note waits for the contact), nor the update (the create is still open). For
    # the other CRM, the create's deliveries were all superseded: the update goes there.
    rest = claims.claim(engine, "worker:2", limit=200, lease_s=60)
    assert rest and all(c.destination != kind[0] for c in rest)
    assert update in {c.event_id for c in rest}


def test_a_delivery_goes_out_as_planned_unless_its_mapping_changed_since(ledger, crms, monkeypatch):
    """Planning keeps each operation with its mapping's fingerprint: delivered under the same mapping,
    the event is not mapped again (most of a drain's CPU went there); under a changed mapping (an
    override, a fix), it is, and the change is what reaches the CRM."""
    from connector.mapping.engine import MappingSet
    from connector.worker.planner import plan_received

    settings, engine = ledger
    mapped = []
    plan = MappingSet.plan
    monkeypatch.setattr(MappingSet, "plan", lambda self, document, **kw: mapped.append(kw.get("only")) or
                        plan(self, document, **kw))
    first = ingest(engine, "review.create")
    plan_received(engine, load_mappings(settings))
    assert mapped == [None]  # planning: every mapping, once
    drain(settings, engine)
    assert mapped == [None] and delivery(engine, "hubspot_contact_from_review", first).state == "delivered"

    other = json.loads(sample_bytes("review.create"))
    other["resource"].update(reviewId="another-review", reviewer={"name": "Ada Byron", "email": "ada@example.com"})
    second = ingest(engine, other)
    plan_received(engine, load_mappings(settings))
    changed = settings.model_copy(update={"mappings": settings.mappings.model_copy(update={"overrides": {
        "hubspot_contact_from_review": {"fields": {"okendo_last_review_product": "'Changed since planning'"}}}})})
    drain(changed, engine)
    assert delivery(engine, "hubspot_contact_from_review", second).state == "delivered"
    assert crms.hubspot.find("contacts", email="ada@example.com")["properties"]["okendo_last_review_product"] == \
        "Changed since planning"
    assert mapped[2:] == ["hubspot_contact_from_review"]  # only the changed mapping was mapped again
