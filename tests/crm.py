"""Shared helpers for destination tests: plan samples through the shipped mappings and
deliver them as the worker will, recording links in a real ledger."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from connector.config import Settings, load_settings, settings_from_mapping
from connector.destinations.base import Destination, Result, Work
from connector.ledger import create_ledger_engine
from connector.ledger.database import write_transaction
from connector.ledger.links import LedgerLinks
from connector.ledger.migrate import upgrade
from connector.mapping.engine import MappingSet
from connector.mapping.loader import load_mappings
from connector.samples import sample_bytes
from tests.emulators.hubspot import HubSpotEmulator
from tests.emulators.salesforce import SalesforceEmulator, tls_for_tests

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The samples in the order a shopper's story happens (creates before updates before deletes).
STORY = [
    "loyalty_customer.create", "review.create", "loyalty_earning_transaction.create",
    "loyalty_adjustment_transaction.create", "loyalty_redemption_transaction.create", "review.update",
    "loyalty_customer.update", "loyalty_earning_transaction.update", "loyalty_adjustment_transaction.update",
    "loyalty_redemption_transaction.update", "survey_response.create", "review.delete",
    "loyalty_earning_transaction.delete", "loyalty_adjustment_transaction.delete",
    "loyalty_redemption_transaction.delete", "loyalty_customer.delete",
]


def shipped_mappings() -> MappingSet:
    return load_mappings(load_settings(PROJECT_ROOT / "config.yaml", environ={}))


def ledger_links(tmp_path: Path) -> LedgerLinks:
    settings = settings_from_mapping({"database": {"url": f"sqlite:///{tmp_path / 'links.db'}"}}, environ={})
    engine = create_ledger_engine(settings)
    upgrade(engine)
    return LedgerLinks(engine)


def works_for(mappings: MappingSet, destination: str, samples: Iterable[str] | str, start_id: int = 1,
              previous_attempts: int = 0) -> list[Work]:
    samples = [samples] if isinstance(samples, str) else samples
    works = []
    for sample in samples:
        for outcome in mappings.plan(json.loads(sample_bytes(sample))):
            if outcome.destination == destination and outcome.status == "ready":
                works.append(Work(start_id + len(works), outcome.operation, previous_attempts))
    return works


def deliver(destination: Destination, works: Sequence[Work], links: LedgerLinks) -> list[Result]:
    """Deliver a batch and record the links, as the worker does after each batch."""
    results = destination.deliver(works, links)
    assert len(results) == len(works)
    with write_transaction(links.engine) as connection:
        for work, result in zip(works, results):
            links.apply(connection, destination.name, work.operation, result)
    return results


def link_rows(links: LedgerLinks) -> list[tuple]:
    with links.engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(sa.text(
            "SELECT destination, crm_object, source_type, source_id, crm_record_id FROM record_links")))


def settings_with(destinations: dict) -> Settings:
    return settings_from_mapping({"destinations": destinations}, environ={})


# --- both CRMs at once, for worker and end-to-end tests ------------------------------------------

HUBSPOT_OKENDO_PROPERTIES = {
    "contacts": [
        {"name": "okendo_customer_id"}, {"name": "okendo_loyalty_customer_id"},
        {"name": "okendo_last_review_rating", "type": "number", "fieldType": "number"},
        {"name": "okendo_last_review_date", "type": "date", "fieldType": "date"},
        {"name": "okendo_last_review_product"}, {"name": "okendo_loyalty_status"},
        {"name": "okendo_loyalty_points_balance", "type": "number", "fieldType": "number"},
        {"name": "okendo_loyalty_tier"}, {"name": "okendo_birthday"},
        {"name": "okendo_last_survey_date", "type": "date", "fieldType": "date"},
        {"name": "okendo_last_nps_score", "type": "number", "fieldType": "number"},
    ],
    "notes": [{"name": "okendo_source_key"}],
}


@dataclass
class Crms:
    hubspot: HubSpotEmulator
    salesforce: SalesforceEmulator
    ca_path: str

    def destinations(self, **overrides: dict) -> dict:
        """config.yaml's `destinations:` pointing at the emulators."""
        return {
            "hubspot": {"type": "hubspot", "access_token": "${HUBSPOT_ACCESS_TOKEN}", "base_url": self.hubspot.url,
                        "max_retry_wait_s": 2, **overrides.get("hubspot", {})},
            "salesforce": {"type": "salesforce", "instance_url": self.salesforce.url,
                           "access_token": "${SALESFORCE_ACCESS_TOKEN}", "max_retry_wait_s": 2,
                           **overrides.get("salesforce", {})},
        }

    @property
    def environ(self) -> dict[str, str]:
        return {"HUBSPOT_ACCESS_TOKEN": "test-token", "SALESFORCE_ACCESS_TOKEN": "00Dtest!token",
                "REQUESTS_CA_BUNDLE": self.ca_path}


@contextmanager
def crm_emulators(tmp_path: Path, *, hubspot_rate_limit: tuple[int, float] | None = None,
                  latency: tuple[float, float] | None = None, salesforce_okendo_schema: bool = True) -> Iterator[Crms]:
    """salesforce_okendo_schema=False: a Salesforce org without the connector's objects and fields."""
    context, ca_path = tls_for_tests(tmp_path)
    with HubSpotEmulator(rate_limit=hubspot_rate_limit, properties=HUBSPOT_OKENDO_PROPERTIES,
                         latency=latency) as hubspot, \
            SalesforceEmulator(tls_context=context, latency=latency,
                               okendo_schema=salesforce_okendo_schema) as salesforce:
        yield Crms(hubspot, salesforce, ca_path)


# --- a record-level permanent error on demand ---------------------------------------------------

def make_reply_field_too_short(salesforce: SalesforceEmulator) -> None:
    """The shipped review's reply no longer fits Okendo_Review__c.Reply__c: STRING_TOO_LONG, a permanent
    error of that record's data (a missing field would pause the destination instead)."""
    salesforce.remove_field("Okendo_Review__c", "Reply__c")
    salesforce.add_field("Okendo_Review__c", "Reply__c", type="textarea", length=10)


def restore_reply_field(salesforce: SalesforceEmulator) -> None:
    salesforce.remove_field("Okendo_Review__c", "Reply__c")
    salesforce.add_field("Okendo_Review__c", "Reply__c", type="textarea", length=32768)
