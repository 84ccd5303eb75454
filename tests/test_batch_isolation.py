"""One bad record fails alone: a CRM that rejects a whole batch for one input's sake gets the other
inputs again without it, and each delivery keeps only its own error (issue 12, item 1).

HubSpot answers 400 for a whole v3 batch when one input is invalid, naming no input; Salesforce
refuses a whole sObject collection it cannot deserialise (a text where a number belongs), and
fails single records (an invalid email) inside an `allOrNone: false` answer. Both emulators
behave so; the real client libraries talk to them over real sockets.
"""

from __future__ import annotations

import json
import math

import sqlalchemy as sa

from connector.destinations.base import OK, Work
from connector.mapping.operations import Operation, RecordKey, SourceRef
from tests.test_destination_hubspot import MAPPINGS, emulator, emulator_server, hubspot, links  # noqa: F401
from tests.test_destination_hubspot import make_destination
from tests.crm import deliver, works_for
from tests.test_worker import delivery, drain, ingest, ledger  # noqa: F401
from connector.samples import sample_bytes

GOOD = "ada.lovelace@example.com"
# No top-level domain: both CRMs refuse it, and only they can say so (an internationalised address,
# which HubSpot's documented rules refuse, is refused before sending: see the test at the end).
BAD = "ada.byron@localhost"


def contact(i: int, email: str) -> Work:
    return Work(i, Operation("contacts", "upsert", SourceRef("review", f"r{i}"), RecordKey("email", email),
                             {"email": email, "firstname": f"Shopper {i}"}))


def review(review_id: str, email: str, sequence: int, **resource) -> dict:
    document = json.loads(sample_bytes("review.create"))
    document["sequenceNumber"] = str(sequence)
    document["resource"].update(reviewId=review_id, reviewer={"name": "A Shopper", "email": email}, **resource)
    return document


# --- HubSpot ----------------------------------------------------------------------------------------

def test_hubspot_rejects_the_whole_batch_for_one_invalid_email(emulator):
    """The emulator is as strict as HubSpot: one bad input, a 400 for all, nothing written."""
    import requests

    answer = requests.post(f"{emulator.url}/crm/v3/objects/contacts/batch/upsert",
                           headers={"Authorization": "Bearer test-token"},
                           json={"inputs": [{"idProperty": "email", "id": GOOD, "properties": {}},
                                            {"idProperty": "email", "id": BAD, "properties": {}}]}, timeout=5)
    assert answer.status_code == 400 and answer.json()["category"] == "VALIDATION_ERROR"
    assert "ids" not in json.dumps(answer.json().get("context", {}))
    assert emulator.records("contacts") == []


def test_a_valid_contact_lands_beside_an_invalid_one_which_fails_with_its_own_error(emulator, hubspot, links):
    results = deliver(hubspot, [contact(1, GOOD), contact(2, BAD)], links)
    assert results[0].status == OK and results[0].error is None
    assert emulator.find("contacts", email=GOOD) is not None
    assert results[1].status == "failed" and BAD.lower() in results[1].error.message
    assert results[1].error.status == 400
    # What the valid delivery recorded was sent for it alone, and names nobody else.
    assert BAD not in json.dumps(results[0].requests) and GOOD not in results[1].error.message


def test_one_bad_input_among_many_costs_about_two_log2_n_calls(emulator, hubspot, links):
    works = [contact(i, f"shopper{i}@example.com") for i in range(16)]
    works[11] = contact(11, BAD)
    results = deliver(hubspot, works, links)
    assert [r.status for r in results] == [OK] * 11 + ["failed"] + [OK] * 4
    calls = emulator.calls("POST", "/contacts/batch/upsert$")
    assert len(calls) <= 1 + 2 * math.ceil(math.log2(16))
    assert len(emulator.records("contacts")) == 15


def test_an_invalid_value_quoted_in_hubspots_message_costs_one_more_call(emulator, hubspot, links):
    """HubSpot names no input of a refused batch, but its message quotes the invalid email: that input
    fails alone and the others go again without it, in one more call instead of a bisection."""
    works = [contact(i, f"shopper{i}@example.com") for i in range(64)]
    works[37] = contact(37, BAD)
    # Refused too, and its address holds the other bad one inside it: each is named by its own message only.
    works[5] = contact(5, "x" + BAD)
    results = deliver(hubspot, works, links)
    assert [i for i, r in enumerate(results) if r.status != OK] == [5, 37]
    assert BAD in results[37].error.message and "shopper" not in results[37].error.message
    assert f"x{BAD}" in results[5].error.message and f" {BAD} " not in results[5].error.message
    assert len(emulator.records("contacts")) == 62
    assert len(emulator.calls("POST", "/contacts/batch/upsert$")) <= 6  # bisecting each would take ~24


def test_an_error_common_to_every_input_is_not_bisected_record_by_record(emulator, links):
    hubspot = make_destination(emulator)  # no `setup hubspot`: the Okendo properties do not exist
    works = [Work(i, Operation("contacts", "upsert", SourceRef("review", f"r{i}"),
                               RecordKey("email", f"p{i}@example.com"),
                               {"email": f"p{i}@example.com", "okendo_last_review_rating": "4"})) for i in range(32)]
    results = deliver(hubspot, works, links)
    assert all(r.status == "failed" and "okendo_last_review_rating" in r.error.message for r in results)
    assert len(emulator.calls("POST", "/contacts/batch/upsert$")) == 3  # the batch, then each half once


