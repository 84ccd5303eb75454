"""Backfill and reconciliation runs in the ledger (connector.backfill.syncs): one at a time across
processes, resumable from their cursor, and a reconciliation pass at most once per interval."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connector.backfill import syncs
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from connector.ledger.models import utcnow
from tests.test_worker import make_settings


@pytest.fixture
def engine(db_url, crms):
    engine = create_ledger_engine(make_settings(db_url, crms))
    upgrade(engine)
    yield engine
    engine.dispose()


def test_a_second_process_cannot_start_a_run_while_the_first_holds_it_until_its_lease_runs_out(engine):
    now = utcnow()
    syncs.acquire(engine, "backfill:reviews:approved", "host-a:1", 60, now=now)
    with pytest.raises(syncs.SyncBusy, match=r"already running \(host-a:1"):
        syncs.acquire(engine, "backfill:reviews:approved", "host-b:2", 60, now=now + timedelta(seconds=30))
    taken = syncs.acquire(engine, "backfill:reviews:approved", "host-b:2", 60, now=now + timedelta(seconds=61))
    assert taken.lease_owner == "host-b:2" and taken.state == syncs.RUNNING


def test_a_stopped_run_goes_on_from_its_cursor_with_its_counts_and_a_finished_one_starts_afresh(engine):
    name = "backfill:reviews:pending"
    syncs.acquire(engine, name, "a", 60)
    syncs.advance(engine, name, "a", 60, cursor="/reviews?lastEvaluated=x",
                  counts={"pages": 1, "read": 100, "stored": 90, "missing": 90})
    syncs.finish_after(engine, name, "a", KeyboardInterrupt())
    stopped = syncs.read(engine, name)
    assert (stopped.state, stopped.cursor, stopped.lease_owner) == (syncs.STOPPED, "/reviews?lastEvaluated=x", None)

    resumed = syncs.acquire(engine, name, "b", 60)
    assert (resumed.cursor, resumed.pages, resumed.stored) == ("/reviews?lastEvaluated=x", 1, 90)
    syncs.advance(engine, name, "b", 60, cursor=None, counts={"pages": 1, "read": 10, "stored": 1})
    syncs.finish(engine, name, "b", syncs.FINISHED)
    done = syncs.read(engine, name)
    assert (done.state, done.pages, done.read, done.stored, done.cursor) == (syncs.FINISHED, 2, 110, 91, None)

    again = syncs.acquire(engine, name, "c", 60)
    assert (again.pages, again.read, again.cursor) == (0, 0, None)


def test_a_failed_run_keeps_its_error_and_cursor_and_a_restart_forgets_the_cursor(engine):
    name = "backfill:loyalty"
    syncs.acquire(engine, name, "a", 60)
    syncs.advance(engine, name, "a", 60, cursor="email:m@example.com", counts={"read": 50})
    syncs.finish_after(engine, name, "a", RuntimeError("Okendo answered 503"))
    failed = syncs.read(engine, name)
    assert failed.state == syncs.FAILED and "Okendo answered 503" in failed.last_error
    assert failed.cursor == "email:m@example.com"
    restarted = syncs.acquire(engine, name, "b", 60, restart=True)
    assert (restarted.cursor, restarted.read, restarted.last_error) == (None, 0, None)


def test_a_process_whose_lease_was_taken_over_learns_it_at_its_next_page(engine):
    name = "backfill:reviews:rejected"
    now = utcnow()
    syncs.acquire(engine, name, "slow", 10, now=now)
    syncs.acquire(engine, name, "other", 60, now=now + timedelta(seconds=11))
    with pytest.raises(syncs.SyncLost):
        syncs.advance(engine, name, "slow", 10, cursor="/reviews?x", counts={"pages": 1})
    assert syncs.read(engine, name).lease_owner == "other"


def test_a_reconciliation_pass_starts_at_most_once_per_interval_whoever_asks(engine):
    name, every = "reconcile:reviews", timedelta(minutes=60)
    now = utcnow()
    first = syncs.acquire_if_due(engine, name, "worker-1", 60, every, now=now)
    assert first is not None
    assert syncs.acquire_if_due(engine, name, "worker-2", 60, every, now=now) is None  # running
    syncs.finish(engine, name, "worker-1", syncs.FINISHED, now=now + timedelta(seconds=20))
    assert syncs.acquire_if_due(engine, name, "worker-2", 60, every, now=now + timedelta(minutes=30)) is None
    later = syncs.acquire_if_due(engine, name, "worker-2", 60, every, now=now + timedelta(minutes=61))
    assert later is not None and later.lease_owner == "worker-2"
