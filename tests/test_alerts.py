"""Alerts (issue 14): conditions found in the ledger reach a local HTTP sink (generic webhook and
Slack-style) and a local SMTP server (aiosmtpd) through the outbox: exactly once per group across a
worker crash, once per interval however often a condition flaps, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from connector.alerts.loop import AlertLoop
from connector.config import Settings, settings_from_mapping
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from connector.ledger.models import AlertMessage, utcnow
from connector.samples import sample_bytes
from connector.worker import pausing
from tests.alert_sinks import HttpSink, SmtpSink
from tests.crm import PROJECT_ROOT
from tests.servers import write_config
from tests.test_worker import drain, ingest
from tests.test_worker_processes import start_worker, wait_until

HOOK, SLACK = "/hook", "/services/T000/B000/XXXXSECRETXXXX"
MAPPINGS = {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                      str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]}


def targets(http: HttpSink, smtp: SmtpSink | None = None, timeout_s: float = 1) -> dict:
    found: dict[str, Any] = {
        "ops-hook": {"type": "webhook", "webhook_url": "${ALERT_HOOK_URL}", "bearer_token": "${ALERT_HOOK_TOKEN}",
                     "timeout_s": timeout_s},
        "ops-slack": {"type": "slack", "webhook_url": "${ALERT_SLACK_URL}", "timeout_s": timeout_s}}
    if smtp is not None:
        found["ops-mail"] = {"type": "email", "host": "127.0.0.1", "port": smtp.port, "security": "none",
                             "from_address": "connector@example.com", "to": ["ops@example.com"],
                             "timeout_s": timeout_s}
    return found


def alert_environ(http: HttpSink) -> dict[str, str]:
    return {"ALERT_HOOK_URL": http.url + HOOK, "ALERT_SLACK_URL": http.url + SLACK,
            "ALERT_HOOK_TOKEN": "hook-token-123456"}


def refused_shoppers(engine: sa.Engine, count: int, start: int = 0) -> None:
    """Reviews by shoppers whose address both CRMs refuse, per record: HubSpot's contact dies with
    VALIDATION_ERROR, Salesforce's contact and review with INVALID_EMAIL_ADDRESS."""
    for i in range(start, start + count):
        document = json.loads(sample_bytes("review.create"))
        document["resource"]["reviewId"] = f"refused-{i}"
        # No top-level domain: refused by both CRMs' answers (an internationalised local part would be
        # refused by the connector before sending, with no HTTP status to report).
        document["resource"]["reviewer"]["email"] = f"jurgen{i}@exaemple"
        ingest(engine, document)


def groups(seen: list) -> Counter:
    return Counter((item.body["condition"], item.body["group"]) for item in seen)


def outbox(engine: sa.Engine) -> list[sa.Row]:
    table = AlertMessage.__table__
    with engine.connect() as connection:
        return connection.execute(sa.select(table).order_by(table.c.id)).all()


