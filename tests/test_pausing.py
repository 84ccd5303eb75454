"""Paused destinations (issue 14): an operator's pause holds deliveries without spending attempts,
and a failure that is the destination's (refused credentials, one schema error on every record)
pauses it by itself instead of sending every delivery to `dead`."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import yaml

from connector.app import create_app
from connector.cli import main
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from connector.samples import sample_bytes
from connector.worker import pausing
from tests.crm import Crms
from tests.emulators.hubspot import HubSpotEmulator
from tests.test_worker import drain, ingest, ledger, make_settings  # noqa: F401  (ledger: a fixture)


def review(number: int, email: str | None = None) -> dict:
    document = json.loads(sample_bytes("review.create"))
    document["sequenceNumber"] = str(number)
    document["resource"]["reviewId"] = f"rev-{number}"
    document["resource"]["reviewer"]["email"] = email or f"shopper{number}@example.com"
    return document


def by_destination(engine: sa.Engine, destination: str) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(sa.text(
            "SELECT state, count(*) FROM deliveries WHERE destination = :d GROUP BY state"), {"d": destination}).all())


def attempts_spent(engine: sa.Engine, destination: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT coalesce(sum(attempts), 0) FROM deliveries WHERE destination = :d"),
                                  {"d": destination}).scalar_one()


def attempt_outcomes(engine: sa.Engine, destination: str) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(sa.text(
            "SELECT a.outcome, count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "WHERE d.destination = :d GROUP BY a.outcome"), {"d": destination}).all())


def pause_of(engine: sa.Engine, destination: str) -> pausing.Pause | None:
    with engine.connect() as connection:
        return pausing.paused(connection).get(destination)


def cli(runner, config_file, *args: str):
    result = runner.invoke(main, ["--config", str(config_file), *args], catch_exceptions=False)
    return result


def config_file_for(tmp_path, settings_dict: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings_dict))
    return path


@pytest.fixture
def bare_portal(crms, monkeypatch):
    """A HubSpot portal where nobody ran `connector setup hubspot`: none of the Okendo properties."""
    with HubSpotEmulator() as hubspot:
        yield Crms(hubspot, crms.salesforce, crms.ca_path)


def worker_config(db_url: str, crms: Crms) -> dict:
    from tests.test_worker import PROJECT_ROOT

    return {"database": {"url": db_url}, "destinations": crms.destinations(),
            "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                                   str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]}}


def test_an_operator_pause_holds_deliveries_without_spending_attempts_and_resume_sends_them(
        db_url, crms, tmp_path, runner):
    settings = make_settings(db_url, crms)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    config = config_file_for(tmp_path, worker_config(db_url, crms))
    result = cli(runner, config, "destination", "pause", "hubspot", "--reason", "portal migration", "--by", "ana")
    assert result.exit_code == 0, result.output
    assert "hubspot paused: portal migration" in result.output
    for number in range(1, 4):
        ingest(engine, review(number))

    drain(settings, engine)

    assert by_destination(engine, "hubspot") == {"pending": 6}  # a contact and a note per review, waiting
    assert attempts_spent(engine, "hubspot") == 0
    assert crms.hubspot.records("contacts") == [] and crms.hubspot.records("notes") == []
    assert by_destination(engine, "salesforce") == {"delivered": 6}  # the other destination goes on
    listed = cli(runner, config, "destination", "list").output
    assert "hubspot: paused by ana" in listed and "portal migration" in listed
    assert "salesforce: delivering" in listed

    result = cli(runner, config, "destination", "resume", "hubspot")
    assert result.exit_code == 0 and "hubspot resumed (it was paused by ana" in result.output
    drain(settings, engine)

    assert by_destination(engine, "hubspot") == {"delivered": 6}
    assert len(crms.hubspot.records("contacts")) == 3 and len(crms.hubspot.records("notes")) == 3
    assert pause_of(engine, "hubspot") is None
    engine.dispose()


def test_the_destination_command_names_an_unknown_destination(db_url, crms, tmp_path, runner):
    engine = create_ledger_engine(make_settings(db_url, crms))
    upgrade(engine)
    engine.dispose()
    config = config_file_for(tmp_path, worker_config(db_url, crms))
    result = runner.invoke(main, ["--config", str(config), "destination", "pause", "hubspto"])
    assert result.exit_code == 2
    assert "no destination named 'hubspto'" in result.output and "hubspot, salesforce" in result.output
    assert "did you mean 'hubspot'?" in result.output
    assert cli(runner, config, "destination", "resume", "hubspot").output.strip() == \
        "hubspot was not paused; nothing changed"


def test_a_portal_missing_its_properties_pauses_hubspot_after_the_first_batch_and_setup_plus_resume_delivers_all(
        db_url, bare_portal, tmp_path, runner, monkeypatch):
    settings = make_settings(db_url, bare_portal, batch_size=4)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    for number in range(1, 11):
        ingest(engine, review(number))

    drain(settings, engine)

    pause = pause_of(engine, "hubspot")
    assert pause is not None and pause.automatic
    assert "PROPERTY_DOESNT_EXIST" in pause.reason and "connector setup hubspot" in pause.reason
    hubspot = by_destination(engine, "hubspot")
    assert "dead" not in hubspot and hubspot == {"pending": 20}  # none lost to `dead`: they wait
    assert attempts_spent(engine, "hubspot") == 0  # the failing batch's attempt was given back
    assert attempt_outcomes(engine, "hubspot") == {"paused": 4}  # one batch was tried, then nothing more
    assert by_destination(engine, "salesforce") == {"delivered": 20}
    page = create_app(settings).test_client().get("/status/").text  # no password: open to this machine
    assert 'data-paused="yes" data-destination="hubspot"' in page
    assert "PROPERTY_DOESNT_EXIST" in page and "connector setup hubspot" in page and "by connector since" in page

    config = config_file_for(tmp_path, worker_config(db_url, bare_portal))
    assert cli(runner, config, "setup", "hubspot", "--yes").exit_code == 0
    assert cli(runner, config, "destination", "resume", "hubspot").exit_code == 0
    drain(settings, engine)

    assert by_destination(engine, "hubspot") == {"delivered": 20}
    assert len(bare_portal.hubspot.records("contacts")) == 10 and len(bare_portal.hubspot.records("notes")) == 10
    engine.dispose()


def test_one_invalid_record_fails_alone_and_pauses_nothing(ledger, crms):
    settings, engine = ledger
    ingest(engine, review(1))
    ingest(engine, review(2, email="not-an-email"))
    ingest(engine, review(3))

    drain(settings, engine)

    assert pause_of(engine, "hubspot") is None and pause_of(engine, "salesforce") is None
    assert len(crms.hubspot.records("contacts")) == 2


def test_refused_hubspot_credentials_pause_hubspot(ledger, crms):
    settings, engine = ledger
    crms.hubspot.revoke("test-token")
    for number in range(1, 4):
        ingest(engine, review(number))

    drain(settings, engine)

    pause = pause_of(engine, "hubspot")
    assert pause is not None and "refused the credentials" in pause.reason
    assert "HTTP 401" in pause.reason
    assert "dead" not in by_destination(engine, "hubspot")
    assert by_destination(engine, "salesforce") == {"delivered": 6}


def test_refused_salesforce_credentials_pause_salesforce_after_the_one_reauthentication(ledger, crms):
    settings, engine = ledger
    crms.salesforce.expire()  # a ready access token cannot be renewed: still refused after re-authenticating
    ingest(engine, review(1))

    drain(settings, engine)

    pause = pause_of(engine, "salesforce")
    assert pause is not None and "refused the credentials" in pause.reason and "INVALID_SESSION_ID" in pause.reason
    assert by_destination(engine, "salesforce") == {"pending": 2}
    assert by_destination(engine, "hubspot") == {"delivered": 2}


def test_a_salesforce_field_missing_on_every_record_pauses_salesforce(ledger, crms):
    settings, engine = ledger
    crms.salesforce.remove_field("Okendo_Review__c", "Rating__c")
    for number in range(1, 4):
        ingest(engine, review(number))

    drain(settings, engine)

    pause = pause_of(engine, "salesforce")
    assert pause is not None and "Rating__c" in pause.reason and "Salesforce: what the shipped mappings need" in pause.reason
    salesforce = by_destination(engine, "salesforce")
    assert "dead" not in salesforce
    # The contacts went before the reviews that need them; the reviews wait for the field.
    assert salesforce == {"delivered": 3, "pending": 3}


def test_a_missing_salesforce_object_pauses_salesforce(ledger, crms):
    settings, engine = ledger
    crms.salesforce.remove_object("Okendo_Review__c")
    for number in range(1, 4):
        ingest(engine, review(number))

    drain(settings, engine)

    pause = pause_of(engine, "salesforce")
    assert pause is not None and "NOT_FOUND" in pause.reason and "Salesforce: what the shipped mappings need" in pause.reason
    assert by_destination(engine, "salesforce") == {"delivered": 3, "pending": 3}