def test_one_invalid_note_does_not_keep_its_neighbours_from_being_created(emulator, hubspot, links):
    contacts = [w for w in works_for(MAPPINGS, "hubspot", "review.create") if w.operation.object == "contacts"]
    deliver(hubspot, contacts, links)
    [note] = [w for w in works_for(MAPPINGS, "hubspot", "review.create") if w.operation.object == "notes"]
    notes = []
    for i in range(4):
        properties = dict(note.operation.properties)
        if i == 2:
            properties["hs_timestamp"] = "not a time"
        notes.append(Work(10 + i, Operation("notes", "upsert", SourceRef("review", f"rev-{i}"), None, properties,
                                            associations=note.operation.associations)))
    results = deliver(hubspot, notes, links)
    assert [r.status for r in results] == [OK, OK, "failed", OK]
    assert "not a time" in results[2].error.message
    assert len(emulator.records("notes")) == 3


# --- Salesforce (allOrNone false, and whole collections it cannot read) ------------------------------

def test_salesforce_isolates_a_record_that_fails_its_whole_collection(crms, tmp_path):
    from connector.destinations.salesforce import SalesforceDestination
    from connector.config import SalesforceDestinationConfig
    from tests.crm import ledger_links

    links = ledger_links(tmp_path)
    salesforce = SalesforceDestination("salesforce", SalesforceDestinationConfig(
        type="salesforce", instance_url=crms.salesforce.url, access_token="00Dtest!token"))
    works = [Work(i, Operation("Okendo_Review__c", "upsert", SourceRef("review", f"rev-{i}"),
                               RecordKey("Okendo_Review_Id__c", f"rev-{i}"),
                               {"Name": f"Review {i}", "Rating__c": "five" if i == 1 else 5})) for i in range(4)]
    results = deliver(salesforce, works, links)
    assert [r.status for r in results] == [OK, "failed", OK, OK]
    assert "five" in results[1].error.message and results[1].error.code == "JSON_PARSER_ERROR"
    assert sorted(r["Okendo_Review_Id__c"] for r in crms.salesforce.records("Okendo_Review__c")) == \
        ["rev-0", "rev-2", "rev-3"]
    # allOrNone false: an invalid email fails inside the answer, alone, with its own message.
    contacts = [Work(10 + i, Operation("Contact", "upsert", SourceRef("review", f"c{i}"), RecordKey("Email", email),
                                       {"Email": email}, {"LastName": "Shopper"}))
                for i, email in enumerate([GOOD, BAD])]
    results = deliver(salesforce, contacts, links)
    assert [r.status for r in results] == [OK, "failed"]
    assert results[1].error.code == "INVALID_EMAIL_ADDRESS" and GOOD not in results[1].error.message
    assert [c["Email"] for c in crms.salesforce.records("Contact")] == [GOOD]


# --- through the worker, on both ledgers --------------------------------------------------------------

def test_through_the_worker_the_valid_shopper_lands_and_only_the_invalid_one_is_dead(ledger, crms):
    settings, engine = ledger
    good = ingest(engine, review("review-good", GOOD, 100))
    bad = ingest(engine, review("review-bad", BAD, 101))
    drain(settings, engine)

    assert crms.hubspot.find("contacts", email=GOOD) is not None
    assert [c["Email"] for c in crms.salesforce.records("Contact")] == [GOOD]
    for mapping in ("hubspot_contact_from_review", "salesforce_contact_from_review"):
        assert delivery(engine, mapping, good).state == "delivered"
        dead = delivery(engine, mapping, bad)
        assert dead.state == "dead" and BAD.lower() in dead.last_error.lower()
    with engine.connect() as connection:
        errors = connection.execute(sa.text(
            "SELECT a.error FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "WHERE d.event_id = :e AND a.error IS NOT NULL"), {"e": good}).scalars().all()
        requests = connection.execute(sa.text(
            "SELECT a.requests FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "WHERE d.event_id = :e"), {"e": good}).scalars().all()
    assert errors == []  # the valid shopper's deliveries never carried the other shopper's error
    assert BAD not in json.dumps([r if isinstance(r, (list, dict)) else json.loads(r or "null") for r in requests],
                                 ensure_ascii=False)


def test_an_address_hubspots_documented_rules_refuse_fails_alone_without_a_call(emulator, hubspot, links):
    """HubSpot takes RFC 2822 addresses only (https://legacydocs.hubspot.com/docs/faq/how-does-hubspot-validate-email-addresses):
    a local part that is not ASCII can never be a contact, and would fail its whole batch; it fails
    alone, as INVALID_EMAIL, and the batch goes out without it in one call."""
    international = "jürgen.müller@example.de"
    results = deliver(hubspot, [contact(1, GOOD), contact(2, international)], links)
    assert [r.status for r in results] == [OK, "failed"]
    assert results[1].error.fields == (("email", "INVALID_EMAIL"),) and international in results[1].error.message
    assert GOOD not in results[1].error.message and results[1].requests == []
    [call] = emulator.calls("POST", "/contacts/batch/upsert$")
    assert [item["id"] for item in call.body["inputs"]] == [GOOD]
