"""Real `connector worker` processes: two draining one backlog, kill -9 mid-batch, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from connector.config import settings_from_mapping
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from connector.samples import sample_bytes
from tests.crm import PROJECT_ROOT, Crms, crm_emulators
from tests.test_worker import ingest, states
from tests.workload import work_left


@pytest.fixture
def setup(db_url, tmp_path, monkeypatch):
    with crm_emulators(tmp_path) as crms:
        for name, value in crms.environ.items():
            monkeypatch.setenv(name, value)
        config = {
            "database": {"url": db_url},
            "destinations": crms.destinations(),
            "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                                   str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
            "worker": {"batch_size": 50, "lease_s": 5, "backoff_base_s": 0.1, "backoff_max_s": 0.5,
                       "poll_interval_s": 0.1, "shutdown_timeout_s": 5, "threads": 2},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        engine = create_ledger_engine(settings_from_mapping(config))
        upgrade(engine)
        yield crms, engine, path
        engine.dispose()


def start_worker(config: Path, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "connector.cli", "--config", str(config), "worker", *args],
                            cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_until(condition, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def backlog(engine: sa.Engine, reviews: int) -> None:
    """`reviews` shoppers, each with a review (create then update) and a loyalty sign-up."""
    for i in range(reviews):
        for sample in ("review.create", "review.update"):
            document = json.loads(sample_bytes(sample))
            document["resource"]["reviewId"] = f"review-{i}"
            document["resource"]["reviewer"]["email"] = f"shopper{i}@example.com"
            ingest(engine, document)
        member = json.loads(sample_bytes("loyalty_customer.create"))
        member["resource"]["loyaltyCustomerId"] = f"member-{i}"
        member["resource"]["customer"]["email"] = f"shopper{i}@example.com"
        ingest(engine, member)


def assert_each_record_once(crms: Crms, reviews: int) -> None:
    assert len(crms.hubspot.records("contacts")) == reviews
    notes = crms.hubspot.records("notes")
    assert len(notes) == reviews, "a note was created twice"
    assert all("Store reply" in note["properties"]["hs_note_body"] for note in notes)  # the newest state
    assert len(crms.salesforce.records("Contact")) == reviews
    assert len(crms.salesforce.records("Okendo_Review__c")) == reviews


def test_two_workers_drain_one_backlog_and_write_each_record_once(setup, tmp_path):
    crms, engine, config = setup
    backlog(engine, 60)
    workers = [start_worker(config, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        wait_until(lambda: work_left(engine) == 0, what="the backlog to drain")
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            assert process.wait(timeout=30) == 0
    assert set(states(engine)) <= {"delivered", "stale"}
    assert_each_record_once(crms, 60)
    with engine.connect() as connection:
        owners = set(connection.execute(sa.text("SELECT DISTINCT worker FROM delivery_attempts")).scalars())
    assert len(owners) == 2, "both workers took part"


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(setup, tmp_path):
    crms, engine, config = setup
    crms.hubspot.latency = crms.salesforce.latency = (0.2, 0.2)  # batches take a while
    backlog(engine, 30)
    victim = start_worker(config, tmp_path / "victim.log", "--threads", "1")

    def in_flight() -> bool:
        with engine.connect() as connection:
            leased = connection.execute(sa.text("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")).scalar_one()
        return leased > 0 and len(crms.hubspot.requests) + len(crms.salesforce.requests) > 3

    wait_until(in_flight, what="the worker to be mid-batch")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    crms.hubspot.latency = crms.salesforce.latency = None

    survivor = start_worker(config, tmp_path / "survivor.log")
    try:
        wait_until(lambda: work_left(engine) == 0, timeout=90, what="the survivor to finish after the leases expire")
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=30) == 0
    assert set(states(engine)) <= {"delivered", "stale"}
    assert_each_record_once(crms, 30)


def test_sigterm_stops_a_busy_worker_within_the_bound(setup, tmp_path):
    crms, engine, config = setup
    crms.hubspot.latency = crms.salesforce.latency = (0.3, 0.3)
    backlog(engine, 40)
    process = start_worker(config, tmp_path / "worker.log")
    wait_until(lambda: len(crms.hubspot.requests) + len(crms.salesforce.requests) > 2, what="work to start")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert time.monotonic() - started < 5 + 10  # shutdown_timeout_s, plus one CRM call in flight
    with engine.connect() as connection:
        held = connection.execute(sa.text(
            "SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL AND state IN ('pending', 'retrying')"))
        assert held.scalar_one() == 0  # finished or given back, nothing left waiting for a lease to expire
