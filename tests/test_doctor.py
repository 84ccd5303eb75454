"""`connector doctor`: one line per check, and for each failure what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from connector.cli import main
from connector.ledger.migrate import head_revision, upgrade
from tests.emulators.okendo import OkendoEmulator
from tests.servers import free_port
from tests.signing import SECRET

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CREDENTIAL_VARIABLES = ("HUBSPOT_ACCESS_TOKEN", "HUBSPOT_BASE_URL", "SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN",
                        "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_USERNAME",
                        "SALESFORCE_PRIVATE_KEY", "SALESFORCE_PRIVATE_KEY_FILE", "CONNECTOR_ADMIN_PASSWORD",
                        "OKENDO_USER_ID", "OKENDO_API_KEY", "OKENDO_API_BASE_URL", "CONNECTOR_DATABASE_URL")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """The shipped config in a folder of its own, a migrated SQLite ledger, a secret; no CRM credentials."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OKENDO_WEBHOOK_SECRETS", SECRET)
    tree = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    tree["mappings"]["files"] = [str(PROJECT_ROOT / f) for f in tree["mappings"]["files"]]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    ledger = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    (tmp_path / "data").mkdir()
    upgrade(ledger)
    ledger.dispose()
    return path


def doctor(runner, config: Path):  # type: ignore[no-untyped-def]
    return runner.invoke(main, ["--config", str(config), "doctor"])


def line(output: str, start: str) -> str:
    """The one output line that starts with `start` (a status and a check's name)."""
    [found] = [text for text in output.splitlines() if text.startswith(start)]
    return found


def test_a_fresh_dry_run_setup_passes_with_warnings(runner, setup):
    result = doctor(runner, setup)
    assert result.exit_code == 0, result.output
    assert line(result.output, "ok   config:") == f"ok   config: {setup} is valid"
    assert line(result.output, "ok   ledger:").endswith("ledger.db answers")
    assert line(result.output, "ok   migrations:") == f"ok   migrations: at revision {head_revision()}, the latest"
    assert "ok   webhook secret: 1 signing secret(s) configured" in result.output
    assert "set CONNECTOR_ADMIN_PASSWORD" in line(result.output, "warn status page:")
    assert "set HUBSPOT_ACCESS_TOKEN to deliver" in line(result.output, "warn destination hubspot: no credentials")
    assert "dry-run" in line(result.output, "warn destination salesforce:")
    assert "skip okendo api:" in result.output
    assert result.output.rstrip().endswith("all checks passed, 3 warning(s)")
    assert SECRET not in result.output


def test_a_broken_config_names_the_key_and_skips_the_rest(runner, setup):
    tree = yaml.safe_load(setup.read_text())
    tree["receiver"]["max_body_bytes"] = 12
    setup.write_text(yaml.safe_dump(tree))
    result = doctor(runner, setup)
    assert result.exit_code == 1
    assert line(result.output, "FAIL config:").startswith(f"FAIL config: {setup} is not valid: -> correct what is listed")
    assert "receiver.max_body_bytes: Input should be greater than or equal to 1024 (got 12)" in result.output
    assert "skip everything else: needs a valid config" in result.output
    assert "1 check(s) failed" in result.output


def test_a_missing_secret_fails_with_the_variable_to_set(runner, setup, monkeypatch):
    monkeypatch.delenv("OKENDO_WEBHOOK_SECRETS")
    result = doctor(runner, setup)
    assert result.exit_code == 1
    assert line(result.output, "FAIL webhook secret:") == (
        "FAIL webhook secret: none configured: /webhooks/okendo answers 503 to every event -> set "
        "OKENDO_WEBHOOK_SECRETS to the whsec_ secret `connector okendo subscribe` printed (to try things locally "
        "any whsec_ secret does: README \"Try it locally\")")
    assert "1 check(s) failed" in result.output


def test_an_unreachable_destination_names_its_address_and_setting(runner, setup, monkeypatch):
    address = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-token")
    monkeypatch.setenv("HUBSPOT_BASE_URL", address)
    result = doctor(runner, setup)
    assert result.exit_code == 1
    assert line(result.output, "FAIL destination hubspot:") == (
        f"FAIL destination hubspot: cannot reach HubSpot at {address} (connection refused) -> check "
        "destinations.hubspot.base_url (HUBSPOT_BASE_URL in the shipped config) and this machine's network "
        "(proxy, firewall, DNS)")
    assert "pat-na1-token" not in result.output


