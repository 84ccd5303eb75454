"""Retention: `prune`, `connector prune` and the worker's automatic pruning, on SQLite and PostgreSQL.

Finished events (every delivery delivered, skipped or stale) older than the
cutoff go, with their deliveries and attempts; anything still needing a
retry or a person stays whatever its age; the link table and the ordering
tombstones stay, so later updates and ids-only deletes still find their records.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
import yaml

from connector import okendo
from connector.cli import main
from connector.config import Settings, settings_from_mapping
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from connector.ledger.models import Delivery, Event, utcnow
from connector.mapping.loader import load_mappings
from connector.samples import sample_bytes
from connector.worker import retention
from connector.worker import runner as runner_module
from connector.worker.planner import plan_received
from connector.worker.replay import ReplayFilter, replay
from connector.worker.retention import prune
from connector.worker.runner import Worker
from tests import test_worker
from tests.crm import PROJECT_ROOT
from tests.test_worker import (
    delivery,
    drain,
    ingest,
    review_note,
    states,
)

# A ledger draining into the CRM emulators (a fixture of tests/test_worker.py).
ledger = test_worker.ledger

SHIPPED_MAPPINGS = [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"), str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]
TABLES = ("events", "deliveries", "delivery_attempts", "record_links", "resource_versions")


# --- a ledger whose destinations have no credentials: the worker delivers in dry-run mode -------

def dry_settings(db_url: str, **retention_config) -> Settings:
    return settings_from_mapping({
        "database": {"url": db_url},
        "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
        "mappings": {"files": SHIPPED_MAPPINGS},
        "worker": {"batch_size": 200, "lease_s": 30, "poll_interval_s": 0.05},
        "retention": retention_config,
    }, environ={})


@pytest.fixture
def dry(db_url):
    settings = dry_settings(db_url)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    yield settings, engine
    engine.dispose()


def variant(sample: str, key: str, *, sequence: int | None = None, email: str | bool = True) -> dict:
    """A sample about another resource and shopper (False: no email), optionally with another sequence number."""
    document = json.loads(sample_bytes(sample))
    resource_type = document["resourceType"]
    document["resource"][okendo.RESOURCE_ID_FIELDS[resource_type]] = f"{resource_type}-{key}"
    *parents, leaf = okendo.CUSTOMER_EMAIL_PATHS[resource_type]
    holder = document["resource"]
    for name in parents:
        holder = holder.setdefault(name, {})
    if email:
        holder[leaf] = email if isinstance(email, str) else f"shopper-{key}@example.com"
    else:
        holder.pop(leaf, None)
    if sequence is not None:
        document["sequenceNumber"] = str(sequence)
    return document


def age(engine: sa.Engine, event_ids, days: float) -> None:
    """Pretend these events arrived `days` ago (through the column type, so SQLite text compares right)."""
    events = Event.__table__
    with engine.begin() as connection:
        connection.execute(sa.update(events).where(events.c.id.in_(list(event_ids)))
                           .values(received_at=utcnow() - timedelta(days=days)))


def set_state(engine: sa.Engine, event_id: int, mapping: str, state: str) -> None:
    deliveries = Delivery.__table__
    with engine.begin() as connection:
        connection.execute(sa.update(deliveries).where(deliveries.c.event_id == event_id,
                                                       deliveries.c.mapping == mapping).values(state=state))


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() for table in TABLES}


def event_ids(engine: sa.Engine) -> set[int]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT id FROM events")).scalars())


def event_state(engine: sa.Engine, event_id: int) -> str | None:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT state FROM events WHERE id = :e"), {"e": event_id}).scalar()


def bookkeeping(engine: sa.Engine, ids) -> tuple[int, int]:
    """(deliveries, attempts) belonging to these events."""
    ids = sorted(ids)
    with engine.connect() as connection:
        deliveries = connection.execute(
            sa.text("SELECT count(*) FROM deliveries WHERE event_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)), {"ids": ids}).scalar_one()
        attempts = connection.execute(
            sa.text("SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
                    "WHERE d.event_id IN :ids").bindparams(sa.bindparam("ids", expanding=True)), {"ids": ids}
        ).scalar_one()
    return deliveries, attempts


def attempt_rows(engine: sa.Engine) -> set[int]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT delivery_id FROM delivery_attempts")).scalars())


def config_file(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


UNSUPPORTED = {"resourceType": "order", "topic": "create", "sequenceNumber": "1", "resource": {"orderId": "o-1"},
               "version": "2025-02-01"}


# --- what goes and what stays -----------------------------------------------------------------

def test_prune_removes_finished_old_events_with_their_deliveries_and_attempts_and_keeps_the_rest(dry):
    settings, engine = dry
    delivered = ingest(engine, variant("loyalty_customer.create", "delivered"))
    skipped = ingest(engine, variant("loyalty_customer.create", "skipped", email=False))  # no key: skipped
    newer = ingest(engine, variant("review.update", "stale"))
    drain(settings, engine)
    stale = ingest(engine, variant("review.create", "stale"))  # older than the update already applied
    invalid = ingest(engine, b"{this is not json")
    unsupported = ingest(engine, UNSUPPORTED)
    young = ingest(engine, variant("loyalty_customer.create", "young"))
    pending, retrying, dead = (ingest(engine, variant("loyalty_customer.create", name))
                               for name in ("pending", "retrying", "dead"))
    drain(settings, engine)
    for event, state in ((pending, "pending"), (retrying, "retrying"), (dead, "dead")):
        set_state(engine, event, "salesforce_contact_from_loyalty_customer", state)
    unmapped = ingest(engine, variant("survey_response.create", "unmapped"))
    plan_received(engine, load_mappings(settings_from_mapping({"mappings": {"files": []}}, environ={})))
    received = ingest(engine, variant("loyalty_customer.create", "received"))  # not planned yet

    assert {delivery(engine, m, skipped).state for m in ("hubspot_contact_from_loyalty_customer",
                                                         "salesforce_contact_from_loyalty_customer")} == {"skipped"}
    assert delivery(engine, "salesforce_review", stale).state == "stale"
    assert event_state(engine, invalid) == "invalid" and event_state(engine, unsupported) == "unsupported"
    assert event_state(engine, unmapped) == "unmapped"
    finished = {delivered, skipped, newer, stale, invalid, unsupported, unmapped}
    kept = {young, pending, retrying, dead, received}
    age(engine, finished | kept - {young}, days=400)
    age(engine, [young], days=29)
    finished_bookkeeping = bookkeeping(engine, finished)
    kept_bookkeeping = bookkeeping(engine, kept)
    assert finished_bookkeeping == (12, 10)  # 2 + 2 + 4 + 4 deliveries; the skipped ones were never tried
    before = counts(engine)

    assert prune(engine, 30) == len(finished)

    assert event_ids(engine) == kept
    assert bookkeeping(engine, finished) == (0, 0)
    assert bookkeeping(engine, kept) == kept_bookkeeping
    after = counts(engine)
    assert after["deliveries"] == before["deliveries"] - 12
    assert after["delivery_attempts"] == before["delivery_attempts"] - 10
    assert after["resource_versions"] == before["resource_versions"] > 0  # the ordering guard stays
    assert event_state(engine, received) == "received"
    assert prune(engine, 30) == 0  # nothing else is finished


@pytest.mark.parametrize("open_state", ["pending", "retrying", "dead"])
def test_an_open_delivery_keeps_its_event_whatever_its_age_until_it_is_finished(dry, open_state):
    settings, engine = dry
    event = ingest(engine, "review.create")
    drain(settings, engine)
    set_state(engine, event, "hubspot_review_note", open_state)
    age(engine, [event], days=10_000)

    assert prune(engine, 1) == 0
    assert event_ids(engine) == {event}
    assert bookkeeping(engine, [event]) == (4, 4)

    # Once the open delivery is finished (replayed and delivered), the event goes on the next pass.
    replay(engine, ReplayFilter(event_ids=(event,), states=(open_state,)), by="ops")
    drain(settings, engine)
    assert states(engine) == {"delivered": 4}
    assert prune(engine, 1) == 1
    assert event_ids(engine) == set() and counts(engine)["delivery_attempts"] == 0


def test_prune_in_batches_each_in_its_own_short_transaction(dry, monkeypatch):
    settings, engine = dry
    ids = [ingest(engine, variant("loyalty_customer.create", f"batch-{i}")) for i in range(25)]
    drain(settings, engine)
    age(engine, ids, days=31)
    transactions = []
    real_write_transaction = retention.write_transaction
    monkeypatch.setattr(retention, "write_transaction",
                        lambda engine: transactions.append(1) or real_write_transaction(engine))

    assert prune(engine, 30, batch_size=4, limit=10) == 10
    assert event_ids(engine) == set(ids[10:])  # oldest ids first
    assert len(transactions) == 3  # 4 + 4 + 2

    transactions.clear()
    assert prune(engine, 30, batch_size=4) == 15
    assert event_ids(engine) == set() and counts(engine)["deliveries"] == 0
    assert len(transactions) == 4  # 4 + 4 + 4 + 3


def test_a_replay_racing_a_prune_is_never_lost(dry):
    """A replay committed while a prune holds its candidates must win: the delivery is queued again."""
    settings, engine = dry
    event = ingest(engine, "review.create")
    drain(settings, engine)
    age(engine, [event], days=400)
    deliveries = Delivery.__table__
    replaying = engine.connect().execution_options(ledger_write=True)
    transaction = replaying.begin()
    replaying.execute(sa.update(deliveries).where(deliveries.c.event_id == event, deliveries.c.mapping
                                                  == "hubspot_review_note").values(state="pending"))
    removed: list[int] = []
    pruning = threading.Thread(target=lambda: removed.append(prune(engine, 30)))
    pruning.start()
    time.sleep(0.5)  # the prune has found its candidates (PostgreSQL) or waits for the write lock (SQLite)
    transaction.commit()
    replaying.close()
    pruning.join(10)

    assert removed == [0]
    assert event_ids(engine) == {event}
    assert delivery(engine, "hubspot_review_note", event).state == "pending"
    drain(settings, engine)
    assert delivery(engine, "hubspot_review_note", event).state == "delivered"


def test_two_prunes_at_once_remove_each_event_once(dry):
    """Every worker process prunes on its own: two at once neither fail nor count an event twice."""
    settings, engine = dry
    ids = [ingest(engine, variant("loyalty_customer.create", f"twice-{i}")) for i in range(30)]
    ids.append(ingest(engine, b"{not json"))  # no deliveries at all
    drain(settings, engine)
    age(engine, ids, days=31)
    removed: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            removed.append(prune(engine, 30, batch_size=3))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sum(removed) == len(ids)
    assert counts(engine)["events"] == counts(engine)["deliveries"] == counts(engine)["delivery_attempts"] == 0


# --- the link table and the ordering guard outlive the events ------------------------------

def test_links_outlive_pruning_so_an_ids_only_delete_still_finds_its_records(ledger, crms):
    settings, engine = ledger
    create = ingest(engine, "review.create", "msg_review_create")
    drain(settings, engine)
    assert review_note(crms) is not None and len(crms.salesforce.records("Okendo_Review__c")) == 1
    links = counts(engine)["record_links"]
    assert links >= 2  # at least the note and the Salesforce review

    age(engine, [create], days=31)
    assert prune(engine, 30) == 1
    assert counts(engine) == {"events": 0, "deliveries": 0, "delivery_attempts": 0, "record_links": links,
                              "resource_versions": 2}

    delete = ingest(engine, "review.delete")  # carries only ids: no reviewer, no email
    drain(settings, engine)
    assert delivery(engine, "hubspot_review_note_delete", delete).state == "delivered"
    assert delivery(engine, "salesforce_review_delete", delete).state == "delivered"
    assert review_note(crms) is None
    assert crms.salesforce.records("Okendo_Review__c") == []

    # Svix redelivers the old create after its row was pruned: the tombstone still refuses it.
    late = ingest(engine, "review.create", "msg_review_create")
    assert late not in (create, delete)
    drain(settings, engine)
    assert delivery(engine, "hubspot_review_note", late).state == "stale"
    assert delivery(engine, "salesforce_review", late).last_error.startswith("the resource was deleted")
    assert review_note(crms) is None and crms.salesforce.records("Okendo_Review__c") == []


def test_the_ledger_stays_bounded_on_a_busy_store(ledger, crms):
    settings, engine = ledger
    resources = ["a", "b", "c"]
    sizes, links = [], []
    for round_ in range(4):
        for key in resources:
            ingest(engine, variant("review.update", key, sequence=5_000 + round_))
        drain(settings, engine)
        sizes.append(counts(engine))
        time.sleep(0.1)
        assert prune(engine, 0.000001) == 3  # older than about 86 ms
        after = counts(engine)
        assert (after["events"], after["deliveries"], after["delivery_attempts"]) == (0, 0, 0)
        links.append(after["record_links"])

    assert all((size["events"], size["deliveries"], size["delivery_attempts"]) == (3, 12, 12) for size in sizes)
    assert links[0] > 0 and len(set(links)) == 1  # the same three reviews: no new links
    assert counts(engine)["resource_versions"] == 3 * 2
    # Every update after a prune still found its note and review through the kept links.
    assert len(crms.hubspot.records("notes")) == 3 and len(crms.salesforce.records("Okendo_Review__c")) == 3

    for key in ("d", "e"):
        ingest(engine, variant("review.update", key, sequence=9_000))
    drain(settings, engine)
    assert counts(engine)["record_links"] == links[0] // 3 * 5  # grows with distinct resources only


# --- automatic pruning in the worker ----------------------------------------------------------

@pytest.fixture
def clock(monkeypatch):
    """The worker's monotonic clock, under the test's control."""
    fake = SimpleNamespace(now=1_000_000.0)
    monkeypatch.setattr(runner_module, "time", SimpleNamespace(monotonic=lambda: fake.now))
    return fake


def finished_events(settings: Settings, engine: sa.Engine, names, days: float) -> list[int]:
    ids = [ingest(engine, variant("loyalty_customer.create", name)) for name in names]
    drain(settings, engine)
    age(engine, ids, days)
    return ids


def test_the_worker_prunes_on_its_interval(db_url, clock):
    settings = dry_settings(db_url, finished_days=10, prune_interval_minutes=60, batch_size=2)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    old = finished_events(settings, engine, ["w1", "w2", "w3"], days=11)
    young = finished_events(settings, engine, ["w4"], days=9)
    worker = Worker(settings, load_mappings(settings), engine)

    worker._maybe_prune()
    assert event_ids(engine) == set(young)  # the three old ones went, in batches of two
    assert not event_ids(engine) & set(old)

    later = finished_events(settings, engine, ["w5"], days=11)
    clock.now += 59 * 60
    worker._maybe_prune()
    assert event_ids(engine) == set(young) | set(later)  # not yet: once an hour
    clock.now += 2 * 60
    worker._maybe_prune()
    assert event_ids(engine) == set(young)
    worker.stop(timeout=0)
    engine.dispose()


@pytest.mark.parametrize("retention_config, enabled", [
    ({"finished_days": None}, True),  # retention switched off in the config
    ({"finished_days": 10}, False),  # this worker was told not to prune (the drain helpers' workers)
], ids=["finished_days-null", "prune_enabled-false"])
def test_the_worker_does_not_prune_when_retention_is_off(db_url, clock, retention_config, enabled):
    settings = dry_settings(db_url, **retention_config)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    ids = finished_events(settings, engine, ["x1", "x2"], days=400)
    worker = Worker(settings, load_mappings(settings), engine, prune_enabled=enabled)
    worker._maybe_prune()
    clock.now += 10 * 3600
    worker._maybe_prune()
    assert event_ids(engine) == set(ids)
    worker.stop(timeout=0)
    engine.dispose()


def test_running_worker_threads_prune_by_themselves(db_url, clock):
    settings = dry_settings(db_url, finished_days=10, prune_interval_minutes=60)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    old = finished_events(settings, engine, ["t1", "t2"], days=11)
    pending = ingest(engine, variant("loyalty_customer.create", "t3"))
    age(engine, [pending], days=11)  # old, but not delivered yet: the running worker delivers it first
    def open_rows() -> int:
        with engine.connect() as connection:
            return connection.execute(sa.text(
                "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'retrying', 'dead')")).scalar_one()

    worker = Worker(settings, load_mappings(settings), engine).start(threads=2)
    try:
        # Until the old events are pruned and the third one delivered: the threads may prune first.
        deadline = time.monotonic() + 10
        while (event_ids(engine) & set(old) or open_rows()) and time.monotonic() < deadline:
            threading.Event().wait(0.05)
    finally:
        worker.stop(timeout=1)
    remaining = event_ids(engine)
    assert not remaining & set(old)
    # The third event was delivered by the threads; it is pruned on a later pass, or already.
    assert remaining <= {pending}
    assert open_rows() == 0
    engine.dispose()


def test_a_worker_on_a_freshly_booted_host_prunes_on_its_first_pass(db_url, clock):
    settings = dry_settings(db_url, finished_days=10, prune_interval_minutes=60)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    finished_events(settings, engine, ["boot"], days=11)
    clock.now = 120.0  # time.monotonic() counts from boot on Linux: two minutes of uptime
    worker = Worker(settings, load_mappings(settings), engine)
    try:
        worker._maybe_prune()
        assert event_ids(engine) == set()
    finally:
        worker.stop(timeout=0)
        engine.dispose()


# --- connector prune ----------------------------------------------------------------------------

def test_connector_prune_uses_the_configured_period_or_the_one_given(runner, tmp_path, dry):
    settings, engine = dry
    eleven, nine, dead = (ingest(engine, variant("loyalty_customer.create", name)) for name in ("c11", "c9", "cdead"))
    drain(settings, engine)
    set_state(engine, dead, "hubspot_contact_from_loyalty_customer", "dead")
    age(engine, [eleven], days=11)
    age(engine, [nine], days=9)
    age(engine, [dead], days=400)
    path = config_file(tmp_path, {"database": {"url": settings.database.url}, "retention": {"finished_days": 10}})

    result = runner.invoke(main, ["--config", str(path), "prune"])
    assert result.exit_code == 0, result.output
    assert "pruned 1 finished event(s) older than 10 days; open deliveries and links are kept" in result.output
    assert event_ids(engine) == {nine, dead}

    result = runner.invoke(main, ["--config", str(path), "prune", "--older-than-days", "5"])
    assert result.exit_code == 0, result.output
    assert "pruned 1 finished event(s) older than 5 days" in result.output
    assert event_ids(engine) == {dead}

    result = runner.invoke(main, ["--config", str(path), "prune", "--older-than-days", "0.5"])
    assert result.exit_code == 0 and "pruned 0 finished event(s) older than 0.5 days" in result.output
    assert event_ids(engine) == {dead}  # a dead delivery waits for a person, however old


def test_connector_prune_without_a_period_says_how_to_give_one(runner, tmp_path, dry):
    settings, engine = dry
    event = ingest(engine, variant("loyalty_customer.create", "off"))
    drain(settings, engine)
    age(engine, [event], days=400)
    path = config_file(tmp_path, {"database": {"url": settings.database.url}, "retention": {"finished_days": None}})

    result = runner.invoke(main, ["--config", str(path), "prune"])
    assert result.exit_code == 1
    assert "retention.finished_days is not set; pass --older-than-days" in result.output
    assert event_ids(engine) == {event}

    result = runner.invoke(main, ["--config", str(path), "prune", "--older-than-days", "30"])
    assert result.exit_code == 0 and "pruned 1 finished event(s) older than 30 days" in result.output
    assert event_ids(engine) == set()


def test_connector_prune_refuses_a_ledger_it_cannot_use(runner, tmp_path, db_url):
    never_migrated = config_file(tmp_path, {"database": {"url": db_url}, "retention": {"finished_days": 10}})
    result = runner.invoke(main, ["--config", str(never_migrated), "prune"])
    assert result.exit_code == 1, result.output
    assert "the ledger's migrations are not current: run `connector db upgrade` first" in result.output
    assert "Traceback" not in result.output

    unreachable = config_file(tmp_path, {"database": {"url": "postgresql://postgres@127.0.0.1:9/none",
                                                      "connect_timeout_s": 1}})
    result = runner.invoke(main, ["--config", str(unreachable), "prune", "--older-than-days", "1"])
    assert result.exit_code == 1, result.output
    assert "the ledger is unavailable" in result.output and "database.url" in result.output