def test_alerts_reach_a_local_http_sink_and_a_local_smtp_server_exactly_once_per_group_across_a_worker_crash(
        db_url, tmp_path, monkeypatch, crms):
    with HttpSink() as http, SmtpSink(reply="451 4.3.0 Try again later").running() as smtp:
        for name, value in alert_environ(http).items():
            monkeypatch.setenv(name, value)
        config = {"database": {"url": db_url}, "destinations": crms.destinations(), "mappings": MAPPINGS,
                  "worker": {"poll_interval_s": 0.1, "heartbeat_s": 0.5, "shutdown_timeout_s": 5},
                  "alerts": {"targets": targets(http, smtp), "evaluate_every_s": 0.2, "retry_base_s": 0.2,
                             "status_url": "https://connector.example.com"}}
        settings = settings_from_mapping(config)
        engine = create_ledger_engine(settings)
        upgrade(engine)
        refused_shoppers(engine, 3)
        drain(settings, engine)  # 3 dead at HubSpot, 6 at Salesforce
        pausing.pause(engine, "hubspot", "paused by an operator for maintenance", "ops")
        path = write_config(tmp_path / "config.yaml", config)

        # The targets are down, and the Slack post is held open: the worker dies in the middle of it.
        http.status = 503
        http.hold(SLACK)
        victim = start_worker(path, tmp_path / "victim.log")
        try:
            assert http.holding.wait(60), (tmp_path / "victim.log").read_text()
            wait_until(lambda: smtp.refused >= 1 and len(http.seen) >= 2, what="the hook and the mail to be refused")
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
        http.status, smtp.reply = 200, "250 Message accepted for delivery"
        http.release()
        assert not http.taken() and not smtp.messages

        survivor = start_worker(path, tmp_path / "survivor.log")
        try:
            wait_until(lambda: {row.state for row in outbox(engine)} == {"sent"}, timeout=60,
                       what="every alert to be sent once the held one's lease ran out")
            first = outbox(engine)
            time.sleep(1.5)  # several more evaluations by the survivor: nothing new
        finally:
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(timeout=30) == 0
        log = (tmp_path / "victim.log").read_text() + (tmp_path / "survivor.log").read_text()

    expected = {("dead", "hubspot VALIDATION_ERROR"): 1, ("dead", "salesforce INVALID_EMAIL_ADDRESS"): 1,
                ("paused", "hubspot"): 1}
    assert len(first) == 9 and outbox(engine) == first
    assert groups(http.taken(HOOK)) == expected
    assert len(http.taken(SLACK)) == 3 and len(smtp.messages) == 3
    assert sorted(smtp.subjects()) == sorted(f"okendo-connector: {row.message['title']}" for row in first
                                             if row.target == "ops-mail")
    # The held Slack message was sent again, said so, and nothing else was sent twice.
    [repeat] = [seen for seen in http.taken(SLACK) if "sent again" in seen.body["text"]]
    [held] = [seen for seen in http.seen if seen.path == SLACK and not seen.taken]
    assert repeat.body["text"].startswith(held.body["text"]) and "sent again" not in held.body["text"]
    hook = {seen.body["group"]: seen for seen in http.taken(HOOK)}
    dead = hook["hubspot VALIDATION_ERROR"].body
    assert dead["facts"]["count"] == 3 and dead["facts"]["http_status"] == 400
    assert dead["link"] == "https://connector.example.com/status/events?state=dead&destination=hubspot"
    assert hook["salesforce INVALID_EMAIL_ADDRESS"].body["facts"]["count"] == 6
    assert hook["hubspot"].body["facts"]["paused_by"] == "ops"
    assert hook["hubspot"].headers["authorization"] == "Bearer hook-token-123456"
    assert hook["hubspot"].headers["idempotency-key"] == hook["hubspot"].body["id"]
    # No shopper's data in any alert, and no secret in any log line.
    everything = json.dumps([seen.body for seen in http.seen]) + "".join(m.as_string() for m in smtp.messages)
    assert "jurgen" not in everything and "exaemple" not in everything
    assert "XXXXSECRETXXXX" not in log and "hook-token-123456" not in log
    engine.dispose()


def alert_settings(db_url: str, http: HttpSink, database: dict | None = None, **alerts: Any) -> Settings:
    """Dry-run destinations (no credentials), the shipped mappings, and the sink's two targets."""
    return settings_from_mapping({
        "database": {"url": db_url, **(database or {})}, "mappings": MAPPINGS,
        "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},
        "alerts": {"targets": targets(http), **alerts}}, environ=alert_environ(http))


def loop_for(db_url: str, http: HttpSink, database: dict | None = None, **alerts: Any) -> tuple[AlertLoop, sa.Engine]:
    settings = alert_settings(db_url, http, database, **alerts)
    engine = create_ledger_engine(settings)
    upgrade(engine)
    return AlertLoop(settings, engine, f"test-{id(settings)}"), engine


