"""`connector check --remote` and `connector setup hubspot` against the CRM emulators."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import yaml

from connector.cli import main
from tests.emulators.hubspot import HubSpotEmulator
from tests.emulators.salesforce import SalesforceEmulator, tls_for_tests

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path: Path) -> Path:
    """The shipped config and mappings, with the CRM hosts from the environment."""
    tree = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    tree["mappings"]["files"] = [str(PROJECT_ROOT / f) for f in tree["mappings"]["files"]]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture
def crms(tmp_path, monkeypatch):
    context, ca = tls_for_tests(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    with HubSpotEmulator(rate_limit=None) as hubspot, SalesforceEmulator(tls_context=context) as salesforce:
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "test-token")
        monkeypatch.setenv("HUBSPOT_BASE_URL", hubspot.url)
        monkeypatch.setenv("SALESFORCE_INSTANCE_URL", salesforce.url)
        monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", "00Dtest!token")
        yield hubspot, salesforce


def test_check_remote_setup_then_check_again(runner, tmp_path, crms):
    hubspot, salesforce = crms
    path = str(config(tmp_path))
    salesforce.remove_field("Contact", "Okendo_VIP_Tier__c")

    before = runner.invoke(main, ["--config", path, "check", "--remote"])
    assert before.exit_code == 1
    assert "the CRMs are not ready for the mappings" in before.output
    assert "hubspot: contacts is missing properties" in before.output and "okendo_last_nps_score" in before.output
    assert "hubspot: notes is missing property okendo_source_key" in before.output
    assert "salesforce: Contact is missing field Okendo_VIP_Tier__c" in before.output

    setup = runner.invoke(main, ["--config", path, "setup", "hubspot"], input="y\n")
    assert setup.exit_code == 0, setup.output
    assert "hubspot: created contacts.okendo_last_review_rating" in setup.output
    created = requests.get(f"{hubspot.url}/crm/v3/properties/contacts/okendo_last_review_rating",
                           headers={"Authorization": "Bearer test-token"}, timeout=5).json()
    assert (created["groupName"], created["type"]) == ("okendo", "number")

    salesforce.add_field("Contact", "Okendo_VIP_Tier__c", length=80)
    after = runner.invoke(main, ["--config", path, "check", "--remote"])
    assert after.exit_code == 0, after.output
    assert "remote hubspot: OK" in after.output and "remote salesforce: OK" in after.output


def test_setup_asks_before_creating(runner, tmp_path, crms):
    result = runner.invoke(main, ["--config", str(config(tmp_path)), "setup", "hubspot"], input="n\n")
    assert result.exit_code == 1 and "nothing created" in result.output


def test_check_remote_reports_a_refused_token(runner, tmp_path, crms, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "wrong")
    result = runner.invoke(main, ["--config", str(config(tmp_path)), "check", "--remote"])
    assert result.exit_code == 1
    assert "hubspot: HubSpot refused the access token" in result.output and "HUBSPOT_ACCESS_TOKEN" in result.output
