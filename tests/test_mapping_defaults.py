"""Every shipped sample through the shipped mappings, asserted field by field."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from connector.config import load_settings
from connector.mapping.engine import MappingSet
from connector.mapping.loader import load_mappings
from connector.samples import sample_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[1]

REVIEW = "30087cea-f3ab-40c4-9bf9-dd72e8285b6d"
LOYALTY_CUSTOMER = "a824f9e1-543f-4355-b0c2-f9cbca993795"
OKENDO_CUSTOMER = "b82f9d50-a111-45a4-b5a8-7d2e8a488998"
ADJUSTMENT = "eab47bc5-eec6-4024-a195-16bebfaeea45"
EARNING = "fccbcf37-cbe0-4741-a177-6e8c3b97724a"
REDEMPTION = "b3f0659d-b3f7-46f4-a342-36f945063f94"
SURVEY = "2a2d408e-bbf4-494a-b29b-08ae3914f1a7"
HARRIET = "harriet.quill@example.com"
OMAR = "omar.lindqvist@example.org"


def ms(iso: str) -> int:
    """Epoch milliseconds, computed independently of the connector's filters."""
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return load_mappings(load_settings(PROJECT_ROOT / "config.yaml", environ={}))


def plan(mappings: MappingSet, sample: str) -> dict[str, dict]:
    outcomes = mappings.plan(json.loads(sample_bytes(sample)))
    return {outcome.mapping: outcome.to_json() for outcome in outcomes}


def hubspot_contact_association(email: str | None, loyalty_customer: str | None = None, *,
                                customer: str | None = None, source_type: str = "loyalty_customer") -> dict:
    """The association to the shopper's contact: found through the link table first (the member, then
    the shopper), then by email; created from the email when none is found (`if_missing: create`)."""
    association = {
        "to": "contacts",
        "key": {"field": "email", "value": email} if email else None,
        "source": {"type": source_type, "id": loyalty_customer} if loyalty_customer else None,
        "hubspot_type": 202,
        "field": None,
        "if_missing": "create",
    }
    if customer:
        association["identities"] = [{"type": "customer", "id": customer}]
    return association


def salesforce_contact_association(email: str | None, loyalty_customer: str | None = None, *,
                                   customer: str | None = None, source_type: str = "loyalty_customer",
                                   last_name: str | None = None) -> dict:
    association = {
        "to": "Contact",
        "key": {"field": "Email", "value": email} if email else None,
        "source": {"type": source_type, "id": loyalty_customer} if loyalty_customer else None,
        "hubspot_type": None,
        "field": "Contact__c",
        "if_missing": "create",
    }
    if customer:
        association["identities"] = [{"type": "customer", "id": customer}]
    if last_name or email:
        association["create_properties"] = {"LastName": last_name or email}
    return association


def ready(action, obj, source, key=None, properties=None, create_only=None, associations=None,
          identities=None) -> dict:
    operation = {
        "object": obj,
        "action": action,
        "source": {"type": source[0], "id": source[1]},
        "key": {"field": key[0], "value": key[1]} if key else None,
        "properties": properties or {},
        "create_only_properties": create_only or {},
        "associations": associations or [],
    }
    if identities:
        operation["identities"] = [{"type": kind, "id": value} for kind, value in identities]
    return operation


def assert_ready(outcome: dict, expected_operation: dict, destination: str) -> None:
    assert outcome["status"] == "ready", outcome["reason"]
    assert outcome["destination"] == destination
    assert outcome["warnings"] == []
    assert outcome["operation"] == expected_operation


