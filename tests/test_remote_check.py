"""The server checks each CRM in the background at start and after each reload (issue 14): what the
mappings write that the CRM lacks is on the status page and in the log, with what fixes it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from tests.crm import PROJECT_ROOT
from tests.emulators.hubspot import HubSpotEmulator
from tests.servers import gunicorn


def server_config(tmp_path, hubspot: HubSpotEmulator, crms) -> dict:
    destinations = crms.destinations()
    destinations["hubspot"]["base_url"] = hubspot.url
    return {"database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            "destinations": destinations,
            "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                                   str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]}}


def remote_problems(base_url: str) -> dict[str, list[str]]:
    stats = requests.get(f"{base_url}/api/stats", timeout=5).json()
    return {name: info["remote_problems"] for name, info in stats["destinations"].items()}


@pytest.fixture
def bare_portal():
    with HubSpotEmulator() as hubspot:  # nobody ran `connector setup hubspot` here
        yield hubspot


def test_a_portal_missing_properties_is_reported_at_start_and_cleared_after_setup_and_reload(
        tmp_path, crms, bare_portal):
    crms.salesforce.remove_field("Contact", "Okendo_VIP_Tier__c")
    with gunicorn(tmp_path, server_config(tmp_path, bare_portal, crms), env=crms.environ, workers=2) as server:
        log = server.wait_for_log("remote check: salesforce:")
        log = server.wait_for_log("remote check: hubspot: contacts is missing properties")
        problems = remote_problems(server.base_url)
        assert any("okendo_last_review_rating" in p and "connector setup hubspot" in p for p in problems["hubspot"])
        assert problems["salesforce"] == [
            "salesforce: Contact is missing field Okendo_VIP_Tier__c (create it, and grant the integration user access, "
            "with `connector setup salesforce`)"]
        page = requests.get(f"{server.base_url}/status/", timeout=5).text
        assert "remote check: hubspot: contacts is missing properties" in page
        assert "connector setup hubspot" in page
        # Two gunicorn workers, one check per configuration load.
        assert log.count("remote check: hubspot: contacts is missing properties") == 1

        setup = subprocess.run([sys.executable, "-m", "connector.cli", "--config", str(server.config_path),
                                "setup", "hubspot", "--yes"], env=dict(os.environ), capture_output=True,
                               text=True, cwd=PROJECT_ROOT)
        assert setup.returncode == 0, setup.stderr
        crms.salesforce.add_field("Contact", "Okendo_VIP_Tier__c")
        server.reload()
        server.wait_for_log("remote check: hubspot has everything the mappings write")
        server.wait_for_log("remote check: salesforce has everything the mappings write")
        assert remote_problems(server.base_url) == {"hubspot": [], "salesforce": []}
        assert "remote check:" not in requests.get(f"{server.base_url}/status/", timeout=5).text
