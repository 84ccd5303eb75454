"""Webhooks go first: at the SQLite write gate, and in the time embedded delivery threads take.

A webhook's request waits for its commit; a delivery's write does not keep anyone waiting. So the
receiver's group commits are let in before the delivery workers' writes, in this process and in
the others on the same ledger, and the delivery threads inside a gunicorn worker rest while that
worker receives webhooks. Neither may starve delivery: it slows during a burst, never stops.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from connector.config import settings_from_mapping
from connector.ledger import IncomingEvent, create_ledger_engine
from connector.ledger import gate as gate_module
from connector.ledger.database import write_transaction
from connector.ledger.events import record_events
from connector.ledger.intake import EventIntake
from connector.ledger.migrate import upgrade
from connector.worker import make_way


def _engine(url: str) -> sa.Engine:
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": url}}, environ={}))
    upgrade(engine)
    return engine


def _incoming(message_id: str) -> IncomingEvent:
    return IncomingEvent(message_id=message_id, body=b'{"resourceType": "review"}', headers={}, state="received")


def _count(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one()


def test_a_webhook_commit_goes_before_a_delivery_write_that_was_waiting_first(tmp_path, monkeypatch):
    monkeypatch.setattr(gate_module, "MAX_DEFER_S", 5.0)  # no deferral runs out within this test
    engine = _engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    holding = threading.Event()
    release = threading.Event()

    def delivery_write(name: str) -> None:
        with write_transaction(engine) as connection:
            # A row per writer: the ids say in which order the writes went in.
            connection.execute(sa.text("INSERT INTO events (message_id, received_at, state, headers, body) "
                                       "VALUES (:m, CURRENT_TIMESTAMP, 'received', '{}', x'')"), {"m": name})
            if name == "holder":
                holding.set()
                release.wait(5)

    holder = threading.Thread(target=delivery_write, args=("holder",))
    holder.start()
    assert holding.wait(5)
    waiting_delivery = threading.Thread(target=delivery_write, args=("delivery",))
    waiting_delivery.start()
    time.sleep(0.1)  # the delivery write is queued first
    webhook = threading.Thread(target=record_events, args=(engine, [_incoming("webhook")]))
    webhook.start()
    time.sleep(0.1)
    release.set()
    for thread in (holder, waiting_delivery, webhook):
        thread.join(10)
    with engine.connect() as connection:
        order = connection.execute(sa.text("SELECT message_id FROM events ORDER BY id")).scalars().all()
    # The webhook's commit went in before the delivery write that had waited longer.
    assert order == ["holder", "webhook", "delivery"]
    engine.dispose()


def test_a_delivery_write_is_not_starved_by_a_stream_of_webhook_commits(tmp_path, monkeypatch):
    monkeypatch.setattr(gate_module, "MAX_DEFER_S", 0.2)
    engine = _engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    stop = threading.Event()
    stored = []

    def webhooks() -> None:  # back-to-back urgent commits: one is always waiting or writing
        n = 0
        while not stop.is_set():
            record_events(engine, [_incoming(f"msg-{n}")])
            stored.append(n)
            n += 1

    streams = [threading.Thread(target=webhooks) for _ in range(2)]
    for stream in streams:
        stream.start()
    time.sleep(0.2)
    started = time.monotonic()
    with write_transaction(engine) as connection:
        connection.execute(sa.text("UPDATE events SET state = 'planned' WHERE id = 1"))
    waited = time.monotonic() - started
    stop.set()
    for stream in streams:
        stream.join(10)
    assert stored, "the webhook stream wrote nothing"
    assert waited < 3.0, f"the delivery write waited {waited:.2f} s behind the webhooks"
    engine.dispose()


_HOLD_URGENT_MARK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_delivery_write_stands_back_while_another_process_has_a_webhook_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(gate_module, "MAX_DEFER_S", 0.4)
    database = tmp_path / "ledger.db"
    engine = _engine(f"sqlite:///{database}")

    def timed_delivery_write() -> float:
        started = time.monotonic()
        with write_transaction(engine) as connection:
            connection.execute(sa.text("DELETE FROM events"))
        return time.monotonic() - started

    assert timed_delivery_write() < 0.3  # nobody is receiving: at once
    # Another process's receiver is waiting for (or holding) the gate: it holds the mark shared.
    other = subprocess.Popen([sys.executable, "-c", _HOLD_URGENT_MARK, f"{database}-urgent.lock", "10"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        waited = timed_delivery_write()
        # It stood back for the other process's webhook, then took its turn anyway.
        assert 0.4 <= waited < 3.0, waited
        # A webhook of this process is not held back by the other's mark.
        started = time.monotonic()
        record_events(engine, [_incoming("msg-own")])
        assert time.monotonic() - started < 0.3
    finally:
        other.kill()
        other.wait()
    assert _count(engine) == 1
    engine.dispose()


@pytest.fixture
def burst(tmp_path):
    """Webhooks stored by this process every 50 ms, for as long as the test keeps the burst on."""
    engine = _engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    intake = EventIntake(engine)
    on = threading.Event()
    on.set()
    done = threading.Event()

    def send() -> None:
        n = 0
        while on.is_set():
            intake.store(_incoming(f"burst-{n}"), deadline=time.monotonic() + 5)
            n += 1
            time.sleep(0.05)
        done.set()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    time.sleep(0.2)
    yield on
    on.clear()
    thread.join(5)
    engine.dispose()


def _timed_pass(work_s: float) -> float:
    started = time.monotonic()
    with make_way.making_way(threading.Event()):
        time.sleep(work_s)
    return time.monotonic() - started


def test_without_webhooks_a_delivery_pass_does_not_rest(monkeypatch):
    monkeypatch.setattr(make_way, "webhooks_stored_within", lambda seconds: False)
    assert _timed_pass(0.05) < 0.2


def test_during_a_burst_a_delivery_pass_rests_in_proportion_and_never_past_the_cap(burst, monkeypatch):
    assert make_way.webhooks_arriving()
    took = _timed_pass(0.05)
    assert took >= 0.05 * (1 + make_way.REST_PER_PASS) * 0.9, took  # rested about 9 times the pass
    monkeypatch.setattr(make_way, "MAX_REST_S", 0.3)
    assert _timed_pass(0.2) < 0.2 + 0.3 + 0.3  # a long pass rests the cap at most: delivery never stops


def test_a_rest_ends_soon_after_the_burst_does(burst):
    ending = threading.Timer(0.3, burst.clear)
    ending.start()
    took = _timed_pass(0.5)  # would rest 4.5 s if the burst went on
    ending.join()
    assert took < 0.5 + 0.3 + make_way.BURST_QUIET_S + 0.5, took
