"""Without credentials a destination runs dry: it records the request it would have made."""

from __future__ import annotations

import json

import pytest

from connector.config import HubSpotDestinationConfig, SalesforceDestinationConfig, settings_from_mapping
from connector.destinations import build_destinations
from connector.destinations.base import OK, NoLinks
from connector.destinations.dryrun import DryRunDestination
from connector.destinations.hubspot import HubSpotDestination
from connector.destinations.ratelimit import RateLimiter
from connector.destinations.salesforce import SalesforceDestination
from tests.crm import deliver, ledger_links, link_rows, shipped_mappings, works_for
from tests.emulators.hubspot import HubSpotEmulator
from tests.emulators.salesforce import SalesforceEmulator, tls_for_tests

MAPPINGS = shipped_mappings()
SHIPPED_DESTINATIONS = {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}}


def test_destinations_without_credentials_are_dry_runs():
    destinations = build_destinations(settings_from_mapping({"destinations": SHIPPED_DESTINATIONS}, environ={}))
    assert all(isinstance(d, DryRunDestination) for d in destinations.values())
    with_token = build_destinations(settings_from_mapping({"destinations": {
        "hubspot": {"type": "hubspot", "access_token": "${T}"},
        "salesforce": {"type": "salesforce", "instance_url": "https://x.my.salesforce.com", "access_token": "${T}"},
    }}, environ={"T": "secret"}))
    assert isinstance(with_token["hubspot"], HubSpotDestination)
    assert isinstance(with_token["salesforce"], SalesforceDestination)


def test_a_dry_run_writes_nothing_and_records_no_links(tmp_path):
    links = ledger_links(tmp_path)
    destination = build_destinations(settings_from_mapping({"destinations": SHIPPED_DESTINATIONS}, environ={}))["hubspot"]
    results = deliver(destination, works_for(MAPPINGS, "hubspot", "review.create"), links)
    assert [r.status for r in results] == [OK, OK]
    assert all(r.record_id is None and r.requests[0]["dry_run"] for r in results)
    assert link_rows(links) == []
    note = results[1].requests[0]
    assert note["path"] == "/crm/v3/objects/notes/batch/create"
    association = note["body"]["inputs"][0]["associations"][0]
    assert association["to"]["id"] == "<id of the contacts with email harriet.quill@example.com>"
    assert note["body"]["inputs"][0]["properties"]["okendo_source_key"] == \
        "review:30087cea-f3ab-40c4-9bf9-dd72e8285b6d"


def without_flag(request: dict) -> dict:
    return {key: value for key, value in request.items() if key != "dry_run"}


def test_the_recorded_hubspot_upsert_is_exactly_what_the_real_destination_sends(tmp_path):
    works = [w for w in works_for(MAPPINGS, "hubspot", "review.create") if w.operation.object == "contacts"]
    dry = DryRunDestination("hubspot", "hubspot", source_key_property="okendo_source_key")
    [recorded] = dry.deliver(works, NoLinks())[0].requests
    with HubSpotEmulator(rate_limit=None) as emulator:
        real = HubSpotDestination("hubspot", HubSpotDestinationConfig(type="hubspot", access_token="test-token",
                                                                       base_url=emulator.url))
        real.limiter = RateLimiter(None, 1.0)
        real.create_missing_properties(MAPPINGS)
        assert real.deliver(works, NoLinks())[0].status == OK
        [sent] = emulator.calls("POST", "/crm/v3/objects/contacts/batch/upsert")
    assert without_flag(recorded) == {"method": "POST", "path": sent.path, "body": sent.body}


@pytest.mark.parametrize("sample,sobject", [("review.create", "Okendo_Review__c"),
                                            ("loyalty_earning_transaction.delete", "Okendo_Loyalty_Transaction__c")])
def test_the_recorded_salesforce_request_matches_the_real_one(tmp_path, monkeypatch, sample, sobject):
    works = [w for w in works_for(MAPPINGS, "salesforce", sample) if w.operation.object == sobject]
    dry = DryRunDestination("salesforce", "salesforce", api_version="62.0")
    recorded = dry.deliver(works, NoLinks())[0].requests[-1]
    context, ca = tls_for_tests(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    with SalesforceEmulator(tls_context=context) as emulator:
        real = SalesforceDestination("salesforce", SalesforceDestinationConfig(
            type="salesforce", instance_url=emulator.url, access_token="00Dtest!token"))
        real.limiter = RateLimiter(None, 1.0)
        harriet = emulator.insert("Contact", {"Email": "harriet.quill@example.com", "LastName": "Quill"})
        if sample.endswith(".delete"):
            emulator.insert(sobject, {"Name": "t", "Okendo_Transaction_Id__c": works[0].operation.key.value})
        real.deliver(works, NoLinks())
        sent = [c for c in emulator.calls() if "/composite/" in c.path][-1]
    if sample.endswith(".delete"):
        assert (recorded["method"], sent.method) == ("DELETE", "DELETE")
        assert recorded["path"].startswith(sent.path)
    else:
        body = json.loads(json.dumps(recorded["body"]).replace(
            '"<id of the Contact with Email harriet.quill@example.com>"', json.dumps(harriet)))
        assert (recorded["method"], recorded["path"], body) == (sent.method, sent.path, sent.body)
