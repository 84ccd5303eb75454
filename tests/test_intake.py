"""Group commit: concurrent webhooks share transactions, yet each is acknowledged only once it
is stored, exactly once, under its own id; each waits no longer than its deadline, and not at all
once the ledger is stalled; and SQLite writers take turns without leaking a lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from connector.config import settings_from_mapping
from connector.ledger import IncomingEvent, create_ledger_engine
from connector.ledger.database import write_transaction
from connector.ledger.intake import EventIntake, LedgerWriteTimeout
from connector.ledger.migrate import upgrade
from tests.ledger_locks import ledger_locked


def _engine(url: str, **database) -> sa.Engine:
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": url, **database}}, environ={}))
    upgrade(engine)
    return engine


def _incoming(message_id: str) -> IncomingEvent:
    return IncomingEvent(message_id=message_id, body=b'{"resourceType": "review"}', headers={}, state="received")


def _store(intake: EventIntake, message_id: str, within_s: float = 10.0):
    return intake.store(_incoming(message_id), deadline=time.monotonic() + within_s)


def _store_all(intake: EventIntake, message_ids: list[str], threads: int = 24, within_s: float = 10.0) -> list:
    """Each outcome: a StoredEvent or the exception."""
    threads = min(threads, len(message_ids))
    start = threading.Barrier(threads)  # the first of each thread's stores all start at once

    def store(index: int, message_id: str):
        if index < threads:
            try:
                start.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass
        try:
            return _store(intake, message_id, within_s)
        except Exception as error:  # noqa: BLE001 - the outcome under test
            return error

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(store, range(len(message_ids)), message_ids))


def test_concurrent_webhooks_are_stored_once_each_and_redeliveries_get_the_first_id(db_url):
    engine = _engine(db_url)
    intake = EventIntake(engine)
    unique = [f"msg-{n}" for n in range(120)]
    again = unique[::4]
    outcomes = _store_all(intake, unique + again)

    assert not [o for o in outcomes if isinstance(o, Exception)]
    first = {message_id: o for message_id, o in zip(unique, outcomes[:len(unique)])}
    assert all(o.created for o in first.values())
    assert [o.created for o in outcomes[len(unique):]] == [False] * len(again)
    assert [o.event_id for o in outcomes[len(unique):]] == [first[m].event_id for m in again]
    with engine.connect() as connection:
        rows = dict(connection.execute(sa.text("SELECT message_id, id FROM events")).all())
    assert rows == {message_id: o.event_id for message_id, o in first.items()}
    engine.dispose()


def test_a_failed_transaction_acknowledges_none_of_its_events_and_spares_the_others(sqlite_url):
    engine = _engine(sqlite_url)
    with engine.begin() as connection:  # the ledger refuses one message, failing its whole transaction
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.message_id = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    intake = EventIntake(engine)
    message_ids = [f"msg-{n}" for n in range(60)]
    message_ids.insert(30, "poison")
    outcomes = _store_all(intake, message_ids)

    with engine.connect() as connection:
        stored = set(connection.execute(sa.text("SELECT message_id FROM events")).scalars())
    acknowledged = {m for m, o in zip(message_ids, outcomes) if not isinstance(o, Exception)}
    assert isinstance(outcomes[30], sa.exc.IntegrityError)
    # Never acknowledged unless stored, and nothing stored that was refused an acknowledgement.
    assert acknowledged == stored
    assert "poison" not in stored and len(stored) >= 1
    # The refusal does not stick: the same events are stored when Svix sends them again.
    retried = [m for m in message_ids if m not in stored and m != "poison"]
    assert all(_store(intake, m).created for m in retried)
    engine.dispose()


def _timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except Exception as error:  # noqa: BLE001 - the outcome under test
        return error, time.monotonic() - started


def _stored_once_each(engine: sa.Engine, intake: EventIntake, message_ids: list[str]) -> None:
    # Svix sends each refused event again, and again a while later (https://docs.svix.com/retries):
    # just after the lock goes, the write that waited for it may still be finishing. That write may
    # have committed some of them after their requests gave up: those are found, never stored twice.
    for message_id in message_ids:
        for _ in range(3):
            try:
                _store(intake, message_id)
                break
            except LedgerWriteTimeout:
                time.sleep(0.5)
    with engine.connect() as connection:
        counts = dict(connection.execute(sa.text("SELECT message_id, count(*) FROM events GROUP BY message_id")).all())
    assert counts == {message_id: 1 for message_id in message_ids}


def test_a_request_waits_no_longer_than_its_deadline_whatever_the_write_in_progress(db_url):
    engine = _engine(db_url)  # busy_timeout_ms 5000: one write attempt may wait five seconds
    intake = EventIntake(engine, stall_s=60)  # only the deadline can end the wait
    with ledger_locked(db_url):
        outcome, took = _timed(lambda: _store(intake, "msg-late", within_s=0.8))
    assert isinstance(outcome, LedgerWriteTimeout) and "msg-late" in str(outcome), outcome
    assert 0.8 <= took < 1.0
    _stored_once_each(engine, intake, ["msg-late"])
    engine.dispose()


def test_once_the_write_stalls_waiting_and_new_requests_are_answered_at_once(db_url):
    engine = _engine(db_url)
    intake = EventIntake(engine, stall_s=0.3)
    message_ids = [f"msg-{n}" for n in range(12)]
    with ledger_locked(db_url):
        started = time.monotonic()
        outcomes = _store_all(intake, message_ids, threads=12)
        waited = time.monotonic() - started
        late, late_took = _timed(lambda: _store(intake, "msg-late"))
    # Each had ten seconds; all were answered once the write had waited its 0.3 s.
    assert all(isinstance(o, LedgerWriteTimeout) for o in outcomes), outcomes
    assert "locked or not answering" in str(outcomes[0])
    assert waited < 0.8
    assert isinstance(late, LedgerWriteTimeout) and late_took < 0.05
    _stored_once_each(engine, intake, message_ids + ["msg-late"])
    engine.dispose()


def test_closing_stores_what_is_in_the_write_and_refuses_what_comes_after(db_url):
    # gunicorn's worker_exit, or a ledger about to be dropped: the write waiting for the lock ends
    # with its event committed, the writer is gone with its connection, and a later webhook is
    # answered "not stored" rather than queued for a writer that will not come.
    engine = _engine(db_url)
    intake = EventIntake(engine, stall_s=60)
    writers_before = {t for t in threading.enumerate() if t.name == "ledger-intake"}  # other tests' intakes
    with ledger_locked(db_url):
        outcome, _ = _timed(lambda: _store(intake, "msg-in-flight", within_s=0.3))
        assert isinstance(outcome, LedgerWriteTimeout)
        closing = threading.Thread(target=intake.close)
        closing.start()
        time.sleep(0.2)
        assert closing.is_alive(), "close returned while the write was still waiting for the lock"
    closing.join(timeout=10)
    assert not closing.is_alive()
    assert not {t for t in threading.enumerate() if t.name == "ledger-intake"} - writers_before
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT message_id FROM events").scalars().all() == ["msg-in-flight"]
    late, took = _timed(lambda: _store(intake, "msg-after-close"))
    assert isinstance(late, LedgerWriteTimeout) and "shutting down" in str(late) and took < 0.05
    engine.dispose()


_HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""

_TRY_FLOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("free")
"""