# --- reviews ---------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["review.create", "review.update"])
def test_review_create_and_update(mappings, sample):
    outcomes = plan(mappings, sample)
    assert set(outcomes) == {"hubspot_contact_from_review", "hubspot_review_note", "salesforce_contact_from_review",
                             "salesforce_review"}
    assert_ready(outcomes["hubspot_contact_from_review"], ready(
        "upsert", "contacts", ("review", REVIEW), ("email", HARRIET), {
            "email": HARRIET, "firstname": "Harriet", "lastname": "Quill", "okendo_last_review_rating": 4,
            "okendo_last_review_date": "2025-11-03", "okendo_last_review_product": "Merino Crew Sweater - Oatmeal",
        }), "hubspot")

    note = outcomes["hubspot_review_note"]
    body = note["operation"]["properties"].pop("hs_note_body")
    assert_ready(note, ready("upsert", "notes", ("review", REVIEW), None,
                             {"hs_timestamp": ms("2025-11-03T09:14:22.518Z")},
                             associations=[hubspot_contact_association(HARRIET)]), "hubspot")
    assert body.startswith("<p><strong>Okendo review: 4/5 (Good)</strong> for Merino Crew Sweater - Oatmeal</p>")
    assert "<p>Warm without being bulky. The cuffs stretched a little after a month but it still looks great.</p>" in body
    assert "<p>Would recommend.</p>" in body
    assert body.endswith(f"<p>Review {REVIEW}, order #1042</p>")
    reply = "<p><em>Store reply:</em> Thanks Harriet! Our care guide has tips on keeping cuffs in shape.</p>"
    assert (reply in body) == (sample == "review.update")

    assert_ready(outcomes["salesforce_contact_from_review"], ready(
        "upsert", "Contact", ("review", REVIEW), ("Email", HARRIET),
        {"Email": HARRIET, "Okendo_Last_Review_Rating__c": 4, "Okendo_Last_Review_Date__c": "2025-11-03"},
        create_only={"FirstName": "Harriet", "LastName": "Quill"}), "salesforce")

    review = {
        "Name": "4/5 Merino Crew Sweater - Oatmeal", "Rating__c": 4,
        "Body__c": "Warm without being bulky. The cuffs stretched a little after a month but it still looks great.",
        "Product_Id__c": "7301559844912", "Product_Name__c": "Merino Crew Sweater - Oatmeal",
        "Reviewer_Name__c": "Harriet Quill", "Reviewer_Email__c": HARRIET, "Is_Recommended__c": True,
        "Verified_Buyer__c": True, "Contains_Profanity__c": False, "Order_Number__c": "#1042",
        "Review_Date__c": "2025-11-03T09:14:22.518Z",
    }
    if sample == "review.update":
        review["Reply__c"] = "Thanks Harriet! Our care guide has tips on keeping cuffs in shape."
    assert_ready(outcomes["salesforce_review"], ready(
        "upsert", "Okendo_Review__c", ("review", REVIEW), ("Okendo_Review_Id__c", REVIEW), review,
        associations=[salesforce_contact_association(HARRIET, last_name="Quill")]), "salesforce")


def test_review_delete_archives_the_note_and_deletes_the_record(mappings):
    outcomes = plan(mappings, "review.delete")
    assert set(outcomes) == {"hubspot_review_note_delete", "salesforce_review_delete"}
    assert_ready(outcomes["hubspot_review_note_delete"], ready("delete", "notes", ("review", REVIEW)), "hubspot")
    assert_ready(outcomes["salesforce_review_delete"], ready(
        "delete", "Okendo_Review__c", ("review", REVIEW), ("Okendo_Review_Id__c", REVIEW)), "salesforce")


# --- loyalty members -------------------------------------------------------------


@pytest.mark.parametrize("sample,birthday", [("loyalty_customer.create", "06-17"), ("loyalty_customer.update", "06-18")])
def test_loyalty_customer_create_and_update(mappings, sample, birthday):
    outcomes = plan(mappings, sample)
    assert set(outcomes) == {"hubspot_contact_from_loyalty_customer", "salesforce_contact_from_loyalty_customer"}
    source = ("loyalty_customer", LOYALTY_CUSTOMER)
    assert_ready(outcomes["hubspot_contact_from_loyalty_customer"], ready(
        "upsert", "contacts", source, ("email", HARRIET), {
            "email": HARRIET, "okendo_customer_id": OKENDO_CUSTOMER,
            "okendo_loyalty_customer_id": LOYALTY_CUSTOMER, "okendo_birthday": birthday,
        }, identities=[("customer", OKENDO_CUSTOMER)]), "hubspot")
    assert_ready(outcomes["salesforce_contact_from_loyalty_customer"], ready(
        "upsert", "Contact", source, ("Email", HARRIET), {
            "Email": HARRIET, "Okendo_Customer_Id__c": OKENDO_CUSTOMER,
            "Okendo_Loyalty_Customer_Id__c": LOYALTY_CUSTOMER, "Okendo_Birthday__c": birthday,
        }, create_only={"LastName": HARRIET}, identities=[("customer", OKENDO_CUSTOMER)]), "salesforce")