def test_a_flapping_condition_sends_one_message_per_interval_not_hundreds(db_url):
    with HttpSink() as http:
        loop, engine = loop_for(db_url, http, interval_minutes=10)
        start = utcnow()
        for i in range(100):  # paused and resumed a hundred times in under two minutes
            pausing.pause(engine, "hubspot", f"flap {i}", "ops")
            loop.tick(start + timedelta(seconds=i))
            pausing.resume(engine, "hubspot")
            loop.tick(start + timedelta(seconds=i, milliseconds=500))
        assert groups(http.taken(HOOK)) == {("paused", "hubspot"): 1}
        assert http.taken(HOOK)[0].body["text"].count("flap 0") == 1

        pausing.pause(engine, "hubspot", "flap again", "ops")
        loop.tick(start + timedelta(minutes=9, seconds=59))  # still within the interval of the first message
        assert len(http.taken(HOOK)) == 1
        loop.tick(start + timedelta(minutes=10, seconds=1))  # an interval later: one more, no more
        loop.tick(start + timedelta(minutes=10, seconds=2))
        assert groups(http.taken(HOOK)) == {("paused", "hubspot"): 2}
        assert len(http.taken(SLACK)) == 2
        engine.dispose()


def test_several_workers_evaluating_at_once_write_one_message(db_url):
    with HttpSink() as http:
        loops = [loop_for(db_url, http) for _ in range(4)]
        pausing.pause(loops[0][1], "salesforce", "token revoked", "connector")
        barrier = threading.Barrier(len(loops))

        def evaluate(loop: AlertLoop) -> None:
            barrier.wait()
            for _ in range(10):
                loop.tick()

        threads = [threading.Thread(target=evaluate, args=(loop,)) for loop, _ in loops]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert groups(http.taken(HOOK)) == {("paused", "salesforce"): 1}
        assert len(http.taken(SLACK)) == 1
        assert len(outbox(loops[0][1])) == 2  # one row per target
        text = http.taken(HOOK)[0].body["text"]
        assert "by the connector itself" in text and "token revoked" in text
        assert "connector destination resume salesforce" in text
        for _, engine in loops:
            engine.dispose()


def test_dead_deliveries_are_grouped_by_destination_and_error_code_with_counts_and_a_link(db_url, crms, tmp_path):
    from tests.test_status import sign_in
    from tests.test_worker import make_settings

    with HttpSink() as http:
        settings = make_settings(db_url, crms)
        settings = settings.model_copy(update={"alerts": settings_from_mapping(
            {"alerts": {"targets": targets(http), "interval_minutes": 30}}, environ=alert_environ(http)).alerts})
        engine = create_ledger_engine(settings)
        upgrade(engine)
        loop = AlertLoop(settings, engine, "test-dead")
        refused_shoppers(engine, 2)
        drain(settings, engine)
        start = utcnow()
        loop.tick(start)
        first = {seen.body["group"]: seen.body for seen in http.taken(HOOK)}
        assert set(first) == {"hubspot VALIDATION_ERROR", "salesforce INVALID_EMAIL_ADDRESS"}
        assert first["hubspot VALIDATION_ERROR"]["facts"]["count"] == 2
        assert first["salesforce INVALID_EMAIL_ADDRESS"]["facts"]["count"] == 4  # contact and review, each
        assert first["hubspot VALIDATION_ERROR"]["title"] == "2 deliveries to hubspot went dead: VALIDATION_ERROR"
        link = first["salesforce INVALID_EMAIL_ADDRESS"]["link"]
        assert link == "/status/events?state=dead&destination=salesforce"  # no alerts.status_url: the path

        refused_shoppers(engine, 3, start=10)  # more die within the interval: counted, not sent yet
        drain(settings, engine)
        loop.tick(start + timedelta(minutes=5))
        assert len(http.taken(HOOK)) == 2
        loop.tick(start + timedelta(minutes=30, seconds=1))
        later = [seen.body for seen in http.taken(HOOK)[2:]]
        assert sorted((body["group"], body["facts"]["count"], body["facts"]["dead_in_all"]) for body in later) == [
            ("hubspot VALIDATION_ERROR", 3, 5), ("salesforce INVALID_EMAIL_ADDRESS", 6, 10)]
        loop.tick(start + timedelta(minutes=61))  # nothing new died: nothing to say
        assert len(http.taken(HOOK)) == 4

    # The link opens the status page's list of exactly those deliveries.
    from tests.test_status import build_app

    app = build_app(db_url)
    client = app.test_client()
    sign_in(client)
    page = client.get(link).text
    assert page.count("refused-") == 5  # the five shoppers whose Salesforce deliveries died
    engine.dispose()
