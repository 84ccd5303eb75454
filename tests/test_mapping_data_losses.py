"""Okendo data the shipped mappings used to lose on the way to the CRMs, planned and delivered.

- text carrying U+0000 or other control characters, which went through unchanged.

Payloads are the shipped samples, changed here in the test (the samples stay copies of
Okendo's reference material).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from connector.config import HubSpotDestinationConfig, SalesforceDestinationConfig, settings_from_mapping
from connector.destinations.base import OK, Work
from connector.destinations.hubspot import HubSpotDestination
from connector.destinations.ratelimit import RateLimiter
from connector.destinations.salesforce import SalesforceDestination
from connector.mapping.engine import MappingSet
from connector.mapping.loader import load_mappings
from connector.mapping.operations import Outcome
from connector.samples import sample_bytes
from tests.crm import deliver, ledger_links, shipped_mappings
from tests.emulators.hubspot import HubSpotEmulator
from tests.emulators.salesforce import SalesforceEmulator, tls_for_tests

MAPPINGS = shipped_mappings()
HARRIET = "harriet.quill@example.com"
REVIEW = "30087cea-f3ab-40c4-9bf9-dd72e8285b6d"


def sample(name: str) -> dict:
    return json.loads(sample_bytes(name))


def outcomes_for(document: dict, mappings: MappingSet = MAPPINGS) -> dict[str, Outcome]:
    return {outcome.mapping: outcome for outcome in mappings.plan(document)}


def ready_properties(outcome: Outcome) -> dict[str, Any]:
    assert outcome.status == "ready", outcome.reason
    return outcome.operation.properties


def works_from(document: dict, destination: str) -> list[Work]:
    """The ready operations of one event for one CRM, as the worker hands them to it."""
    outcomes = [o for o in MAPPINGS.plan(document) if o.destination == destination and o.status == "ready"]
    return [Work(number, outcome.operation, 0) for number, outcome in enumerate(outcomes, start=1)]


# --- the two emulated CRMs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, str]:
    return tls_for_tests(tmp_path_factory.mktemp("sf-tls"))


@pytest.fixture(scope="module")
def salesforce_server(tls) -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(tls_context=tls[0]) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def hubspot_server() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(rate_limit=None) as emulator:
        yield emulator


@pytest.fixture
def salesforce_crm(salesforce_server, tls, monkeypatch) -> SalesforceEmulator:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls[1])  # the machine-wide bundle would override session.verify
    salesforce_server.reset()
    return salesforce_server


@pytest.fixture
def hubspot_crm(hubspot_server) -> HubSpotEmulator:
    hubspot_server.reset()
    return hubspot_server


@pytest.fixture
def salesforce(salesforce_crm) -> SalesforceDestination:
    config = SalesforceDestinationConfig(type="salesforce", instance_url=salesforce_crm.url, access_token="00Dtest!token",
                                         timeout_s=2, max_retry_wait_s=1)
    destination = SalesforceDestination("salesforce", config)
    destination.limiter = RateLimiter(None, 1.0, config.rate_limit.max_concurrency)
    return destination


@pytest.fixture
def hubspot(hubspot_crm) -> HubSpotDestination:
    config = HubSpotDestinationConfig(type="hubspot", access_token="test-token", base_url=hubspot_crm.url,
                                      timeout_s=2, max_retry_wait_s=2)
    destination = HubSpotDestination("hubspot", config)
    destination.limiter = RateLimiter(config.rate_limit.requests, config.rate_limit.per_seconds)
    destination.create_missing_properties(MAPPINGS)  # what `connector setup hubspot` does
    return destination


@pytest.fixture
def links(tmp_path):
    return ledger_links(tmp_path)


def deliver_all(destination, document: dict, links) -> None:
    results = deliver(destination, works_from(document, destination.name), links)
    assert [r.status for r in results] == [OK] * len(results), [str(r.error) for r in results]


def note_body(emulator: HubSpotEmulator, source: str) -> str:
    note = emulator.find("notes", okendo_source_key=source)
    assert note is not None, f"no note for {source}"
    return note["properties"]["hs_note_body"]


# --- (b) control characters --------------------------------------------------------------------------

CLEAN_BODY = "Warm without being bulky.\nThe cuffs\tstretched a little."


def review_with_control_characters() -> dict:
    document = sample("review.create")
    # NUL, BEL, ESC and DEL go; tab and newline stay; CRLF and a lone CR become newlines.
    document["resource"]["body"] = "Warm\x00 without being\x07 bulky.\r\nThe cuffs\tstretched\x1b a little.\x7f"
    return document


def test_control_characters_are_stripped_from_text_fields_with_a_warning_naming_each_field():
    outcomes = outcomes_for(review_with_control_characters())
    salesforce = outcomes["salesforce_review"]
    assert ready_properties(salesforce)["Body__c"] == CLEAN_BODY
    assert salesforce.warnings == ["field Body__c: removed 4 control character(s)"]

    note = outcomes["hubspot_review_note"]
    body = ready_properties(note)["hs_note_body"]
    assert f"<p>{CLEAN_BODY}</p>" in body
    assert note.warnings == ["field hs_note_body: removed 4 control character(s)"]
    # Fields without control characters give no warning.
    assert outcomes["hubspot_contact_from_review"].warnings == []


def test_carriage_returns_become_newlines_without_a_warning():
    document = sample("review.create")
    document["resource"]["body"] = "one\r\ntwo\rthree\n\nfour"
    outcome = outcomes_for(document)["salesforce_review"]
    assert ready_properties(outcome)["Body__c"] == "one\ntwo\nthree\n\nfour"
    assert outcome.warnings == []


def test_keys_lose_their_control_characters_too():
    document = sample("review.create")
    document["resource"]["reviewer"]["email"] = "Harriet\x00.Quill@example.com"
    outcomes = outcomes_for(document)

    contact = outcomes["salesforce_contact_from_review"]
    assert contact.operation.key.value == HARRIET
    assert ready_properties(contact)["Email"] == HARRIET
    assert contact.warnings == ["key Email: removed 1 control character(s)", "field Email: removed 1 control character(s)"]

    note = outcomes["hubspot_review_note"]
    assert note.operation.associations[0].key.value == HARRIET
    assert note.warnings == ["association to contacts (key email): removed 1 control character(s)"]


def test_a_text_of_control_characters_only_is_left_out_and_max_length_counts_what_is_kept():
    document = sample("review.create")
    document["resource"]["title"] = "\x00\x01\x02"
    document["resource"]["productName"] = "\x00" * 100 + "Sweater"
    outcome = outcomes_for(document)["salesforce_review"]
    properties = ready_properties(outcome)
    assert "Title__c" not in properties  # not "": an empty text would blank the CRM field
    assert properties["Name"] == "4/5 Sweater"  # max_length 80 would have cut it to control characters only
    assert properties["Product_Name__c"] == "Sweater"
    assert "field Title__c: removed 3 control character(s)" in outcome.warnings


def test_text_inside_lists_is_stripped_and_other_values_stay():
    settings = settings_from_mapping({
        "destinations": {"hubspot": {"type": "hubspot"}},
        "mappings": {"inline": [{
            "name": "tags", "events": "review.create", "destination": "hubspot", "object": "contacts",
            "operation": "upsert", "key": {"field": "email", "value": "resource.reviewer.email | email"},
            "fields": {"okendo_tags": "resource.tags", "okendo_rating": "resource.rating",
                       "okendo_recommends": "resource.isRecommended"},
        }]},
    }, environ={})
    document = sample("review.create")
    document["resource"]["tags"] = ["wool\x00", "winter", {"note": "cosy\x1f"}, 3]
    outcome = outcomes_for(document, load_mappings(settings))["tags"]
    assert ready_properties(outcome) == {"okendo_tags": ["wool", "winter", {"note": "cosy"}, 3],
                                         "okendo_rating": 4, "okendo_recommends": True}
    assert outcome.warnings == ["field okendo_tags: removed 2 control character(s)"]


def test_stripped_text_lands_in_both_crms(hubspot_crm, hubspot, salesforce_crm, salesforce, links):
    document = review_with_control_characters()
    document["resource"]["reviewer"]["email"] = "harriet.quill@example.com\x00"
    deliver_all(hubspot, document, links)
    deliver_all(salesforce, document, links)

    assert f"<p>{CLEAN_BODY}</p>" in note_body(hubspot_crm, f"review:{REVIEW}")
    assert hubspot_crm.find("contacts", email=HARRIET) is not None
    [review] = salesforce_crm.find("Okendo_Review__c", Okendo_Review_Id__c=REVIEW)
    assert review["Body__c"] == CLEAN_BODY
    [contact] = salesforce_crm.find("Contact", Email=HARRIET)
    assert review["Contact__c"] == contact["Id"]
