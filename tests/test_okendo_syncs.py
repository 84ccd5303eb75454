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


def test_a_failed_pass_is_retried_after_a_short_backoff_that_doubles_up_to_the_interval(engine):
    name, every, retry = "reconcile:reviews", timedelta(minutes=60), timedelta(minutes=1)
    now = utcnow()
    assert syncs.acquire_if_due(engine, name, "w", 60, every, retry=retry, now=now) is not None
    syncs.finish(engine, name, "w", syncs.FAILED, error="Okendo answered 503", now=now)
    assert syncs.acquire_if_due(engine, name, "w", 60, every, retry=retry, now=now + timedelta(seconds=50)) is None
    second = syncs.acquire_if_due(engine, name, "w", 60, every, retry=retry, now=now + timedelta(seconds=61))
    assert second is not None  # one minute after the failure, not an hour
    failed_again = now + timedelta(seconds=62)
    syncs.finish(engine, name, "w", syncs.FAILED, error="Okendo answered 503", now=failed_again)
    assert syncs.read(engine, name).failures == 2
    assert syncs.next_due(syncs.read(engine, name), every, retry) == failed_again + timedelta(minutes=2)
    assert syncs.acquire_if_due(engine, name, "w", 60, every, retry=retry,
                                now=failed_again + timedelta(seconds=100)) is None
    assert syncs.acquire_if_due(engine, name, "w", 60, every, retry=retry,
                                now=failed_again + timedelta(seconds=121)) is not None
    # Many failures later the wait is the interval, never longer.
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE okendo_syncs SET failures = 30")
    assert syncs.next_due(syncs.read(engine, name), every, retry) == syncs.read(engine, name).started_at + every
    syncs.finish(engine, name, "w", syncs.FINISHED, now=failed_again + timedelta(seconds=130))
    finished = syncs.read(engine, name)
    assert finished.failures == 0
    assert syncs.next_due(finished, every, retry) == finished.started_at + every  # a success: the interval


def test_totals_are_never_reset_and_the_last_finished_pass_is_kept_while_a_new_one_runs(engine):
    name, every = "reconcile:reviews", timedelta(minutes=60)
    now = utcnow()
    syncs.acquire_if_due(engine, name, "w", 60, every, now=now)
    syncs.advance(engine, name, "w", 60, cursor=None, now=now + timedelta(seconds=5),
                  counts={"pages": 2, "read": 150, "stored": 4, "missing": 3, "different": 1})
    syncs.finish(engine, name, "w", syncs.FINISHED, now=now + timedelta(seconds=9))
    syncs.acquire_if_due(engine, name, "w", 60, every, now=now + timedelta(minutes=61))
    syncs.advance(engine, name, "w", 60, cursor=None, counts={"pages": 1, "read": 100, "stored": 2, "missing": 2})
    running = syncs.read(engine, name)
    assert (running.pages, running.read, running.stored) == (1, 100, 2)  # this pass
    assert (running.pages_total, running.read_total, running.stored_total, running.missing_total,
            running.different_total) == (3, 250, 6, 5, 1)  # every pass
    last = running.last_pass
    assert (last["pages"], last["read"], last["stored"], last["missing"], last["different"]) == (2, 150, 4, 3, 1)
    assert last["finished_at"].startswith((now + timedelta(seconds=9)).isoformat()[:19])
    syncs.finish_after(engine, name, "w", RuntimeError("Okendo answered 503"))
    assert syncs.read(engine, name).last_pass == last  # a failed pass is no finished one
