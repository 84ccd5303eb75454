"""Each alert condition fires from what the ledger holds: no live worker while deliveries wait, the
oldest waiting delivery past its threshold, and webhooks answered 503 (counted while the ledger is
locked, reported once it answers). Dead deliveries and pauses: tests/test_alerts.py."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from connector import create_app
from connector.alerts import refusals
from connector.alerts.message import NO_LIVE_WORKER
from connector.cli import main
from connector.ledger.migrate import upgrade
from connector.ledger.models import utcnow
from connector.mapping.loader import load_mappings
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from connector.worker import pausing
from connector.worker.planner import plan_received
from connector.worker.runner import Worker
from tests.alert_sinks import HttpSink
from tests.conftest import make_app
from tests.servers import write_config
from tests.test_alerts import HOOK, MAPPINGS, alert_environ, groups, loop_for, targets
from tests.test_status import post_event


def planned_review(engine, settings, message_id: str = "msg-wait") -> None:
    """One review.create, planned into its deliveries (two per CRM), none delivered."""
    from tests.test_worker import ingest

    ingest(engine, "review.create", message_id)
    plan_received(engine, load_mappings(settings))


def test_no_live_worker_while_deliveries_wait_is_said_by_an_evaluator_elsewhere(db_url, tmp_path):
    with HttpSink() as http:
        loop, engine = loop_for(db_url, http)
        planned_review(engine, loop.settings)
        path = write_config(tmp_path / "config.yaml", {
            "database": {"url": db_url}, "mappings": MAPPINGS, "alerts": {"targets": targets(http)}})
        result = CliRunner().invoke(main, ["--config", str(path), "alerts", "run", "--once"], env=alert_environ(http))
        again = CliRunner().invoke(main, ["--config", str(path), "alerts", "run", "--once"], env=alert_environ(http))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "2 message(s) written, 2 sent, 0 failed"
    assert again.output.strip() == "0 message(s) written, 0 sent, 0 failed"
    [seen] = http.taken(HOOK)
    assert (seen.body["condition"], seen.body["group"]) == ("no_live_worker", "workers")
    assert seen.body["facts"] == {"waiting_deliveries": 4, "waiting_events": 0}
    assert "none has been seen" in seen.body["text"] and "start `connector worker`" in seen.body["text"]
    engine.dispose()


def test_a_running_worker_alerts_by_itself_and_never_that_no_worker_runs(db_url):
    with HttpSink() as http:
        loop, engine = loop_for(db_url, http, evaluate_every_s=0.1)
        settings = loop.settings.model_copy(update={"worker": loop.settings.worker.model_copy(
            update={"poll_interval_s": 0.05, "heartbeat_s": 0.2})})
        for destination in ("hubspot", "salesforce"):  # its deliveries wait, held by the pauses
            pausing.pause(engine, destination, "maintenance", "ops")
        planned_review(engine, settings)
        worker = Worker(settings, load_mappings(settings), engine, prune_enabled=False).start(1)
        try:
            deadline = time.monotonic() + 20
            while len(http.taken(HOOK)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # a few more evaluations
        finally:
            worker.stop()
    assert groups(http.taken(HOOK)) == {("paused", "hubspot"): 1, ("paused", "salesforce"): 1}
    assert http.taken(HOOK)[0].body["facts"]["waiting"] == 2
    engine.dispose()


def test_the_oldest_waiting_delivery_past_the_threshold_is_reported_per_destination(db_url):
    from tests.test_worker import ingest

    with HttpSink() as http:
        loop, engine = loop_for(db_url, http, conditions={"no_live_worker": False, "oldest_waiting_minutes": 30})
        planned_review(engine, loop.settings)
        ingest(engine, "review.update", "msg-not-planned")  # an event no worker has planned yet
        pausing.pause(engine, "salesforce", "maintenance", "ops")  # its deliveries wait on purpose
        now = utcnow()
        loop.tick(now + timedelta(minutes=29))
        assert groups(http.taken(HOOK)) == {("paused", "salesforce"): 1}
        loop.tick(now + timedelta(minutes=31))
    found = {seen.body["group"]: seen.body for seen in http.taken(HOOK) if seen.body["condition"] == "oldest_waiting"}
    assert set(found) == {"hubspot", "events"}
    assert found["hubspot"]["title"] == "Deliveries to hubspot have waited 31 min"
    assert found["hubspot"]["link"] == "/status/events?state=pending&destination=hubspot"
    assert found["hubspot"]["facts"]["waiting"] == 2 and found["hubspot"]["facts"]["threshold_s"] == 1800
    assert found["events"]["title"] == "Events have waited 31 min to be planned"
    assert found["events"]["link"] == "/status/events?state=received"
    engine.dispose()


@pytest.fixture
def no_503s_counted_yet():
    refusals.reset()  # other tests in this process may have answered 503
    yield
    refusals.reset()


def test_webhooks_answered_503_while_the_ledger_is_locked_are_reported_once_it_answers(
        sqlite_url, tmp_path, no_503s_counted_yet):
    with HttpSink() as http:
        app = make_app(sqlite_url, database={"busy_timeout_ms": 100}, answer_within_s=1)
        loop, engine = loop_for(sqlite_url, http, database={"busy_timeout_ms": 100})
        client = app.test_client()
        body = sample_bytes("review.create")
        holder = sqlite3.connect(str(tmp_path / "ledger.db"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # a backup, a migration, an operator's shell
        try:
            answers = [post_event(client, body, f"msg-locked-{i}").status_code for i in range(3)]
            with pytest.raises(OperationalError):
                loop.tick()  # the ledger refuses the alert's writes too: the count waits in memory
            assert refusals.pending() == 3
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert loop.tick().written == 0  # counted now; a message waits for other processes' counts
        later = utcnow() + timedelta(seconds=61)
        first = loop.tick(later)
        second = loop.tick(later)
    assert answers == [503, 503, 503]
    assert (first.written, second.written) == (2, 0)
    [seen] = http.taken(HOOK)
    assert (seen.body["condition"], seen.body["title"]) == ("webhooks_503", "3 webhooks answered 503")
    assert seen.body["facts"]["count"] == 3 and "Svix sends each again later" in seen.body["text"]
    assert refusals.pending() == 0
    app.extensions[EXTENSION_KEY].engine.dispose()
    engine.dispose()


def test_webhooks_answered_503_for_want_of_a_secret_are_reported_with_their_count(db_url, no_503s_counted_yet):
    with HttpSink() as http:
        app = create_app({"database": {"url": db_url}})  # no OKENDO_WEBHOOK_SECRETS: every webhook gets 503
        upgrade(app.extensions[EXTENSION_KEY].engine)
        loop, engine = loop_for(db_url, http, interval_minutes=10)
        client = app.test_client()
        for i in range(4):
            assert client.post("/webhooks/okendo", data=b"{}").status_code == 503
        now = utcnow() + timedelta(seconds=61)  # two ticks after the last 503
        loop.tick(now)
        assert client.post("/webhooks/okendo", data=b"{}").status_code == 503
        loop.tick(now + timedelta(minutes=1))  # within the interval: counted, not sent
        loop.tick(now + timedelta(minutes=11))
    assert [seen.body["facts"]["count"] for seen in http.taken(HOOK)] == [4, 1]
    app.extensions[EXTENSION_KEY].engine.dispose()
    engine.dispose()


def test_a_lasting_outage_is_reported_while_it_lasts(db_url, no_503s_counted_yet):
    from connector.alerts import outbox

    with HttpSink() as http:
        loop, engine = loop_for(db_url, http)  # evaluate_every_s 30: a burst settles 60 s after its last 503
        start = utcnow()
        outbox.add_to_counter(engine, "webhooks_503", 40, start, start + timedelta(minutes=4, seconds=50))
        loop.tick(start + timedelta(minutes=4, seconds=55))  # still answering 503 five seconds ago
        assert not http.taken(HOOK)
        loop.tick(start + timedelta(minutes=5, seconds=1))  # five settling periods after the first: say it
    [seen] = http.taken(HOOK)
    assert seen.body["facts"]["count"] == 40
    engine.dispose()


def test_the_503s_of_every_gunicorn_worker_make_one_message(tmp_path, db_url):
    import requests

    from tests.servers import gunicorn

    with HttpSink() as http:
        config = {"database": {"url": db_url}, "mappings": MAPPINGS,
                  "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
                  "alerts": {"targets": targets(http), "evaluate_every_s": 0.5}}
        with gunicorn(tmp_path, config, env=alert_environ(http), workers=2) as server:
            # No signing secret: every webhook is answered 503, by whichever worker process takes it.
            answers = [requests.post(f"{server.base_url}/webhooks/okendo", data=b"{}", timeout=5).status_code
                       for _ in range(10)]
            deadline = time.monotonic() + 30
            while not http.taken(HOOK) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)  # more ticks of both processes: nothing more to say
            log = server.log()
    assert answers == [503] * 10
    [seen] = http.taken(HOOK)
    assert seen.body["condition"] == "webhooks_503", log
    # Every 503 the server answered (the helper's probes while it started included), from both processes.
    assert seen.body["facts"]["count"] == log.count('"POST /webhooks/okendo HTTP/1.1" 503') >= 11
    assert log.count("alerts: evaluated every 0.5 s") == 2  # one alert loop in each worker process


def test_a_web_server_without_embedded_workers_says_when_no_worker_is_alive(tmp_path, db_url):
    """worker.embedded: false and every standalone worker down: only the web server can tell."""
    import requests

    from tests.servers import gunicorn
    from tests.signing import SECRET, signed_headers

    with HttpSink() as http:
        config = {"database": {"url": db_url}, "mappings": MAPPINGS, "worker": {"embedded": False},
                  "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
                  "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
                  "alerts": {"targets": targets(http), "evaluate_every_s": 0.5}}
        with gunicorn(tmp_path, config, env={**alert_environ(http), "OKENDO_WEBHOOK_SECRETS": SECRET},
                      workers=1) as server:
            body = sample_bytes("review.create")
            assert requests.post(f"{server.base_url}/webhooks/okendo", data=body,
                                 headers=signed_headers(body, "msg_nobody_delivers"), timeout=5).status_code == 202
            deadline = time.monotonic() + 30
            while NO_LIVE_WORKER not in {seen.body["condition"] for seen in http.taken(HOOK)} \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            log = server.log()
    assert [seen.body["condition"] for seen in http.taken(HOOK)].count(NO_LIVE_WORKER) == 1, log
    assert log.count("alerts: evaluated every 0.5 s") == 1  # the web server's own loop
