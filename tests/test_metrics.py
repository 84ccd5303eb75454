"""/metrics: receiver, worker and CRM counters, the latency histogram, the ledger's queue
gauges, and one sum over several gunicorn workers.

Counters live for the whole test process, so in-process tests compare a scrape
before and after (`Scrape.delta`)."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections import Counter as Tally
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from connector import create_app
from connector.health import init_observability
from connector.ledger.migrate import upgrade
from connector.runtime import EXTENSION_KEY
from connector.worker.planner import plan_received
from tests.conftest import make_app
from tests.crm import PROJECT_ROOT, STORY, make_reply_field_too_short
from tests.servers import free_port, gunicorn
from tests.signing import SECRET, sample_bytes, signed_headers
from tests.test_worker import drain, ingest, make_settings

URL = "/webhooks/okendo"
P = "okendo_connector_"


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def total(self, name: str, **labels: str) -> float:
        """Sum over every series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def delta(self, before: Scrape, name: str, **labels: str) -> float:
        return self.value(name, **labels) - before.value(name, **labels)


def scrape(client) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scrape(response.get_data(as_text=True))


def observed(app):
    init_observability(app)
    return app


@pytest.fixture
def client(app):
    return observed(app).test_client()


def post(client, body: bytes, headers: dict[str, str]):
    return client.post(URL, data=body, headers=headers)


# --- the receiver ---------------------------------------------------------------------------


def test_stored_events_are_counted_by_resource_type_topic_and_state(client):
    before = scrape(client)
    review = sample_bytes("review.create")
    member = sample_bytes("loyalty_customer.update")
    gift = json.dumps({"resourceType": "gift_card", "topic": "create", "sequenceNumber": "1",
                       "resource": {"id": "g1"}}).encode()
    not_json = b"certainly not json"

    answers = [post(client, body, signed_headers(body, f"msg_m{i}"))
               for i, body in enumerate([review, member, gift, not_json])]
    again = post(client, review, signed_headers(review, "msg_m0"))
    after = scrape(client)

    assert [a.get_json()["state"] for a in answers] == ["received", "received", "unsupported", "invalid"]
    assert again.status_code == 200
    received = P + "events_received_total"
    assert after.delta(before, received, resource_type="review", topic="create", state="received") == 1
    assert after.delta(before, received, resource_type="loyalty_customer", topic="update", state="received") == 1
    assert after.delta(before, received, resource_type="other", topic="create", state="unsupported") == 1
    assert after.delta(before, received, resource_type="none", topic="none", state="invalid") == 1
    assert after.total(received) - before.total(received) == 4  # the redelivery is not a new event
    assert after.delta(before, P + "webhook_redeliveries_total") == 1
    assert after.total(P + "webhooks_rejected_total") == before.total(P + "webhooks_rejected_total")


def test_every_rejection_is_counted_under_its_reason(client, app):
    body = sample_bytes("review.create")
    cases = {
        "no_matching_signature": {**signed_headers(body, "msg_r1"), "webhook-signature": "v1,AAAA"},
        "missing_headers": {"content-type": "application/json"},
        "timestamp_too_old": signed_headers(body, "msg_r2", age=timedelta(minutes=10)),
        "malformed_signature_header": {**signed_headers(body, "msg_r3"), "webhook-signature": "nocomma"},
    }
    for reason, headers in cases.items():
        before = scrape(client)
        response = post(client, body, headers)
        after = scrape(client)
        assert response.status_code == 401 and response.get_json()["reason"] == reason
        assert after.delta(before, P + "webhooks_rejected_total", reason=reason) == 1, reason
        assert after.total(P + "webhooks_rejected_total") - before.total(P + "webhooks_rejected_total") == 1
        assert after.total(P + "events_received_total") == before.total(P + "events_received_total")