def test_sqlite_writers_take_turns_and_release_the_gate_for_other_processes(tmp_path):
    database = tmp_path / "ledger.db"
    engine = _engine(f"sqlite:///{database}")
    start = threading.Barrier(16)

    def write(n: int) -> None:
        start.wait(timeout=5)  # every thread's first write at once, in a process new to this ledger
        for k in range(3):
            with write_transaction(engine) as connection:
                connection.execute(sa.text("INSERT INTO events (message_id, received_at, state, headers, body) "
                                           "VALUES (:m, CURRENT_TIMESTAMP, 'received', '{}', x'')"),
                                   {"m": f"msg-{n}-{k}"})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(16)))
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == 48
    # Once every writer of this process is done, another process can take the gate at once.
    lock_file = f"{database}-writer.lock"
    probe = subprocess.run([sys.executable, "-c", _TRY_FLOCK, lock_file], capture_output=True, text=True, timeout=10)
    assert probe.stdout.strip() == "free", probe.stderr
    engine.dispose()


def test_a_writer_waits_for_another_process_then_gives_up_with_the_busy_error(tmp_path):
    database = tmp_path / "ledger.db"
    engine = _engine(f"sqlite:///{database}", busy_timeout_ms=300)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_FLOCK, f"{database}-writer.lock", "5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            with write_transaction(engine) as connection:
                connection.exec_driver_sql("DELETE FROM events")
    finally:
        holder.kill()
        holder.wait()
    with write_transaction(engine) as connection:  # the holder is gone: writing works again
        connection.exec_driver_sql("DELETE FROM events")
    engine.dispose()


_HOLD_SQLITE_LOCK_FOR = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_process_forked_during_a_stalled_write_stores_on_its_own(tmp_path):
    # A server that forks its workers after the app exists (gunicorn's preload_app): the child has
    # none of the parent's threads, so neither its writer nor the stall that writer was in.
    database = tmp_path / "ledger.db"
    engine = _engine(f"sqlite:///{database}")
    intake = EventIntake(engine, stall_s=0.2)
    # Released by time, not by a pipe: the forked child would hold the pipe open.
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_SQLITE_LOCK_FOR, str(database), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LedgerWriteTimeout):
        _store(intake, "msg-parent")  # its write goes on waiting for the lock
    assert intake.stalled_for() is not None
    child = os.fork()
    if child == 0:  # runs in the child
        engine.dispose(close=False)  # the parent's connections stay the parent's
        stored = None
        for _ in range(40):
            try:
                stored = _store(intake, "msg-child", within_s=1)
                break
            except LedgerWriteTimeout:
                time.sleep(0.1)
        os._exit(0 if stored is not None else 1)  # stored, or found stored by an earlier attempt's write
    _, status = os.waitpid(child, 0)
    holder.wait(timeout=10)
    assert os.waitstatus_to_exitcode(status) == 0
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM events WHERE message_id = 'msg-child'")).scalar() == 1
    engine.dispose()
