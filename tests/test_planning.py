"""One planner at a time per ledger: a thread or process that finds another planning does not map
the same events again (it plans nothing and goes on to claim); once the turn is free, it plans."""

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