def test_too_large_no_secret_and_a_busy_ledger_are_counted(sqlite_url, tmp_path):
    small = observed(make_app(sqlite_url, max_body_bytes=8192, database={"busy_timeout_ms": 200}))
    client = small.test_client()
    big = b'{"x": "' + b"y" * 9000 + b'"}'
    before = scrape(client)
    assert post(client, big, signed_headers(big, "msg_big")).status_code == 413
    # A chunked body has no Content-Length: it is counted once it passes the limit.
    assert client.post(URL, input_stream=io.BytesIO(big), headers=signed_headers(big, "msg_big2"),
                       environ_overrides={"wsgi.input_terminated": True}).status_code == 413
    assert scrape(client).delta(before, P + "webhooks_rejected_total", reason="too_large") == 2

    body = sample_bytes("review.create")
    before = scrape(client)
    blocker = sa.create_engine(sqlite_url, connect_args={"isolation_level": None})
    with blocker.connect() as connection:
        connection.exec_driver_sql("BEGIN EXCLUSIVE")
        locked = post(client, body, signed_headers(body, "msg_locked"))
        connection.exec_driver_sql("ROLLBACK")
    blocker.dispose()
    assert locked.status_code == 503
    assert scrape(client).delta(before, P + "webhooks_rejected_total", reason="ledger_busy") == 1

    unconfigured = observed(make_app(f"sqlite:///{tmp_path / 'other.db'}", secrets=[]))
    before = scrape(unconfigured.test_client())
    assert post(unconfigured.test_client(), body, signed_headers(body, "msg_nosecret")).status_code == 503
    after = scrape(unconfigured.test_client())
    assert after.delta(before, P + "webhooks_rejected_total", reason="no_secret_configured") == 1
    for app in (small, unconfigured):
        app.extensions[EXTENSION_KEY].engine.dispose()


def test_every_rejection_reason_is_exported_at_zero_before_it_happens(client):
    text = client.get("/metrics").get_data(as_text=True)
    for reason in ("missing_headers", "no_matching_signature", "too_large", "no_secret_configured",
                   "ledger_unavailable", "ledger_busy"):
        assert f'{P}webhooks_rejected_total{{reason="{reason}"}}' in text
    assert "_created" not in text  # same series in single- and multi-process mode


def test_metrics_can_be_switched_off(sqlite_url):
    app = observed(create_app({"database": {"url": sqlite_url}, "observability": {"metrics": False}}))
    assert app.test_client().get("/metrics").status_code == 404
    assert app.test_client().get("/healthz").status_code == 200
    app.extensions[EXTENSION_KEY].engine.dispose()


def test_openmetrics_is_served_when_asked_for(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


# --- queue depth, from the ledger at scrape time ----------------------------------------------

DRY_DESTINATIONS = {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}}
SHIPPED_MAPPINGS = {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                              str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]}


def test_queue_gauges_follow_the_ledger(db_url):
    app = observed(create_app({"database": {"url": db_url}, "destinations": DRY_DESTINATIONS,
                               "mappings": SHIPPED_MAPPINGS}))
    engine = app.extensions[EXTENSION_KEY].engine
    upgrade(engine)
    client = app.test_client()

    empty = scrape(client)
    assert empty.value(P + "ledger_up") == 1
    assert empty.value(P + "queue_unplanned_events") == 0
    assert empty.has(P + "queue_deliveries", destination="hubspot", state="pending")
    assert empty.value(P + "queue_deliveries", destination="hubspot", state="pending") == 0

    ingest(engine, "review.create")
    ingest(engine, "loyalty_customer.create")
    unplanned = scrape(client)
    assert unplanned.value(P + "queue_unplanned_events") == 2
    assert unplanned.total(P + "queue_deliveries") == 0
    assert unplanned.value(P + "queue_oldest_seconds", queue="events") >= 0

    plan_received(engine, app.extensions[EXTENSION_KEY].mappings)
    with engine.connect() as connection:
        pending = dict(connection.execute(sa.text(
            "SELECT destination, count(*) FROM deliveries WHERE state = 'pending' GROUP BY destination")).all())
    assert pending.get("hubspot") and pending.get("salesforce")
    planned = scrape(client)
    assert planned.value(P + "queue_unplanned_events") == 0
    for destination, count in pending.items():
        assert planned.value(P + "queue_deliveries", destination=destination, state="pending") == count

    with engine.begin() as connection:
        first, second = connection.execute(sa.text(
            "SELECT id FROM deliveries WHERE destination = 'hubspot' ORDER BY id LIMIT 2")).scalars()
        connection.execute(sa.text("UPDATE deliveries SET state = 'retrying' WHERE id = :i"), {"i": first})
        connection.execute(sa.text("UPDATE deliveries SET state = 'dead' WHERE id = :i"), {"i": second})
    with engine.begin() as connection:  # the oldest waiting delivery was planned an hour ago
        connection.execute(sa.update(sa.table("deliveries", sa.column("id"), sa.column("created_at")))
                           .where(sa.column("id") == first)
                           .values(created_at=sa.bindparam("t", type_=_utc_type())), {"t": _hours_ago(1)})
    moved = scrape(client)
    assert moved.value(P + "queue_deliveries", destination="hubspot", state="pending") == pending["hubspot"] - 2
    assert moved.value(P + "queue_deliveries", destination="hubspot", state="retrying") == 1
    assert moved.value(P + "dead_deliveries", destination="hubspot") == 1
    assert moved.value(P + "dead_deliveries", destination="salesforce") == 0
    assert 3590 <= moved.value(P + "queue_oldest_seconds", queue="deliveries") <= 3700
    engine.dispose()


