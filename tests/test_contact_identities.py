"""A shopper's contact is looked up once, then found through the link table by every identity the
connector knows (email, Okendo customer id, loyalty member id), in HubSpot and in Salesforce; a
remembered contact that a person deleted in the CRM is forgotten and found (or made) again, in the
same attempt (issue 15: at most 0.025 CRM calls per event).

Through the worker, against both CRM emulators over real sockets.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from connector.destinations.base import OK, Work
from connector.mapping.operations import Operation, RecordKey, SourceRef
from connector.samples import sample_bytes
from tests.crm import deliver, link_rows
from tests.test_destination_hubspot import emulator, emulator_server, hubspot, links  # noqa: F401
from tests.test_worker import delivery, drain, ingest, ledger, states  # noqa: F401

HARRIET = "harriet.quill@example.com"  # the reviewer of the shipped review samples


def transaction(transaction_id: str, sequence: int, *, member: str, shopper: str, email: str = HARRIET) -> dict:
    """A loyalty transaction of a member the connector has never seen: no Okendo id of it is linked."""
    document = json.loads(sample_bytes("loyalty_earning_transaction.create"))
    document["sequenceNumber"] = str(sequence)
    document["resource"].update(loyaltyTransactionId=transaction_id, loyaltyCustomerId=member,
                                customer={"customerId": shopper, "email": email})
    return document


def review_update(sequence: int, rating: int) -> dict:
    document = json.loads(sample_bytes("review.update"))
    document["sequenceNumber"] = str(sequence)
    document["resource"]["rating"] = rating
    return document


def links_to(engine: sa.Engine, destination: str, crm_object: str) -> dict[tuple[str, str], str]:
    with engine.connect() as connection:
        return {(row.source_type, row.source_id): row.crm_record_id for row in connection.execute(sa.text(
            "SELECT source_type, source_id, crm_record_id FROM record_links WHERE destination = :d "
            "AND crm_object = :o"), {"d": destination, "o": crm_object})}


def contact_queries(crms) -> list:
    return [c for c in crms.salesforce.calls("GET", "/query") if "FROM Contact" in c.query.get("q", [""])[0]]


def test_a_shoppers_contact_is_looked_up_once_then_found_by_email_in_the_link_table(ledger, crms):
    settings, engine = ledger
    ingest(engine, "review.create")
    drain(settings, engine)
    [hubspot_contact] = crms.hubspot.records("contacts")
    [salesforce_contact] = crms.salesforce.records("Contact")
    queries_for_the_first_write = len(contact_queries(crms))

    # Later events of the same shopper name her only by email (a member and shopper never seen before).
    first = ingest(engine, transaction("txn-id-1", 10, member="member-new-1", shopper="customer-new-1"))
    drain(settings, engine)
    second = ingest(engine, transaction("txn-id-2", 11, member="member-new-2", shopper="customer-new-2"))
    ingest(engine, review_update(9_000_000_000_000, 2))
    drain(settings, engine)

    assert states(engine).get("dead") is None and states(engine).get("retrying") is None
    # HubSpot upserts contacts by email and never needed to read one; Salesforce asked for Harriet's
    # Contact by email once, for the first write, and never again.
    assert crms.hubspot.calls("POST", "/contacts/batch/read") == []
    assert queries_for_the_first_write == 1 and len(contact_queries(crms)) == 1
    assert [c["id"] for c in crms.hubspot.records("contacts")] == [hubspot_contact["id"]]
    assert [c["Id"] for c in crms.salesforce.records("Contact")] == [salesforce_contact["Id"]]
    for event, transaction_id in ((first, "txn-id-1"), (second, "txn-id-2")):
        assert delivery(engine, "hubspot_loyalty_transaction_note", event).state == "delivered"
        note = crms.hubspot.find("notes", okendo_source_key=f"loyalty_earning_transaction:{transaction_id}")
        assert ("contacts", hubspot_contact["id"], 202) in crms.hubspot.associations("notes", note["id"])
        [record] = crms.salesforce.find("Okendo_Loyalty_Transaction__c", Okendo_Transaction_Id__c=transaction_id)
        assert record["Contact__c"] == salesforce_contact["Id"]
    # Remembered under every identity it is known by: the email, and the member and shopper learnt.
    for destination, crm_object, contact_id, field in (("hubspot", "contacts", hubspot_contact["id"], "email"),
                                                       ("salesforce", "Contact", salesforce_contact["Id"], "Email")):
        known = links_to(engine, destination, crm_object)
        assert known[(f"key:{field}", HARRIET)] == contact_id
        assert known[("loyalty_customer", "member-new-2")] == known[("customer", "customer-new-2")] == contact_id


def test_a_remembered_hubspot_contact_deleted_in_hubspot_is_forgotten_and_made_again(ledger, crms):
    settings, engine = ledger
    ingest(engine, "review.create")
    drain(settings, engine)
    [old] = crms.hubspot.records("contacts")
    crms.hubspot.delete_record("contacts", old["id"])  # a person deletes (or merges away) the contact

    event = ingest(engine, transaction("txn-gone-1", 10, member="member-gone", shopper="customer-gone"))
    drain(settings, engine)

    note_delivery = delivery(engine, "hubspot_loyalty_transaction_note", event)
    assert note_delivery.state == "delivered" and note_delivery.attempts == 1  # in the same attempt
    [new] = crms.hubspot.records("contacts")
    assert new["id"] != old["id"] and new["properties"]["email"] == HARRIET
    note = crms.hubspot.find("notes", okendo_source_key="loyalty_earning_transaction:txn-gone-1")
    assert crms.hubspot.associations("notes", note["id"]) == [("contacts", new["id"], 202)]
    known = links_to(engine, "hubspot", "contacts")
    assert old["id"] not in known.values()  # every link to the deleted contact is gone
    assert known[("key:email", HARRIET)] == known[("loyalty_customer", "member-gone")] == new["id"]


def test_a_remembered_salesforce_contact_deleted_in_salesforce_is_forgotten_and_made_again(ledger, crms):
    settings, engine = ledger
    ingest(engine, "review.create")
    drain(settings, engine)
    [old] = crms.salesforce.records("Contact")
    crms.salesforce.delete("Contact", old["Id"])  # to the recycle bin: ENTITY_IS_DELETED from now on

    # A transaction's lookup names the remembered Contact; the review update writes the Contact itself.
    event = ingest(engine, transaction("txn-gone-2", 10, member="member-gone", shopper="customer-gone"))
    update = ingest(engine, review_update(9_000_000_000_000, 2))
    drain(settings, engine)

    for mapping, event_id in (("salesforce_loyalty_transaction", event), ("salesforce_contact_from_review", update),
                              ("salesforce_review", update)):
        row = delivery(engine, mapping, event_id)
        assert (row.state, row.attempts) == ("delivered", 1), (mapping, row.last_error)
    [new] = crms.salesforce.records("Contact")
    assert new["Id"] != old["Id"] and new["Email"] == HARRIET
    [record] = crms.salesforce.find("Okendo_Loyalty_Transaction__c", Okendo_Transaction_Id__c="txn-gone-2")
    assert record["Contact__c"] == new["Id"]
    [review] = crms.salesforce.records("Okendo_Review__c")
    assert review["Contact__c"] == new["Id"] and review["Rating__c"] == 2
    known = links_to(engine, "salesforce", "Contact")
    assert old["Id"] not in known.values()
    assert known[("key:Email", HARRIET)] == new["Id"]


def test_create_only_properties_reach_a_remembered_contact_that_hubspot_made_anew(emulator, hubspot, links):
    """An upsert with create-only properties reads nothing for a contact the connector remembers; if a
    person deleted it meanwhile, HubSpot's upsert makes it anew and the create-only values follow."""
    emulator.add_property("contacts", "okendo_first_seen")

    def upsert(delivery_id: int) -> Work:
        return Work(delivery_id, Operation("contacts", "upsert", SourceRef("review", "r-1"), RecordKey("email", HARRIET),
                                           {"email": HARRIET, "firstname": f"Harriet {delivery_id}"},
                                           {"okendo_first_seen": "2025-11-03"}))

    [first] = deliver(hubspot, [upsert(1)], links)
    assert first.status == OK and len(emulator.calls("POST", "/contacts/batch/read")) == 1
    [second] = deliver(hubspot, [upsert(2)], links)  # remembered: no read, create-only left out
    assert second.status == OK and len(emulator.calls("POST", "/contacts/batch/read")) == 1
    assert "okendo_first_seen" not in emulator.calls("POST", "/contacts/batch/upsert")[-1].body["inputs"][0]["properties"]

    emulator.delete_record("contacts", first.record_id)
    [third] = deliver(hubspot, [upsert(3)], links)
    assert third.status == OK and third.record_id != first.record_id
    assert third.forgotten == [("contacts", first.record_id)]
    contact = emulator.find("contacts", email=HARRIET)
    assert contact["id"] == third.record_id and contact["properties"]["okendo_first_seen"] == "2025-11-03"
    assert contact["properties"]["firstname"] == "Harriet 3"
    assert first.record_id not in {row[4] for row in link_rows(links)}