def test_loyalty_customer_delete_without_email_updates_the_linked_contact(mappings):
    outcomes = plan(mappings, "loyalty_customer.delete")
    source = ("loyalty_customer", LOYALTY_CUSTOMER)
    # No key (the delete carries no customer): the link table names the contact.
    assert_ready(outcomes["hubspot_contact_loyalty_removed"],
                 ready("update", "contacts", source, None, {"okendo_loyalty_status": "removed"}), "hubspot")
    assert_ready(outcomes["salesforce_contact_loyalty_removed"],
                 ready("update", "Contact", source, None, {"Okendo_Loyalty_Status__c": "removed"}), "salesforce")


def test_loyalty_member_fields_are_written_when_okendo_sends_them(mappings):
    document = json.loads(sample_bytes("loyalty_customer.update"))
    document["resource"].update(status="enrolled", points={"balance": 1250}, vipTierName="Gold")
    outcomes = {outcome.mapping: outcome for outcome in mappings.plan(document)}
    hubspot = outcomes["hubspot_contact_from_loyalty_customer"].operation.properties
    salesforce = outcomes["salesforce_contact_from_loyalty_customer"].operation.properties
    assert (hubspot["okendo_loyalty_status"], hubspot["okendo_loyalty_points_balance"], hubspot["okendo_loyalty_tier"]) == (
        "enrolled", 1250, "Gold")
    assert (salesforce["Okendo_Loyalty_Status__c"], salesforce["Okendo_Points_Balance__c"],
            salesforce["Okendo_VIP_Tier__c"]) == ("enrolled", 1250, "Gold")


# --- loyalty transactions ----------------------------------------------------------

TRANSACTIONS = {
    # sample: (id, kind label, salesforce type, amount, date, reason, notification)
    "loyalty_adjustment_transaction.create": (ADJUSTMENT, "Points adjusted", "Adjustment", 250, "2025-11-05T21:03:44.102Z",
                                              "Goodwill - delayed shipment", "A little thank-you for your patience"),
    "loyalty_adjustment_transaction.update": (ADJUSTMENT, "Points adjusted", "Adjustment", 250, "2025-11-05T21:03:44.102Z",
                                              "Goodwill - delayed shipment",
                                              "A little thank-you for your patience (updated)"),
    "loyalty_earning_transaction.create": (EARNING, "Points earned", "Earning", 145, "2025-11-03T09:20:01.774Z", None, None),
    "loyalty_earning_transaction.update": (EARNING, "Points earned", "Earning", 120, "2025-11-03T09:20:01.774Z", None, None),
    "loyalty_redemption_transaction.create": (REDEMPTION, "Points redeemed", "Redemption", 500,
                                              "2025-11-12T17:45:30.009Z", None, None),
    "loyalty_redemption_transaction.update": (REDEMPTION, "Points redeemed", "Redemption", 500,
                                              "2025-11-12T17:45:30.009Z", None, None),
}