def test_a_paused_destination_shows_as_1_until_it_is_resumed(db_url):
    from connector.worker import pausing

    app = observed(create_app({"database": {"url": db_url}, "destinations": DRY_DESTINATIONS,
                               "mappings": SHIPPED_MAPPINGS}))
    engine = app.extensions[EXTENSION_KEY].engine
    upgrade(engine)
    client = app.test_client()
    before = scrape(client)
    assert before.has(P + "destination_paused", destination="hubspot")  # there at 0, for alert rules
    assert before.value(P + "destination_paused", destination="hubspot") == 0
    pausing.pause(engine, "hubspot", "HubSpot lacks okendo_source_key", pausing.AUTOMATIC)
    paused = scrape(client)
    assert paused.value(P + "destination_paused", destination="hubspot") == 1
    assert paused.value(P + "destination_paused", destination="salesforce") == 0
    pausing.resume(engine, "hubspot")
    assert scrape(client).value(P + "destination_paused", destination="hubspot") == 0
    engine.dispose()


def _utc_type():
    from connector.ledger.models import UTCDateTime

    return UTCDateTime()


def _hours_ago(hours: float):
    from connector.ledger.models import utcnow

    return utcnow() - timedelta(hours=hours)


def test_a_scrape_still_answers_when_the_ledger_is_down():
    url = f"postgresql://connector:pw@127.0.0.1:{free_port()}/ledger"
    app = observed(create_app({"database": {"url": url, "connect_timeout_s": 1}}))
    result = scrape(app.test_client())
    assert result.value(P + "ledger_up") == 0
    assert not any(name == P + "queue_unplanned_events" for name, _ in result.samples)
    assert result.has(P + "webhooks_rejected_total", reason="too_large")  # the counters are still there


# --- the worker and the CRM calls ---------------------------------------------------------------



@pytest.fixture
def delivering(db_url, crms):
    """Settings and ledger for the in-process worker, and an observed app on the same ledger."""
    settings = make_settings(db_url, crms)
    app = observed(create_app(settings))
    engine = app.extensions[EXTENSION_KEY].engine
    upgrade(engine)
    yield settings, engine, app.test_client()
    engine.dispose()


def attempt_outcomes(engine: sa.Engine) -> Tally:
    with engine.connect() as connection:
        return Tally({(row.destination, row.outcome): row.n for row in connection.execute(sa.text(
            "SELECT d.destination, a.outcome, count(*) AS n FROM delivery_attempts a "
            "JOIN deliveries d ON d.id = a.delivery_id GROUP BY d.destination, a.outcome"))})


