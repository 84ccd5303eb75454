"""Reconciliation (issue 16): the worker reads recent reviews from Okendo's API and heals what the
webhooks missed; one pass at a time across workers, costing only the pages the window needs."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from connector.backfill import syncs
from connector.backfill.reconcile import ReconcileLoop, reconcile_once
from connector.config import settings_from_mapping
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from tests.emulators.okendo import OkendoEmulator
from tests.test_backfill import crm_writes, review_records
from tests.test_snapshot_ordering import events
from tests.test_worker import drain, ingest, make_settings


def reconciling_settings(db_url, crms, okendo, **reconcile):
    return make_settings(db_url, crms, sections={"okendo": {
        "api_base_url": okendo.base_url, "user_id": "${OKENDO_USER_ID}", "api_key": "${OKENDO_API_KEY}",
        "reconcile": {"every_minutes": 60, "window_days": 30, "statuses": ["approved"], **reconcile}}})


@pytest.fixture
def okendo(monkeypatch):
    with OkendoEmulator(burst=3) as emulator:
        monkeypatch.setenv("OKENDO_USER_ID", emulator.user_id)
        monkeypatch.setenv("OKENDO_API_KEY", emulator.api_key)
        yield emulator


@pytest.fixture
def reconciling(db_url, crms, okendo):
    settings = reconciling_settings(db_url, crms, okendo)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    yield settings, engine
    engine.dispose()


def webhook(review: dict, topic: str, sequence: int) -> dict:
    return {"resourceType": "review", "topic": topic, "sequenceNumber": str(sequence),
            "subscriberId": review["subscriberId"], "resource": review}


def test_one_pass_heals_the_webhooks_missed_while_the_endpoint_was_down(reconciling, crms, okendo):
    settings, engine = reconciling
    # One review every 7 hours: 103 in the 30-day window, 97 older.
    seeded = okendo.seed_reviews(200)
    in_window = [r for r in seeded if r["dateCreated"] >= (datetime.now(UTC) - timedelta(days=30)).isoformat()]
    assert len(in_window) == 103
    # The endpoint was up for the first 60 reviews' webhooks, then down: the rest never arrived.
    for sequence, review in enumerate(in_window[43:], start=1000):
        ingest(engine, webhook(review, "create", sequence))
    with engine.begin() as connection:  # they arrived an hour ago, before the outage
        connection.execute(sa.text("UPDATE events SET received_at = :at"),
                           {"at": datetime.now(UTC) - timedelta(hours=1)})
    drain(settings, engine)
    # While it was down, a merchant also edited a review whose create webhook had arrived.
    okendo.update_review(in_window[50]["reviewId"], rating=1, title="Edited while the endpoint was down")
    okendo.update_review(seeded[150]["reviewId"], rating=1)  # outside the window: not this pass's business

    result = reconcile_once(settings, engine, "host:1:worker", force=True)
    assert (result.pages, result.read, result.missing, result.different) == (2, 103, 43, 1)
    stored = [e for e in events(engine) if e.origin == "reconcile"]
    assert len(stored) == 44
    assert sorted(e.topic for e in stored) == ["create"] * 43 + ["update"]
    # Two list requests: the page of 100 and the page where the window ends; nothing older was read.
    assert [call.status for call in okendo.calls("GET", "/enterprise/reviews")] == [200, 200]

    drain(settings, engine)
    salesforce, hubspot = review_records(crms)
    assert sorted(salesforce) == sorted(r["reviewId"] for r in in_window)
    assert len(hubspot) == 103
    [edited] = crms.salesforce.find("Okendo_Review__c", Okendo_Review_Id__c=in_window[50]["reviewId"])
    assert edited["Rating__c"] == 1

    row = syncs.read(engine, "reconcile:reviews")
    assert (row.state, row.pages, row.read, row.stored, row.missing, row.different) == (
        "finished", 2, 103, 44, 43, 1)
    writes = crm_writes(crms)
    assert reconcile_once(settings, engine, "host:1:worker", force=True).stored == 0  # healed: nothing left
    drain(settings, engine)
    assert crm_writes(crms) == writes


def test_two_workers_asking_at_the_same_moment_run_one_pass(reconciling, crms, okendo):
    settings, engine = reconciling
    okendo.seed_reviews(120)
    okendo.latency = (0.2, 0.3)  # a pass takes a while: the second worker asks while the first reads
    other_engine = create_ledger_engine(settings)  # another worker process's own connections
    results: dict[str, object] = {}
    start = threading.Barrier(2)

    def worker(name: str, ledger) -> None:
        start.wait()
        results[name] = reconcile_once(settings, ledger, f"host:{name}:worker", force=True)

    threads = [threading.Thread(target=worker, args=(name, ledger)) for name, ledger in
               (("1", engine), ("2", other_engine))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    other_engine.dispose()
    ran = [result for result in results.values() if result is not None]
    assert len(ran) == 1 and len(results) == 2
    assert len(okendo.calls("GET", "/enterprise/reviews")) == 2  # one pass's pages, not two passes'
    assert len([e for e in events(engine) if e.origin == "reconcile"]) == 103  # the 30-day window



def _wait_for_pass(engine, state: str, seconds: float) -> None:
    """Until the reconciliation's run is in `state`, or `seconds` have passed (the test's asserts judge)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = syncs.read(engine, "reconcile:reviews")
        if row is not None and row.state == state:
            return
        time.sleep(0.05)


