"""A loyalty transaction finds its shopper's contact through every identity the connector knows,
and never waits hours for one that will not come (issue 12, item 3).

Matching order: the link table for the loyalty member, then for the shopper's customerId (learnt
from any topic), then the email in the CRM; none found: the contact is created from the email, or,
with no email either, the record is written without it and says so.
"""

from __future__ import annotations

import json

from connector.samples import sample_bytes
from tests.test_worker import delivery, drain, ingest, ledger, states  # noqa: F401

HARRIET = "harriet.quill@example.com"
MEMBER, SHOPPER = "member-hq-1", "customer-hq-1"


def transaction(transaction_id: str, sequence: int, *, email: str | None, member: str = MEMBER,
                shopper: str | None = SHOPPER) -> dict:
    document = json.loads(sample_bytes("loyalty_earning_transaction.create"))
    document["sequenceNumber"] = str(sequence)
    document["resource"].update(loyaltyTransactionId=transaction_id, loyaltyCustomerId=member)
    if email is None and shopper is None:
        del document["resource"]["customer"]
    else:
        document["resource"]["customer"] = {k: v for k, v in (("email", email), ("customerId", shopper)) if v}
    return document


def contact_ids(crms) -> tuple[list[str], list[str]]:
    return ([c["id"] for c in crms.hubspot.records("contacts")], [c["Id"] for c in crms.salesforce.records("Contact")])


def test_a_transaction_with_another_email_finds_the_contact_an_earlier_transaction_was_linked_to(ledger, crms):
    settings, engine = ledger
    ingest(engine, "review.create")  # Harriet's contact, from her review: no loyalty event ever came
    ingest(engine, transaction("txn-1", 10, email=HARRIET))
    drain(settings, engine)
    (hubspot_contact,), (salesforce_contact,) = contact_ids(crms)

    # Same member and shopper, another spelling of the address: matches no contact by email.
    second = ingest(engine, transaction("txn-2", 11, email="Harriet.Quill+VIP@Example.com"))
    drain(settings, engine)

    assert delivery(engine, "hubspot_loyalty_transaction_note", second).state == "delivered"
    assert delivery(engine, "salesforce_loyalty_transaction", second).state == "delivered"
    assert contact_ids(crms) == ([hubspot_contact], [salesforce_contact])  # nobody new
    note = crms.hubspot.find("notes", okendo_source_key="loyalty_earning_transaction:txn-2")
    assert ("contacts", hubspot_contact, 202) in crms.hubspot.associations("notes", note["id"])
    [record] = crms.salesforce.find("Okendo_Loyalty_Transaction__c", Okendo_Transaction_Id__c="txn-2")
    assert record["Contact__c"] == salesforce_contact


def test_a_member_who_joined_before_the_connector_gets_a_contact_in_the_same_pass(ledger, crms):
    settings, engine = ledger
    event = ingest(engine, transaction("txn-new", 20, email="early.member@example.com", member="member-early",
                                       shopper="customer-early"))
    drain(settings, engine, rounds=5)

    assert states(engine) == {"delivered": 2}
    contact = crms.hubspot.find("contacts", email="early.member@example.com")
    note = crms.hubspot.find("notes", okendo_source_key="loyalty_earning_transaction:txn-new")
    assert ("contacts", contact["id"], 202) in crms.hubspot.associations("notes", note["id"])
    [sf_contact] = crms.salesforce.find("Contact", Email="early.member@example.com")
    [record] = crms.salesforce.find("Okendo_Loyalty_Transaction__c", Okendo_Transaction_Id__c="txn-new")
    assert record["Contact__c"] == sf_contact["Id"] and sf_contact["LastName"] == "early.member@example.com"
    # When the member's own events come, they land on the same contact (learnt: member -> contact).
    member = json.loads(sample_bytes("loyalty_customer.create"))
    member["resource"].update(loyaltyCustomerId="member-early",
                              customer={"customerId": "customer-early", "email": "early.member@example.com"})
    ingest(engine, member)
    drain(settings, engine, rounds=5)
    assert len(crms.hubspot.records("contacts")) == 1 and len(crms.salesforce.records("Contact")) == 1
    assert delivery(engine, "hubspot_loyalty_transaction_note", event).last_error is None


def test_a_transaction_naming_nobody_known_is_written_unlinked_and_says_why(ledger, crms):
    settings, engine = ledger
    event = ingest(engine, transaction("txn-anon", 30, email=None, shopper=None, member="member-unknown"))
    drain(settings, engine, rounds=5)

    for mapping in ("hubspot_loyalty_transaction_note", "salesforce_loyalty_transaction"):
        row = delivery(engine, mapping, event)
        assert row.state == "delivered" and row.attempts == 1
        assert "written without its" in row.last_error and "loyalty_customer member-unknown" in row.last_error
    [record] = crms.salesforce.find("Okendo_Loyalty_Transaction__c", Okendo_Transaction_Id__c="txn-anon")
    assert record["Contact__c"] is None
    assert crms.hubspot.records("contacts") == []