def test_worker_outcomes_and_latency_match_the_ledger(delivering, crms):
    settings, engine, client = delivering
    crms.hubspot.fail_rate_limited(path="/batch/upsert", retry_after=0.05, times=8)  # retries, then delivered
    make_reply_field_too_short(crms.salesforce)  # salesforce_review is dead at once (a missing field would pause)
    before = scrape(client)
    started = time.monotonic()
    for sample in STORY:
        ingest(engine, sample)
    # Another review, never deleted: its Okendo_Review__c is written, and dies on the short field (the
    # story's own review is created and deleted while waiting, so it never reaches the CRM).
    other = json.loads(sample_bytes("review.update"))
    other["resource"]["reviewId"] = "another-review"
    ingest(engine, other)
    drain(settings, engine)
    ingest(engine, "review.create")  # after the delete was applied: stale
    drain(settings, engine)
    elapsed = time.monotonic() - started
    after = scrape(client)

    outcomes = attempt_outcomes(engine)
    assert {outcome for _, outcome in outcomes} >= {"delivered", "retry", "dead", "stale"}
    for destination in ("hubspot", "salesforce"):
        for outcome in ("delivered", "skipped", "stale", "retry", "dead"):
            assert after.delta(before, P + "delivery_attempts_total", destination=destination, outcome=outcome) \
                == outcomes[(destination, outcome)], (destination, outcome)
        delivered = outcomes[(destination, "delivered")]
        latency = P + "delivery_latency_seconds"
        assert after.delta(before, latency + "_count", destination=destination) == delivered
        assert after.delta(before, latency + "_bucket", destination=destination, le="+Inf") == delivered
        seconds = after.delta(before, latency + "_sum", destination=destination)
        assert 0 < seconds <= delivered * (elapsed + 1)
    # Everything waited at least through the retries: nothing in the lowest bucket for HubSpot contacts.
    assert after.delta(before, P + "delivery_latency_seconds_bucket", destination="hubspot", le="0.1") \
        < outcomes[("hubspot", "delivered")]


def test_crm_calls_and_429s_are_counted_per_destination_and_status_class(delivering, crms):
    settings, engine, client = delivering
    crms.hubspot.fail_rate_limited(path="/batch/upsert", retry_after=0.05, times=1)
    crms.hubspot.fail_server_error(path="/notes/batch/create", times=1)
    before = scrape(client)
    ingest(engine, "review.create")
    drain(settings, engine)
    after = scrape(client)

    assert crms.hubspot.count_429() == 1
    assert after.delta(before, P + "crm_rate_limited_total", destination="hubspot") == 1
    assert after.delta(before, P + "crm_rate_limited_total", destination="salesforce") == 0
    for name, emulator in (("hubspot", crms.hubspot), ("salesforce", crms.salesforce)):
        by_class = Tally(f"{request.status // 100}xx" for request in emulator.requests)
        assert by_class["2xx"] > 0
        for status_class in ("2xx", "4xx", "5xx"):
            assert after.delta(before, P + "crm_calls_total", destination=name, status_class=status_class) \
                == by_class[status_class], (name, status_class)
    assert after.delta(before, P + "crm_calls_total", destination="hubspot", status_class="5xx") == 1


def test_crm_requests_and_webhook_answers_are_timed_and_the_build_is_named(delivering, crms):
    settings, engine, client = delivering
    before = scrape(client)
    ingest(engine, "review.create")
    drain(settings, engine)
    answered = post(client, sample_bytes("review.update"), signed_headers(sample_bytes("review.update"), "msg_timed"))
    assert answered.status_code == 503  # this app has no webhook secret: timed all the same
    after = scrape(client)

    duration = P + "crm_request_duration_seconds_count"
    upserts = len(crms.hubspot.calls("POST", "/contacts/batch/upsert$"))
    assert upserts and after.delta(before, duration, destination="hubspot", call="objects.batch.upsert") == upserts
    assert after.delta(before, duration, destination="hubspot", call="objects.batch.create") == \
        len(crms.hubspot.calls("POST", "/notes/batch/create$"))
    assert after.delta(before, duration, destination="salesforce", call="query") >= 1
    assert after.delta(before, P + "webhook_request_duration_seconds_count", status_class="5xx") == 1
    assert after.total(P + "build_info") == 1 and after.text.count('okendo_connector_build_info{') == 1


