"""One planner at a time per ledger: a thread or process that finds another planning does not map
the same events again (it plans nothing and goes on to claim); once the turn is free, it plans.
And what a claim takes: full batches before a few whose others are about to be free."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import sqlalchemy as sa

from connector.mapping.loader import load_mappings
from connector.worker.planner import plan_received
from connector.worker.planning_turn import planning_turn
from tests.crm import PROJECT_ROOT
from tests.test_worker import ingest, ledger  # noqa: F401


def received(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM events WHERE state = 'received'")).scalar_one()


def test_a_planner_that_finds_another_planning_plans_nothing_and_plans_once_the_turn_is_free(ledger):
    settings, engine = ledger
    mappings = load_mappings(settings)
    for sample in ("review.create", "loyalty_customer.create"):
        ingest(engine, sample)
    with planning_turn(engine) as mine:
        assert mine
        assert plan_received(engine, mappings) == 0 and received(engine) == 2
    assert plan_received(engine, mappings) == 2 and received(engine) == 0


def test_another_process_planning_holds_the_turn_on_this_ledger(ledger, tmp_path):
    settings, engine = ledger
    ingest(engine, "review.create")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        import sqlalchemy as sa
        from connector.ledger.database import normalize_url
        from connector.worker.planning_turn import planning_turn
        engine = sa.create_engine(normalize_url({settings.database.url!r}))
        with planning_turn(engine) as mine:
            print("holding" if mine else "refused", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert plan_received(engine, load_mappings(settings)) == 0 and received(engine) == 1
    finally:
        holder.communicate("done\n", timeout=30)
    assert plan_received(engine, load_mappings(settings)) == 1


def _delivery_rows(engine: sa.Engine, kind: str, count: int, *, first_event: int, target: str | None = None,
                   leased: bool = False) -> None:
    """`count` due deliveries of one kind (mapping), one event and resource each."""
    from datetime import timedelta

    from connector.ledger.models import utcnow
    now = utcnow()
    with engine.begin() as connection:
        for n in range(first_event, first_event + count):
            connection.execute(sa.text(
                "INSERT INTO events (id, message_id, received_at, resource_type, topic, resource_id, state, "
                "headers, body) VALUES (:id, :m, :t, 'review', 'create', :r, 'planned', '{}', :b)"),
                {"id": n, "m": f"m{n}", "t": now, "r": f"r{n}", "b": b"{}"})
            connection.execute(sa.text(
                "INSERT INTO deliveries (event_id, mapping, destination, state, attempts, next_attempt_at, "
                "created_at, updated_at, resource_type, resource_id, position, target_key, lease_owner, "
                "lease_expires_at) VALUES (:e, :k, 'hubspot', 'pending', 0, :t, :t, :t, 'review', :r, 0, :target, "
                ":owner, :lease)"),
                {"e": n, "k": kind, "t": now, "r": f"r{n}", "target": target or f"contacts|email|s{n}",
                 "owner": "other" if leased else None, "lease": now + timedelta(seconds=60) if leased else None})


def test_a_claim_takes_a_kind_with_a_full_batch_before_a_few_whose_others_are_held(ledger):
    """Three of the oldest kind may go, a fourth waits for a contact another worker is writing: they
    go together once it is free (one CRM call, not two), and a kind with a full batch goes first."""
    from connector.worker import claims

    _, engine = ledger
    _delivery_rows(engine, "other_kind_in_flight", 1, first_event=1, target="contacts|email|busy", leased=True)
    _delivery_rows(engine, "oldest_kind", 3, first_event=10)
    _delivery_rows(engine, "oldest_kind", 1, first_event=20, target="contacts|email|busy")
    _delivery_rows(engine, "newer_kind", 150, first_event=100)

    first = claims.claim(engine, "worker:1", limit=200, lease_s=60)
    assert {c.mapping for c in first} == {"newer_kind"} and len(first) == 150
    # With no full batch anywhere, the few go rather than nobody.
    second = claims.claim(engine, "worker:2", limit=200, lease_s=60)
    assert {c.mapping for c in second} == {"oldest_kind"} and len(second) == 3
