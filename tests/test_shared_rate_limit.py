"""The shared rate limiter as a unit: several limiters (as several processes would hold) over one ledger,
on a fake clock. What they promise: no window of `per_seconds` ever holds more than `requests` of their
requests together, a pause one of them is told about holds back all of them, and the concurrency cap
counts every holder, a crashed one only until its lease expires."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.config import HubSpotDestinationConfig, SalesforceDestinationConfig, settings_from_mapping
from connector.destinations import build_destination
from connector.destinations.ratelimit import RateLimiter, SharedRateLimiter, account_key, limiter_for
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from connector.ledger.rate_limits import store_for


class FakeClock:
    """Wall-clock seconds that move only when someone sleeps."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start
        self.sleeps = 0
        self.on_sleep = None  # called before each sleep: another process acting meanwhile

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.on_sleep is not None:
            hook, self.on_sleep = self.on_sleep, None
            hook()
        self.now += max(seconds, 0.0)


@pytest.fixture
def ledger(db_url):
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": db_url}}))
    upgrade(engine)
    yield engine
    engine.dispose()


def limiters(engine: sa.Engine, clock: FakeClock, count: int, account: str = "account-1", **limits) -> list:
    """`count` limiters of one account, each with its own store, as `count` processes would have them."""
    return [SharedRateLimiter(store_for(engine), account, "hubspot", clock=clock.time, sleep=clock.sleep,
                              holder=f"process-{i}", **limits) for i in range(count)]


def most_in_any_window(times: list[float], seconds: float) -> int:
    times = sorted(times)
    start, most = 0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - seconds:  # the CRM's window: (moment - seconds, moment]
            start += 1
        most = max(most, end - start + 1)
    return most


def test_three_limiters_on_one_ledger_never_exceed_the_window_together_and_use_most_of_it(ledger):
    clock = FakeClock()
    three = limiters(ledger, clock, 3, max_requests=30, per_seconds=10.0)
    sent = []
    for i in range(150):
        with three[i % 3].request():
            sent.append(clock.now)
    assert most_in_any_window(sent, 10.0) <= 30
    # Not by being slow: 150 requests at 30 per 10 s take 50 s; the margin costs a few percent.
    assert sent[-1] - sent[0] <= 150 / 30 * 10 * 1.05


def test_one_limiter_per_process_each_with_the_whole_limit_would_exceed_it():
    """What the shared limiter replaces: each process's own window lets N processes send N times the limit."""
    clock = FakeClock()
    own = [RateLimiter(30, 10.0, clock=clock.time, sleep=clock.sleep) for _ in range(3)]
    sent = []
    for i in range(150):
        with own[i % 3].request():
            sent.append(clock.now)
    assert most_in_any_window(sent, 10.0) == 90


def test_a_pause_told_to_one_limiter_holds_back_the_others_even_a_slot_granted_before_it(ledger):
    clock = FakeClock()
    first, second, third = limiters(ledger, clock, 3, max_requests=30, per_seconds=10.0)
    for _ in range(6):  # six requests of the third already waiting: the next free slot is two seconds away
        third.store.take_slot(third.account, "hubspot", third.spacing, clock.now)
    started = clock.now
    clock.on_sleep = lambda: first.pause(7.0)  # a 429 seen by the first while the second waits for its slot
    with second.request():
        sent_at = clock.now
    assert sent_at >= started + 7.0
    with third.request():
        assert clock.now >= started + 7.0


def test_a_pause_reaches_a_limiter_created_after_it(ledger):
    clock = FakeClock()
    first, = limiters(ledger, clock, 1, max_requests=None, per_seconds=10.0)
    first.pause(3.0)
    later, = limiters(ledger, clock, 1, max_requests=None, per_seconds=10.0)
    started = clock.now
    with later.request():
        assert clock.now >= started + 3.0


def test_the_concurrency_cap_counts_every_limiter_and_a_crashed_holder_only_until_its_lease_expires(ledger):
    clock = FakeClock()
    crashed, other, waiting, next_one = limiters(ledger, clock, 4, max_requests=None, per_seconds=1.0,
                                                 max_concurrency=2, lease_s=30.0)
    started = clock.now
    held = ExitStack()
    held.enter_context(crashed.request())  # never given back: its process died mid-call
    with other.request():
        pass
    with waiting.request():  # one slot free: no wait
        assert clock.now == started
        with next_one.request():  # both held: waits until the crashed process's lease expires
            assert clock.now >= started + 30.0
            assert clock.now < started + 31.0


