"""Group commit: concurrent webhooks share transactions, yet each is acknowledged only once it
is stored, exactly once, under its own id; and SQLite writers take turns without leaking a lock."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from connector.config import settings_from_mapping
from connector.ledger import IncomingEvent, create_ledger_engine
from connector.ledger.database import write_transaction
from connector.ledger.intake import EventIntake
from connector.ledger.migrate import upgrade


def _engine(url: str, **database) -> sa.Engine:
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": url, **database}}, environ={}))
    upgrade(engine)
    return engine


def _incoming(message_id: str) -> IncomingEvent:
    return IncomingEvent(message_id=message_id, body=b'{"resourceType": "review"}', headers={}, state="received")


def _store_all(intake: EventIntake, message_ids: list[str], threads: int = 24) -> list:
    start = threading.Barrier(threads)

    def store(message_id: str):
        try:
            start.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass
        try:
            return intake.store(_incoming(message_id))
        except Exception as error:  # noqa: BLE001 - the outcome under test
            return error

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(store, message_ids))


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
    assert all(intake.store(_incoming(m)).created for m in retried)
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