@pytest.mark.parametrize("sample", sorted(TRANSACTIONS))
def test_loyalty_transaction_create_and_update(mappings, sample):
    transaction_id, label, kind, amount, date, reason, notification = TRANSACTIONS[sample]
    resource_type = sample.split(".")[0]
    outcomes = plan(mappings, sample)
    assert set(outcomes) == {"hubspot_loyalty_transaction_note", "salesforce_loyalty_transaction"}

    note = outcomes["hubspot_loyalty_transaction_note"]
    body = note["operation"]["properties"].pop("hs_note_body")
    assert_ready(note, ready("upsert", "notes", (resource_type, transaction_id), None, {"hs_timestamp": ms(date)},
                             associations=[hubspot_contact_association(HARRIET, LOYALTY_CUSTOMER, customer=OKENDO_CUSTOMER)]), "hubspot")
    assert body.startswith(f"<p><strong>Okendo loyalty: {label}</strong>: {amount} points (complete)</p>")
    assert body.endswith(f"<p>Transaction {transaction_id}</p>")
    assert (f"<p>Reason: {reason}</p>" in body) == (reason is not None)
    assert (f"<p>Shopper saw: {notification}</p>" in body) == (notification is not None)

    expected = {"Name": f"{kind} {amount} points", "Type__c": kind, "Points__c": amount, "Status__c": "complete",
                "Loyalty_Customer_Id__c": LOYALTY_CUSTOMER, "Transaction_Date__c": date}
    if reason:
        expected.update(Reason__c=reason, Notification_Text__c=notification)
    assert_ready(outcomes["salesforce_loyalty_transaction"], ready(
        "upsert", "Okendo_Loyalty_Transaction__c", (resource_type, transaction_id),
        ("Okendo_Transaction_Id__c", transaction_id), expected,
        associations=[salesforce_contact_association(HARRIET, LOYALTY_CUSTOMER, customer=OKENDO_CUSTOMER)]),
        "salesforce")


@pytest.mark.parametrize("sample,transaction_id", [
    ("loyalty_adjustment_transaction.delete", ADJUSTMENT),
    ("loyalty_earning_transaction.delete", EARNING),
    ("loyalty_redemption_transaction.delete", REDEMPTION),
])
def test_loyalty_transaction_delete_carries_only_ids(mappings, sample, transaction_id):
    resource_type = sample.split(".")[0]
    outcomes = plan(mappings, sample)
    assert_ready(outcomes["hubspot_loyalty_transaction_note_delete"],
                 ready("delete", "notes", (resource_type, transaction_id)), "hubspot")
    assert_ready(outcomes["salesforce_loyalty_transaction_delete"], ready(
        "delete", "Okendo_Loyalty_Transaction__c", (resource_type, transaction_id),
        ("Okendo_Transaction_Id__c", transaction_id)), "salesforce")


def test_transaction_without_email_associates_through_the_loyalty_member(mappings):
    document = json.loads(sample_bytes("loyalty_earning_transaction.create"))
    del document["resource"]["customer"]
    outcomes = {outcome.mapping: outcome.to_json() for outcome in mappings.plan(document)}
    assert outcomes["hubspot_loyalty_transaction_note"]["operation"]["associations"] == [
        hubspot_contact_association(None, LOYALTY_CUSTOMER)]
    assert outcomes["salesforce_loyalty_transaction"]["operation"]["associations"] == [
        salesforce_contact_association(None, LOYALTY_CUSTOMER)]


# --- survey responses --------------------------------------------------------------


def test_survey_response_create(mappings):
    outcomes = plan(mappings, "survey_response.create")
    assert set(outcomes) == {"hubspot_contact_from_survey_response", "hubspot_survey_response_note",
                             "salesforce_contact_from_survey_response", "salesforce_survey_response"}
    source = ("survey_response", SURVEY)
    assert_ready(outcomes["hubspot_contact_from_survey_response"], ready(
        "upsert", "contacts", source, ("email", OMAR), {
            "email": OMAR, "okendo_customer_id": "5b5e0bb1-fc78-424e-ac38-0ca6bd431441",
            "okendo_last_survey_date": "2025-11-06", "okendo_last_nps_score": 9,
        }, identities=[("customer", "5b5e0bb1-fc78-424e-ac38-0ca6bd431441")]), "hubspot")
    assert_ready(outcomes["hubspot_survey_response_note"], ready(
        "upsert", "notes", source, None, {
            "hs_timestamp": ms("2025-11-06T11:02:57.300Z"),
            "hs_note_body": "<p><strong>Okendo survey: Post-purchase attribution</strong></p> "
                            "<ul><li>How did you hear about us?: Podcast</li>"
                            "<li>How likely are you to recommend us to a friend?: 9</li></ul> "
                            f"<p>Response {SURVEY}, order 5821934470555</p>",
        }, associations=[hubspot_contact_association(OMAR, "5b5e0bb1-fc78-424e-ac38-0ca6bd431441", source_type="customer")]), "hubspot")
    assert_ready(outcomes["salesforce_contact_from_survey_response"], ready(
        "upsert", "Contact", source, ("Email", OMAR), {
            "Email": OMAR, "Okendo_Customer_Id__c": "5b5e0bb1-fc78-424e-ac38-0ca6bd431441",
            "Okendo_Last_Survey_Date__c": "2025-11-06", "Okendo_Last_NPS_Score__c": 9,
        }, create_only={"LastName": OMAR}, identities=[("customer", "5b5e0bb1-fc78-424e-ac38-0ca6bd431441")]), "salesforce")
    assert_ready(outcomes["salesforce_survey_response"], ready(
        "upsert", "Okendo_Survey_Response__c", source, ("Okendo_Survey_Response_Id__c", SURVEY), {
            "Name": "Post-purchase attribution", "Survey_Name__c": "Post-purchase attribution", "Channel__c": "email",
            "Answers__c": "How did you hear about us?: Podcast\nHow likely are you to recommend us to a friend?: 9",
            "NPS_Score__c": 9, "Order_Id__c": "5821934470555", "Response_Date__c": "2025-11-06T11:02:57.300Z",
        }, associations=[salesforce_contact_association(OMAR, "5b5e0bb1-fc78-424e-ac38-0ca6bd431441", source_type="customer")]),
        "salesforce")