def test_concurrent_threads_of_three_limiters_never_hold_more_than_the_cap(ledger):
    three = [SharedRateLimiter(store_for(ledger), "account-cap", "salesforce", None, 1.0, 2, holder=f"p{i}")
             for i in range(3)]
    inside, most, lock = 0, 0, threading.Lock()

    def call(limiter: SharedRateLimiter) -> None:
        nonlocal inside, most
        for _ in range(5):
            with limiter.request():
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.02)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=call, args=(three[i % 3],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most == 2


def test_destinations_with_one_token_share_one_limit_and_the_ledger_never_holds_the_token(ledger):
    token = "pat-na1-11111111-2222-3333-4444-555555555555"
    config = HubSpotDestinationConfig(type="hubspot", access_token=token,
                                      rate_limit={"requests": 30, "per_seconds": 10.0})
    other_app = config.model_copy(update={"access_token": "pat-na1-another-app"})
    assert account_key(config) == account_key(config.model_copy())
    assert account_key(config) != account_key(other_app)
    salesforce = SalesforceDestinationConfig(type="salesforce", instance_url="https://x.my.salesforce.com",
                                             access_token=token)
    assert account_key(salesforce) != account_key(config)

    reviews, loyalty = limiter_for("reviews", config, ledger), limiter_for("loyalty", config, ledger)
    reviews.pause(0.01)
    loyalty.pause(0.01)
    with ledger.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM rate_limit_windows")).all() if ledger.dialect.name == \
            "postgresql" else []
    with (store_for(ledger).engine.connect()) as connection:
        rows += connection.execute(sa.text("SELECT * FROM rate_limit_windows")).all()
    assert rows and all(token not in str(row) for row in rows)
    assert len({row.account_key for row in rows}) == 1, "one row for the app, whichever destination used it"


def test_a_built_destination_draws_on_the_ledgers_limit(ledger, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "test-token")
    settings = settings_from_mapping({"database": {"url": "sqlite://"}, "destinations": {
        "hubspot": {"type": "hubspot", "access_token": "${HUBSPOT_ACCESS_TOKEN}", "base_url": "http://127.0.0.1:9"}}})
    destination = build_destination("hubspot", settings, ledger)
    assert isinstance(destination.limiter, SharedRateLimiter)
    assert build_destination("hubspot", settings).limiter is not None  # no ledger: this process's own


def test_on_sqlite_a_grant_does_not_wait_for_the_ledgers_write_lock(sqlite_url):
    """The webhook path's write lock is the ledger's; the limiter's writes go to a file of their own."""
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": sqlite_url}}))
    upgrade(engine)
    holder = sqlite3.connect(Path(engine.url.database), timeout=0)
    holder.isolation_level = None
    holder.execute("BEGIN IMMEDIATE")  # another process mid-write (a webhook's insert, a worker's claim)
    try:
        limiter = SharedRateLimiter(store_for(engine), "account-sqlite", "hubspot", 30, 10.0)
        started = time.monotonic()
        for _ in range(3):
            with limiter.request():
                pass
        assert time.monotonic() - started < 1.2  # three slots 0.34 s apart, no lock wait
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()


def test_a_ledger_that_cannot_be_read_sends_nothing_and_says_which_destination_and_what_to_check():
    from connector.destinations.errors import DeliveryError, ErrorClass
    from connector.ledger.rate_limits import RateLimitStore

    limiter = SharedRateLimiter(RateLimitStore(sa.create_engine("sqlite://")), "account-x", "hubspot-eu", 30, 10.0,
                                max_concurrency=1)  # a database without the limiter's tables
    sent = []
    with pytest.raises(DeliveryError) as raised:
        with limiter.request():
            sent.append(1)
    assert sent == []
    assert raised.value.error_class == ErrorClass.RETRY_SOON
    assert "hubspot-eu" in raised.value.message and "ledger" in raised.value.message
    with pytest.raises(DeliveryError):  # the local slot was given back: it fails the same way, does not hang
        with limiter.request():
            pass