# --- several gunicorn workers, one scrape ------------------------------------------------------


def observed_wsgi_app():
    """gunicorn's app for these tests: wsgi.py's, with init_observability (`module:factory()`)."""
    from connector.serving import worker_configuration

    configuration = worker_configuration()
    app = create_app(configuration.settings, mappings=configuration.mappings)
    init_observability(app)
    return app


def _serving_pids(log: str) -> set[str]:
    return set(re.findall(r"\[(\d+)\] INFO connector\.receiver\.views: webhook \S+ stored as event", log))


def test_one_scrape_counts_the_events_of_every_gunicorn_worker(tmp_path: Path, db_url, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # gunicorn.conf.py picks its own folder
    config = {"database": {"url": db_url}, "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
              "worker": {"embedded": False}}
    env = {"OKENDO_WEBHOOK_SECRETS": SECRET, "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4", "LOG_FORMAT": "text"}
    body = sample_bytes("review.create")
    sent = 0
    lock = threading.Lock()

    def send(prefix: str, count: int) -> None:
        nonlocal sent
        for i in range(count):
            # A new connection each time, so either worker may accept it.
            response = requests.post(f"{server.base_url}{URL}", data=body,
                                     headers=signed_headers(body, f"msg_{prefix}_{i}"), timeout=10)
            assert response.status_code == 202
            with lock:
                sent += 1

    with gunicorn(tmp_path, config, env=env, workers=2, app="tests.test_metrics:observed_wsgi_app()") as server:
        metrics_dir = re.search(r"prometheus multiprocess metrics in (\S+)", server.wait_for_log("multiprocess"))
        assert metrics_dir and Path(metrics_dir.group(1)).is_dir()
        for round_ in range(10):
            threads = [threading.Thread(target=send, args=(f"r{round_}t{t}", 10)) for t in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if len(_serving_pids(server.log())) >= 2:
                break
        assert len(_serving_pids(server.log())) == 2, "one worker served every request"
        forged = requests.post(f"{server.base_url}{URL}", data=body,
                               headers={**signed_headers(body, "msg_forged"), "webhook-signature": "v1,AAAA"},
                               timeout=10)
        assert forged.status_code == 401

        scrapes = [Scrape(requests.get(f"{server.base_url}/metrics", timeout=10).text) for _ in range(6)]
        for result in scrapes:  # whichever worker answers, the sum is the same
            assert result.value(P + "events_received_total", resource_type="review", topic="create",
                                state="received") == sent
            assert result.value(P + "webhooks_rejected_total", reason="no_matching_signature") == 1
            assert result.value(P + "queue_unplanned_events") == sent  # no delivery worker here
    assert not Path(metrics_dir.group(1)).exists()  # removed at exit: it was gunicorn.conf.py's own


def test_a_missing_multiprocess_folder_never_breaks_the_receiver(tmp_path: Path):
    """PROMETHEUS_MULTIPROC_DIR set (say for `connector db upgrade`) before gunicorn created it."""
    script = (
        "from connector import create_app\n"
        "from connector.health import init_observability\n"
        "from connector.ledger.migrate import upgrade\n"
        "from tests.signing import SECRET, sample_bytes, signed_headers\n"
        f"app = create_app({{'database': {{'url': 'sqlite:///{tmp_path / 'l.db'}'}}, 'receiver': {{'secrets': [SECRET]}}}})\n"
        "init_observability(app)\n"
        "upgrade(app.extensions['connector'].engine)\n"
        "body = sample_bytes('review.create')\n"
        "client = app.test_client()\n"
        "print(client.post('/webhooks/okendo', data=body, headers=signed_headers(body, 'm1')).status_code,\n"
        "      client.get('/metrics').status_code, client.get('/readyz').status_code)\n"
    )
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["202", "503", "200"]
    assert "could not record a metric" in result.stderr