def test_workers_looking_often_start_one_pass_per_interval(reconciling, crms, okendo):
    settings, engine = reconciling
    okendo.seed_reviews(20)
    loops = [ReconcileLoop(settings, create_ledger_engine(settings), f"host:{n}:worker", check_every_s=0.05).start()
             for n in range(3)]
    try:
        _wait_for_pass(engine, "finished", 20)
        time.sleep(1.0)  # every loop looks 20 more times: none may start another pass
    finally:
        for loop in loops:
            loop.stop()
            loop.engine.dispose()
    assert syncs.read(engine, "reconcile:reviews").state == "finished"
    assert len(okendo.calls("GET", "/enterprise/reviews")) == 1
    assert len(events(engine)) == 20


def test_a_failing_pass_is_recorded_and_the_worker_goes_on(reconciling, crms, okendo, caplog):
    settings, engine = reconciling
    okendo.api_key = "rotated"  # the key in the environment no longer works
    loop = ReconcileLoop(settings, engine, "host:1:worker", check_every_s=0.05).start()
    try:
        _wait_for_pass(engine, "failed", 10)
    finally:
        loop.stop()
    row = syncs.read(engine, "reconcile:reviews")
    assert row.state == "failed" and "Okendo refused the credentials (HTTP 401" in row.last_error
    assert "OKENDO_API_KEY" in row.last_error and "rotated" not in row.last_error
    assert any("reconciliation of reviews failed" in message and "trying again in 60 s" in message
               for message in caplog.messages)


def test_a_failed_pass_is_tried_again_after_a_short_backoff_not_a_whole_interval(reconciling, crms, okendo,
                                                                                   caplog):
    settings, engine = reconciling
    okendo.seed_reviews(20)
    okendo.fail(method="GET", path="/reviews", status=503, times=4)  # Okendo down for one pass's retries
    loop = ReconcileLoop(settings, engine, "host:1:worker", check_every_s=0.05, retry_s=1.0).start()
    try:
        _wait_for_pass(engine, "finished", 20)
    finally:
        loop.stop()
    row = syncs.read(engine, "reconcile:reviews")
    assert row.state == "finished" and row.read == 20 and row.failures == 0  # healed within seconds of an hour
    assert len(events(engine)) == 20
    assert any("Okendo answered 503" in message and "trying again in 1 s" in message for message in caplog.messages)
    statuses = [call.status for call in okendo.calls("GET", "/enterprise/reviews")]
    assert statuses == [503] * 4 + [200]  # the failed pass's own retries, then one pass: no burst of retries


def test_reconcile_needs_credentials_and_says_so(db_url, crms):
    with pytest.raises(Exception, match="okendo.user_id and okendo.api_key"):
        settings_from_mapping({"database": {"url": db_url}, "destinations": crms.destinations(),
                               "okendo": {"reconcile": {"every_minutes": 60}}})
