"""Daily API budgets (issue 15): the connector leaves the reserve of a CRM's daily allocation to the
merchant's other integrations, says so, and goes on once the CRM reports room again."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from connector.app import create_app
from connector.config import settings_from_mapping
from connector.ledger.models import DestinationStatus
from connector.worker.budget import budgets, reading
from tests.test_pausing import by_destination, review
from tests.test_worker import drain, ingest, make_settings


def metric(app, name: str, destination: str) -> float | None:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(f'okendo_connector_{name}{{destination="{destination}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_salesforce_org_at_95_percent_of_its_day_holds_deliveries_with_the_reason_and_resumes_when_reset(
        db_url, crms):
    settings = make_settings(db_url, crms, budget_check_s=0.2)
    from connector.ledger import create_ledger_engine
    from connector.ledger.migrate import upgrade

    engine = create_ledger_engine(settings)
    upgrade(engine)
    crms.salesforce.api_limit, crms.salesforce.api_used = 1000, 950  # the merchant's other tools used 95%
    ingest(engine, review(1))
    drain(settings, engine)  # the first batch goes (the connector cannot know before an answer), then it holds
    sent = crms.salesforce.api_used
    for number in range(2, 6):
        ingest(engine, review(number))

    drain(settings, engine)

    salesforce = by_destination(engine, "salesforce")
    assert salesforce.get("pending", 0) == 8 and "dead" not in salesforce
    assert len(crms.salesforce.records("Okendo_Review__c")) <= 1
    assert by_destination(engine, "hubspot") == {"delivered": 10}  # the other CRM goes on
    assert crms.salesforce.api_used - sent < 20  # only usage checks (/limits), never a delivery
    app = create_app(settings)
    page = app.test_client().get("/status/").text
    assert "salesforce: " in page and "of 1,000 daily API calls used; the last 10% (100) is kept for your other " \
                                      "integrations: deliveries wait for" in page
    assert metric(app, "crm_daily_budget_held", "salesforce") == 1
    assert metric(app, "crm_daily_budget_limit", "salesforce") == 1000

    crms.salesforce.api_used = 0  # the rolling 24 hours moved on
    drain(settings, engine)

    assert by_destination(engine, "salesforce") == {"delivered": 10}
    assert len(crms.salesforce.records("Okendo_Review__c")) == 5
    assert metric(app, "crm_daily_budget_held", "salesforce") == 0
    assert "kept for your other integrations" not in app.test_client().get("/status/").text
    app.extensions["connector"].engine.dispose()
    engine.dispose()


def test_the_reserve_is_configurable_and_zero_spends_the_whole_day(db_url, crms):
    settings = make_settings(db_url, crms)
    settings = settings.model_copy(update={"destinations": settings_from_mapping({"destinations": crms.destinations(
        salesforce={"daily_reserve_percent": 0})}).destinations})
    from connector.ledger import create_ledger_engine
    from connector.ledger.migrate import upgrade

    engine = create_ledger_engine(settings)
    upgrade(engine)
    crms.salesforce.api_limit, crms.salesforce.api_used = 1000, 950
    for number in range(1, 4):
        ingest(engine, review(number))

    drain(settings, engine)

    assert by_destination(engine, "salesforce") == {"delivered": 6}
    engine.dispose()


def test_hubspots_daily_reading_lapses_at_midnight_in_the_accounts_time_zone(db_url, crms):
    settings = make_settings(db_url, crms)
    settings = settings.model_copy(update={"destinations": settings_from_mapping({"destinations": crms.destinations(
        hubspot={"daily_reset_timezone": "America/New_York"})}).destinations})
    from connector.ledger import create_ledger_engine
    from connector.ledger.migrate import upgrade

    engine = create_ledger_engine(settings)
    upgrade(engine)
    status = DestinationStatus.__table__
    seen = datetime(2026, 12, 1, 4, 30, tzinfo=timezone.utc)  # 23:30 on Nov 30 in New York
    with engine.begin() as connection:
        connection.execute(sa.insert(status).values(destination="hubspot", dry_run=False, updated_at=seen,
                                                    quota={"daily_max": 500000, "daily_remaining": 1000}))
        before_midnight = budgets(connection, settings, datetime(2026, 12, 1, 4, 50, tzinfo=timezone.utc))
        after_midnight = budgets(connection, settings, datetime(2026, 12, 1, 5, 10, tzinfo=timezone.utc))
    assert before_midnight["hubspot"].held and before_midnight["hubspot"].used == 499000
    assert "reset at midnight (America/New_York)" in before_midnight["hubspot"].waiting_for(300)
    assert "hubspot" not in after_midnight
    engine.dispose()


@pytest.mark.parametrize("kind,quota,expected", [
    ("salesforce", {"api_usage": 12, "api_limit": 15000}, (12, 15000)),
    ("hubspot", {"daily_max": 250000, "daily_remaining": 249000, "window_remaining": 180}, (1000, 250000)),
    ("hubspot", {"window_remaining": 180}, None),  # no daily reading yet
    ("salesforce", {}, None),
])
def test_each_crms_quota_vocabulary_reads_as_calls_used_of_the_day(kind, quota, expected):
    assert reading(kind, quota) == expected


def test_a_time_zone_that_does_not_exist_is_refused_naming_the_key():
    from connector.config import ConfigError

    with pytest.raises(ConfigError, match="daily_reset_timezone.*'Mars/Olympus' is not a time zone name"):
        settings_from_mapping({"destinations": {"hubspot": {"type": "hubspot", "daily_reset_timezone": "Mars/Olympus"}}})