def test_an_email_a_crm_refused_is_never_looked_for_or_created_again(ledger, crms):
    """A shopper whose address both CRMs refuse: their contact write fails (dead, with the CRM's
    error); the link table remembers the refusal, so their notes and records are written without a
    contact at once, with no lookup and no second try to create it."""
    settings, engine = ledger
    bad = "jurgen.muller@localhost"  # no top-level domain: only the CRMs can tell, and both refuse it
    document = json.loads(sample_bytes("review.create"))
    document["resource"]["reviewer"] = {"name": "Jurgen Muller", "email": bad}
    review = ingest(engine, document)
    drain(settings, engine)
    later = ingest(engine, transaction("txn-refused", 10, member="member-j", shopper="customer-j", email=bad))
    drain(settings, engine)

    assert delivery(engine, "hubspot_contact_from_review", review).state == "dead"
    assert delivery(engine, "salesforce_contact_from_review", review).state == "dead"
    for mapping, event in (("hubspot_review_note", review), ("hubspot_loyalty_transaction_note", later),
                           ("salesforce_loyalty_transaction", later)):
        row = delivery(engine, mapping, event)
        assert row.state == "delivered" and row.attempts == 1, (mapping, row.last_error)
        assert f"refused {'email' if mapping.startswith('hubspot') else 'Email'} {bad} before" in row.last_error
    # One write of the contact each (its own mapping's), never a lookup or a create for an association.
    assert len(crms.hubspot.calls("POST", "/contacts/batch/upsert")) == 1
    assert crms.hubspot.calls("POST", "/contacts/batch/read") == []
    assert len(contact_queries(crms)) == 1
    contact_creates = [c for c in crms.salesforce.calls("POST", "/composite/sobjects$")
                       if any(r["attributes"]["type"] == "Contact" for r in c.body["records"])]
    assert len(contact_creates) == 1
    assert links_to(engine, "hubspot", "contacts") == {("refused:email", bad): "INVALID_EMAIL"}
    assert links_to(engine, "salesforce", "Contact") == {("refused:Email", bad): "INVALID_EMAIL_ADDRESS"}