def test_destinations_reachable_and_authorised_or_not(runner, setup, crms, monkeypatch):
    monkeypatch.setenv("HUBSPOT_BASE_URL", crms.hubspot.url)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", crms.salesforce.url)
    ready = doctor(runner, setup)
    assert ready.exit_code == 0, ready.output
    assert f"ok   destination hubspot: HubSpot at {crms.hubspot.url}: credentials accepted" in ready.output
    assert f"ok   destination salesforce: Salesforce at {crms.salesforce.url}: credentials accepted" in ready.output

    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "revoked-token")
    crms.salesforce.remove_field("Contact", "Okendo_VIP_Tier__c")
    refused = doctor(runner, setup)
    assert refused.exit_code == 1
    assert "FAIL destination hubspot: HubSpot at" in refused.output
    assert "hubspot: HubSpot refused the access token" in refused.output and "check HUBSPOT_ACCESS_TOKEN" in refused.output
    assert "FAIL destination salesforce: Salesforce at" in refused.output
    assert "salesforce: Contact is missing field Okendo_VIP_Tier__c" in refused.output
    assert "`connector setup salesforce`" in refused.output  # what fixes it
    assert "2 check(s) failed" in refused.output


def test_the_ledger_missing_or_behind_says_to_upgrade(runner, setup, tmp_path):
    database = tmp_path / "data" / "ledger.db"
    database.unlink()
    missing = doctor(runner, setup)
    assert missing.exit_code == 1
    assert line(missing.output, "FAIL ledger:") == (f"FAIL ledger: no ledger at {database} yet -> run "
                                                    "`connector db upgrade` (`make run` does it before serving)")
    assert "skip migrations: needs the ledger" in missing.output
    assert not database.exists()  # the doctor reports; it does not create an empty ledger

    engine = sa.create_engine(f"sqlite:///{database}")
    upgrade(engine, "0001")
    engine.dispose()
    behind = doctor(runner, setup)
    assert behind.exit_code == 1
    assert line(behind.output, "FAIL migrations:") == (
        f"FAIL migrations: at revision 0001; this version needs {head_revision()} -> run `connector db upgrade` "
        "(`make run` does it before serving)")


def test_okendo_api_credentials_and_subscription(runner, setup, monkeypatch):
    with OkendoEmulator() as okendo:
        monkeypatch.setenv("OKENDO_API_BASE_URL", okendo.base_url)
        monkeypatch.setenv("OKENDO_USER_ID", okendo.user_id)
        monkeypatch.setenv("OKENDO_API_KEY", okendo.api_key)
        none_yet = doctor(runner, setup)
        assert "warn okendo api: credentials accepted; 0 subscription(s), none to a /webhooks/okendo endpoint -> " \
               "run `connector okendo subscribe --url https://YOUR-HOST/webhooks/okendo`" in none_yet.output

        okendo.add_subscription("https://shop.example.com/webhooks/okendo", ["review.create", "review.update"])
        subscribed = doctor(runner, setup)
        assert "ok   okendo api: credentials accepted; subscribed: https://shop.example.com/webhooks/okendo " \
               "(2 event(s))" in subscribed.output

        monkeypatch.setenv("OKENDO_API_KEY", "x" * 32)
        refused = doctor(runner, setup)
        assert refused.exit_code == 1
        assert "FAIL okendo api: Okendo refused the credentials (HTTP 401" in refused.output
        assert "check OKENDO_USER_ID and OKENDO_API_KEY" in refused.output


def test_a_public_bind_without_a_password_fails(runner, setup, monkeypatch):
    monkeypatch.setenv("BIND", "0.0.0.0:8080")
    result = doctor(runner, setup)
    assert result.exit_code == 1
    assert "0.0.0.0:8080" in line(result.output, "FAIL status page:")
    assert "set CONNECTOR_ADMIN_PASSWORD" in line(result.output, "FAIL status page:")
    monkeypatch.setenv("CONNECTOR_ADMIN_PASSWORD", "a long enough password")
    assert line(doctor(runner, setup).output, "ok   status page:")


def test_a_listed_proxy_without_a_password_fails(runner, setup):
    tree = yaml.safe_load(setup.read_text())
    tree["status"]["trusted_proxies"] = 1
    setup.write_text(yaml.safe_dump(tree))
    result = doctor(runner, setup)
    assert result.exit_code == 1 and "trusted_proxies" in line(result.output, "FAIL status page:")