# --- missing customer keys and hostile content -----------------------------------------


def test_review_without_reviewer_email_skips_the_contact_and_writes_the_note_unlinked(mappings):
    document = json.loads(sample_bytes("review.create"))
    document["resource"]["reviewer"]["email"] = None
    outcomes = {outcome.mapping: outcome for outcome in mappings.plan(document)}

    contact = outcomes["hubspot_contact_from_review"]
    assert (contact.status, contact.reason) == ("skipped", "no value for key email (resource.reviewer.email | email is missing)")
    assert outcomes["salesforce_contact_from_review"].status == "skipped"
    note = outcomes["hubspot_review_note"]
    assert note.status == "ready" and note.operation.associations == []
    assert note.warnings == ["association to contacts: no value to find it by (resource.reviewer.email | email is missing); "
                             "the record is written without it"]
    assert outcomes["salesforce_review"].status == "ready"


def test_review_without_a_date_fails_the_note_with_the_field_named(mappings):
    document = json.loads(sample_bytes("review.create"))
    del document["resource"]["dateCreated"]
    note = next(outcome for outcome in mappings.plan(document) if outcome.mapping == "hubspot_review_note")
    assert note.status == "failed"
    assert note.reason == ("fields.hs_timestamp is required but has no value "
                           "(resource.dateCreated | hubspot_datetime is missing)")


def test_review_html_and_script_are_escaped_in_note_bodies(mappings):
    document = json.loads(sample_bytes("review.create"))
    document["resource"]["body"] = '<script>alert("x")</script><b>bold</b>'
    document["resource"]["productName"] = "Tee & <Co>"
    note = next(outcome for outcome in mappings.plan(document) if outcome.mapping == "hubspot_review_note")
    body = note.operation.properties["hs_note_body"]
    assert "<script>" not in body and "<b>bold" not in body
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in body
    assert "for Tee &amp; &lt;Co&gt;</p>" in body


def test_null_payload_values_render_like_missing_ones(mappings):
    document = json.loads(sample_bytes("review.create"))
    document["resource"].update(rating=None, productName=None)
    outcomes = {outcome.mapping: outcome for outcome in mappings.plan(document)}
    body = outcomes["hubspot_review_note"].operation.properties["hs_note_body"]
    assert body.startswith("<p><strong>Okendo review: ?/5 (unrated)</strong> for a product</p>")
    assert "None" not in body
    assert outcomes["salesforce_review"].operation.properties["Name"] == "?/5 review"

    survey = json.loads(sample_bytes("survey_response.create"))
    survey["resource"]["answeredQuestions"] = None
    outcomes = {outcome.mapping: outcome for outcome in mappings.plan(survey)}
    assert outcomes["hubspot_survey_response_note"].status == "ready"
    assert "Answers__c" not in outcomes["salesforce_survey_response"].operation.properties
