"""A create whose answer was lost never makes a second CRM record (issue 12, item 2).

The emulators apply the request and then drop the connection, as a network cut or a killed
worker does. HubSpot's search matches `IN` string values only in lower case and lags behind
writes (it is eventually consistent: https://developers.hubspot.com/docs/api-reference/search/guide);
the HubSpot emulator does both. Salesforce's SOQL sees a committed record at once.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from connector.destinations.base import OK, Work
from connector.destinations.errors import ErrorClass
from connector.ledger.models import utcnow
from connector.samples import sample_bytes
from tests.crm import deliver
from tests.test_destination_hubspot import MAPPINGS, emulator, emulator_server, hubspot, links  # noqa: F401
from tests.test_destination_hubspot import make_destination
from tests.test_worker import delivery, drain, ingest, make_settings, states  # noqa: F401
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade

UPPER_IDS = [f"Rev-{n}-ABCdef" for n in range(10)]


def review(review_id: str, sequence: int) -> dict:
    document = json.loads(sample_bytes("review.create"))
    document["sequenceNumber"] = str(sequence)
    document["resource"]["reviewId"] = review_id
    return document


def hubspot_works(review_id: str, crm_object: str) -> list[Work]:
    """What the shipped mappings send HubSpot for this review's create, for one object."""
    return [Work(1, o.operation) for o in MAPPINGS.plan(review(review_id, 1))
            if o.destination == "hubspot" and o.status == "ready" and o.operation.object == crm_object]


def note_works(review_ids: list[str], previous_attempts: int = 0, settled_after=None) -> list[Work]:
    return [Work(number, hubspot_works(review_id, "notes")[0].operation, previous_attempts, settled_after)
            for number, review_id in enumerate(review_ids)]


def test_a_lost_note_create_with_upper_case_ids_is_found_not_created_again(emulator, hubspot, links):
    deliver(hubspot, hubspot_works(UPPER_IDS[0], "contacts"), links)
    emulator.fail_lost_answer(path="/notes/batch/create")
    first = deliver(hubspot, note_works(UPPER_IDS), links)
    assert all(r.error.error_class == ErrorClass.RETRY_SOON for r in first)
    assert len(emulator.records("notes")) == 10  # HubSpot made them; the connector never heard
    long_ago = utcnow() - timedelta(minutes=5)
    second = deliver(hubspot, note_works(UPPER_IDS, previous_attempts=1, settled_after=long_ago), links)
    assert [r.status for r in second] == [OK] * 10
    assert len(emulator.records("notes")) == 10
    assert len(emulator.calls("POST", "/notes/batch/create")) == 1


def test_while_search_lags_a_retried_create_waits_instead_of_creating_again(emulator, links):
    hubspot = make_destination(emulator, search_settle_s=3)
    hubspot.create_missing_properties(MAPPINGS)
    deliver(hubspot, hubspot_works(UPPER_IDS[0], "contacts"), links)
    emulator.search_lag = 2.0
    emulator.fail_lost_answer(path="/notes/batch/create")
    first = deliver(hubspot, note_works(UPPER_IDS), links)
    lost_at = utcnow()
    assert all(r.status == "failed" for r in first)
    parked = deliver(hubspot, note_works(UPPER_IDS, previous_attempts=1, settled_after=lost_at), links)
    assert all(r.error.code == "AWAITING_SEARCH_INDEX" and 0 < r.error.retry_after <= 3 for r in parked)
    assert len(emulator.records("notes")) == 10 and len(emulator.calls("POST", "/notes/batch/create")) == 1
    time.sleep(3.1)
    found = deliver(hubspot, note_works(UPPER_IDS, previous_attempts=2, settled_after=lost_at), links)
    assert [r.status for r in found] == [OK] * 10
    assert len(emulator.records("notes")) == 10 and len(emulator.calls("POST", "/notes/batch/create")) == 1


@pytest.fixture
def lagging(db_url, crms):
    crms.hubspot.search_lag = 10.0
    settings = make_settings(db_url, crms)
    settings.destinations["hubspot"].search_settle_s = 12.0
    engine = create_ledger_engine(settings)
    upgrade(engine)
    yield settings, engine
    engine.dispose()


def test_lost_answers_with_a_ten_second_search_lag_make_exactly_one_note_each(lagging, crms):
    settings, engine = lagging
    for number, review_id in enumerate(UPPER_IDS):
        ingest(engine, review(review_id, 100 + number))
    crms.hubspot.fail_lost_answer(path="/notes/batch/create")
    crms.salesforce.fail_lost_answer(path="/composite/sobjects$", method="POST")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        drain(settings, engine, rounds=40)
        if states(engine) == {"delivered": 40}:
            break
        time.sleep(0.5)
    assert states(engine) == {"delivered": 40}
    notes = crms.hubspot.records("notes")
    assert sorted(n["properties"]["okendo_source_key"] for n in notes) == sorted(f"review:{i}" for i in UPPER_IDS)
    # Salesforce: the Contact whose create answer was lost is found by SOQL, not created again.
    assert len(crms.salesforce.records("Contact")) == 1


def test_a_worker_that_died_after_creating_leaves_no_second_note(db_url, crms):
    """The worker claimed the note, HubSpot created it, the worker died before recording anything:
    its lease runs out, and the next worker finds the note instead of creating it again, even
    with the search lagging."""
    from connector.ledger.links import LedgerLinks
    from connector.mapping.loader import load_mappings
    from connector.worker import claims
    from connector.worker.planner import plan_received
    from connector.worker.runner import Worker

    settings = make_settings(db_url, crms)
    settings.destinations["hubspot"].search_settle_s = 4.0
    engine = create_ledger_engine(settings)
    upgrade(engine)
    document = review(UPPER_IDS[0], 1)
    del document["resource"]["reviewer"]["email"]  # no contact to write first: the note is the HubSpot work
    ingest(engine, document)
    mappings = load_mappings(settings)
    plan_received(engine, mappings)
    # Everything the doomed worker needs is ready before its claim: its write must happen within its
    # lease, as a real worker's does (a try is over once its lease has run out), however slow the machine.
    worker = Worker(settings, mappings, engine, prune_enabled=False)
    [note] = hubspot_works(UPPER_IDS[0], "notes")
    lease_s = 2.0
    for _ in range(20):
        claimed_at = time.monotonic()
        if any(c.mapping == "hubspot_review_note" for c in claims.claim(engine, "doomed", 10, lease_s=lease_s)):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the note was never claimed")
    crms.hubspot.search_lag = 3.0  # longer than the lease: the first look after it finds nothing
    [made] = worker.destinations["hubspot"].deliver([Work(1, note.operation)], LedgerLinks(engine))
    assert made.status == OK  # written at HubSpot; the doomed worker never records it
    assert time.monotonic() < claimed_at + lease_s, "the doomed write came after its lease: the test proves nothing"
    time.sleep(max(claimed_at + lease_s + 0.1 - time.monotonic(), 0))  # its lease runs out
    deadline = time.monotonic() + 20
    while delivery(engine, "hubspot_review_note", 1).state != "delivered" and time.monotonic() < deadline:
        drain(settings, engine, rounds=40)
    assert [n["properties"]["okendo_source_key"] for n in crms.hubspot.records("notes")] == [f"review:{UPPER_IDS[0]}"]
    assert delivery(engine, "hubspot_review_note", 1).state == "delivered"
    engine.dispose()
