"""kill -HUP: a valid edit of the mappings is picked up, an invalid one is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests
import sqlalchemy as sa

from tests.servers import PROJECT_ROOT, free_port, gunicorn, write_config
from tests.signing import SECRET, sample_bytes, signed_headers


def mapping(name: str, filter_name: str = "email") -> dict:
    return {"name": name, "events": "review.*", "destination": "hubspot", "object": "contacts", "operation": "upsert",
            "key": {"field": "email", "value": f"resource.reviewer.email | {filter_name}"},
            "fields": {"email": "resource.reviewer.email | email"}}


def config(tmp_path, *mappings: dict) -> dict:
    return {"database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
            "destinations": {"hubspot": {"type": "hubspot"}},
            "mappings": {"inline": list(mappings)}}


def post_sample(base_url: str, message_id: str) -> int:
    body = sample_bytes("review.create")
    return requests.post(f"{base_url}/webhooks/okendo", data=body, headers=signed_headers(body, message_id),
                         timeout=5).status_code


def test_hup_adopts_valid_edits_and_refuses_invalid_ones(tmp_path):
    with gunicorn(tmp_path, config(tmp_path, mapping("first")), env={"OKENDO_WEBHOOK_SECRETS": SECRET},
                  workers=1) as server:
        server.wait_for_log("serving with 1 mapping(s): first")

        # A valid edit: a second mapping appears in the new workers.
        write_config(server.config_path, config(tmp_path, mapping("first"), mapping("second")))
        server.reload()
        server.wait_for_log("configuration reloaded: 2 mapping(s)")
        server.wait_for_log("serving with 2 mapping(s): first, second")
        assert post_sample(server.base_url, "msg_after_valid_reload") == 202

        # An invalid edit: refused with its error; the workers keep the last good mappings.
        write_config(server.config_path, config(tmp_path, mapping("first"), mapping("third", "no_such_filter")))
        server.reload()
        log = server.wait_for_log("configuration edit refused; the running configuration stays in force")
        assert "mapping 'third': key.value: unknown filter 'no_such_filter'" in log
        server.wait_for_log("serving with 2 mapping(s): first, second", count=2)
        assert "serving with 2 mapping(s): first, third" not in server.log()
        assert post_sample(server.base_url, "msg_after_refused_reload") == 202
        assert server.process.poll() is None


def test_gunicorn_refuses_to_start_on_an_invalid_configuration(tmp_path):
    config_path = write_config(tmp_path / "config.yaml", config(tmp_path, mapping("bad", "nope")))
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "CONNECTOR_CONFIG": str(config_path),
                         "BIND": f"127.0.0.1:{free_port()}"},
    )
    assert result.returncode != 0
    assert "cannot start, the configuration is invalid" in result.stdout + result.stderr
    assert "unknown filter 'nope'" in result.stdout + result.stderr


# --- the reload reaches every process: the web master through its pidfile, standalone workers --------


def connector(config_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connector.cli", "--config", str(config_path), *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "CONNECTOR_PIDFILE"})


def test_connector_reload_reaches_the_master_through_its_pidfile(tmp_path):
    with gunicorn(tmp_path, config(tmp_path, mapping("first")), env={"OKENDO_WEBHOOK_SECRETS": SECRET},
                  workers=1) as server:
        pidfile = tmp_path / "data" / "gunicorn.pid"
        assert int(pidfile.read_text()) == server.process.pid  # the master, not a shell in front of it

        write_config(server.config_path, config(tmp_path, mapping("first"), mapping("second")))
        done = connector(server.config_path, "reload")
        assert done.returncode == 0, done.stderr
        assert f"pid {server.process.pid}" in done.stdout
        server.wait_for_log("serving with 2 mapping(s): first, second")

        # An edit that does not validate: refused before any signal, with its error.
        write_config(server.config_path, config(tmp_path, mapping("first"), mapping("third", "no_such_filter")))
        refused = connector(server.config_path, "reload")
        assert refused.returncode == 1 and "unknown filter 'no_such_filter'" in refused.stderr
        assert server.log().count("configuration reloaded") == 1 and "edit refused" not in server.log()
    assert connector(server.config_path, "reload").returncode == 1  # stopped: no pidfile, or a stale one


def wait_for(path, text: str, count: int = 1, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (log := path.read_text(errors="replace")).count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} never appeared:\n{log}"
        time.sleep(0.1)
    return log


def planned_mappings(db: str, message_id: str) -> set[str]:
    engine = sa.create_engine(db)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT d.mapping FROM deliveries d JOIN events e ON e.id = d.event_id WHERE e.message_id = :m"),
            {"m": message_id}).scalars().all()
    engine.dispose()
    return set(rows)


def test_a_standalone_worker_reloads_on_sighup_and_refuses_an_invalid_edit(tmp_path):
    from connector.ledger import IncomingEvent, create_ledger_engine, record_event
    from connector.config import settings_from_mapping
    from connector.ledger.migrate import upgrade
    from connector.receiver.envelope import classify

    tree = config(tmp_path, mapping("first"))
    tree["worker"] = {"embedded": False, "poll_interval_s": 0.1}
    config_path = write_config(tmp_path / "config.yaml", tree)
    db = tree["database"]["url"]
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": db}}, environ={}))
    upgrade(engine)

    def ingest(message_id: str) -> None:
        body = sample_bytes("review.create")
        envelope = classify(body)
        record_event(engine, IncomingEvent(message_id=message_id, body=body, headers={}, state=envelope.state,
                                           resource_type=envelope.resource_type, topic=envelope.topic,
                                           resource_id=envelope.resource_id,
                                           sequence_number=envelope.sequence_number,
                                           customer_email=envelope.customer_email))

    def planned(message_id: str) -> set[str]:
        deadline = time.monotonic() + 20
        while not (found := planned_mappings(db, message_id)):
            assert time.monotonic() < deadline, f"{message_id} was never planned:\n{log.read_text()}"
            time.sleep(0.1)
        return found

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "connector.cli", "--config", str(config_path), "worker"],
                                   cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(log, "running; SIGHUP reloads")
        ingest("msg_before")
        assert planned("msg_before") == {"first"}

        write_config(config_path, {**tree, "mappings": {"inline": [mapping("first"), mapping("second")]}})
        process.send_signal(signal.SIGHUP)
        wait_for(log, "configuration reloaded: 2 mapping(s)")
        ingest("msg_after")
        assert planned("msg_after") == {"first", "second"}

        write_config(config_path, {**tree, "mappings": {"inline": [mapping("first"), mapping("x", "nope")]}})
        process.send_signal(signal.SIGHUP)
        text = wait_for(log, "configuration edit refused; the running configuration stays in force")
        assert "unknown filter 'nope'" in text
        ingest("msg_refused")
        assert planned("msg_refused") == {"first", "second"}
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)
        engine.dispose()
