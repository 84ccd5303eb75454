"""Structured logs: JSON lines with ids, and no secret in any of them (in process and under gunicorn)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector import create_app
from connector.config import settings_from_mapping
from connector.health import init_observability
from connector.logs import RedactingFilter, configure_logging, logging_config_dict
from connector.mapping.loader import load_mappings
from connector.worker.runner import Worker
from tests.conftest import make_app
from tests.servers import gunicorn
from tests.signing import SECRET, sample_bytes, signed_headers
from tests.test_worker import ingest, make_settings

HUBSPOT_TOKEN = "pat-na1-0123abcd-4567-89ef-aaaa-bbbbccccdddd"  # no pattern matches it: only the config knows
UNREGISTERED_BEARER = "eyJhbGciOiJIUzI1NiJ9.payload.signature"
SECRET_KEY_PART = SECRET.removeprefix("whsec_")


@pytest.fixture
def root_logging(monkeypatch) -> Iterator[None]:
    """Give a test the root logger to configure, and put pytest's handlers back afterwards;
    the secrets to redact start empty, so each test shows where its secrets are learnt."""
    monkeypatch.setattr("connector.logs._secrets", set())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    connector_level = logging.getLogger("connector").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("connector").setLevel(connector_level)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def settings_with_token():
    return settings_from_mapping({"receiver": {"secrets": "${SECRETS}"},
                                  "destinations": {"hubspot": {"type": "hubspot", "access_token": "${TOKEN}"}}},
                                 environ={"TOKEN": HUBSPOT_TOKEN, "SECRETS": SECRET})


def test_json_lines_carry_the_extra_ids_and_no_secret_anywhere(root_logging):
    stream = io.StringIO()
    configure_logging(settings_with_token(), fmt="json", stream=stream, force=True)
    log = logging.getLogger("connector.test")
    try:
        raise RuntimeError(f"HubSpot refused {HUBSPOT_TOKEN} (Authorization: Bearer {UNREGISTERED_BEARER})")
    except RuntimeError:
        log.exception("delivery failed with %s and %s", SECRET, f"Bearer {UNREGISTERED_BEARER}",
                      extra={"event_id": 7, "delivery_id": 12, "message_id": "msg_1", "destination": "hubspot",
                             "sent": {"headers": {"authorization": f"Bearer {HUBSPOT_TOKEN}"}}})

    [line] = json_lines(stream.getvalue())
    assert line["level"] == "ERROR" and line["logger"] == "connector.test"
    assert (line["event_id"], line["delivery_id"], line["message_id"], line["destination"]) == (7, 12, "msg_1", "hubspot")
    assert line["message"] == "delivery failed with [REDACTED] and Bearer [REDACTED]"
    assert "RuntimeError" in line["exception"] and "[REDACTED]" in line["exception"]
    assert line["sent"] == {"headers": {"authorization": "Bearer [REDACTED]"}}
    text = stream.getvalue()
    for secret in (SECRET, SECRET_KEY_PART, HUBSPOT_TOKEN, UNREGISTERED_BEARER):
        assert secret not in text


def test_text_lines_are_redacted_too(root_logging):
    stream = io.StringIO()
    configure_logging(settings_with_token(), fmt="text", stream=stream, force=True)
    logging.getLogger("connector.test").warning("token=%s secret %s", HUBSPOT_TOKEN, SECRET_KEY_PART)
    text = stream.getvalue()
    assert "WARNING connector.test: token=[REDACTED] secret [REDACTED]" in text
    assert HUBSPOT_TOKEN not in text and SECRET_KEY_PART not in text


@pytest.mark.parametrize("leak", [
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    '{"access_token": "00D5g000004XyZ1!AQ0AQFakeSessionToken"}',
    "client_secret=abcdef123456&grant_type=client_credentials",
    "session 00D5g000004XyZ1!AQ0AQFakeSessionToken expired",
])
def test_credentials_shaped_text_is_redacted_without_being_configured(root_logging, leak):
    stream = io.StringIO()
    configure_logging(fmt="text", stream=stream, force=True)
    logging.getLogger("connector.test").error("answer: %s", leak)
    text = stream.getvalue()
    assert "[REDACTED]" in text
    assert "MIIEvQIBADAN" not in text and "FakeSessionToken" not in text and "abcdef123456" not in text


def test_an_unconfigured_signing_secret_shaped_text_is_redacted_but_advice_naming_the_prefix_is_not(root_logging):
    stream = io.StringIO()
    configure_logging(fmt="text", stream=stream, force=True)
    logging.getLogger("connector.test").error("pasted %s; set the whsec_ secret Okendo returned",
                                              "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    text = stream.getvalue()
    assert "MfKQ9r8GKYqr" not in text and "pasted [REDACTED];" in text
    assert "set the whsec_ secret Okendo returned" in text


def test_log_format_comes_from_the_environment_then_the_config(root_logging, monkeypatch):
    json_config = settings_from_mapping({"observability": {"log_format": "json"}}, environ={})
    stream = io.StringIO()
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    configure_logging(json_config, stream=stream, force=True)
    logging.getLogger("connector.test").info("from config")
    assert json_lines(stream.getvalue())[0]["message"] == "from config"

    stream = io.StringIO()
    monkeypatch.setenv("LOG_FORMAT", "text")
    configure_logging(json_config, stream=stream, force=True)
    logging.getLogger("connector.test").info("from env")
    assert stream.getvalue().rstrip().endswith("INFO connector.test: from env")


def test_configure_logging_like_basicconfig_installs_once_and_keeps_existing_handlers(root_logging, monkeypatch):
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stream = io.StringIO()
    configure_logging(stream=stream)
    configure_logging(stream=io.StringIO())  # a second call changes nothing
    assert len(root.handlers) == 1 and root.level == logging.INFO
    logging.getLogger("connector.test").info("once %s", SECRET)
    assert stream.getvalue().count("once [REDACTED]") == 1
    # The CLI reads its config later: the settings' log_format then applies to that handler.
    configure_logging(settings_from_mapping({"observability": {"log_format": "json"}}, environ={}))
    assert len(root.handlers) == 1
    logging.getLogger("connector.test").info("now json")
    assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "now json"

    # Handlers set up elsewhere (gunicorn's dictConfig, a test runner) stay, and get the redaction.
    for handler in list(root.handlers):
        root.removeHandler(handler)
    theirs = io.StringIO()
    root.addHandler(logging.StreamHandler(theirs))
    root.setLevel(logging.WARNING)
    configure_logging(settings_with_token())
    assert len(root.handlers) == 1 and root.level == logging.WARNING
    logging.getLogger("connector.test").warning("token %s", HUBSPOT_TOKEN)
    assert theirs.getvalue() == "token [REDACTED]\n"


def test_gunicorn_logconfig_puts_the_redacting_filter_on_every_handler():
    for fmt in ("text", "json"):
        config = logging_config_dict("info", fmt=fmt)
        assert set(config["handlers"]) == {"stderr", "access"}
        assert all(handler["filters"] == ["redact"] for handler in config["handlers"].values())
        assert config["filters"]["redact"]["()"] == "connector.logs.RedactingFilter"
        assert config["loggers"]["connector"]["handlers"] == ["stderr"]


def test_receiver_json_logs_carry_message_and_event_ids_and_never_the_secret(root_logging, sqlite_url):
    stream = io.StringIO()
    app = make_app(sqlite_url)
    init_observability(app)
    configure_logging(fmt="json", stream=stream, force=True)
    client = app.test_client()
    body = sample_bytes("review.create")
    stored = client.post("/webhooks/okendo", data=body, headers=signed_headers(body, "msg_logged")).get_json()
    # A forged request whose message id is the secret itself: the rejection logs that id.
    forged = client.post("/webhooks/okendo", data=body,
                         headers={**signed_headers(body, SECRET), "webhook-signature": "v1,AAAA"})
    assert forged.status_code == 401

    lines = [line for line in json_lines(stream.getvalue()) if line["logger"] == "connector.receiver.views"]
    [stored_line] = [line for line in lines if line.get("event_id") == stored["event_id"]]
    assert stored_line["message_id"] == "msg_logged" and stored_line["state"] == "received"
    assert (stored_line["resource_type"], stored_line["topic"]) == ("review", "create")
    [rejected] = [line for line in lines if line.get("reason") == "no_matching_signature"]
    assert rejected["level"] == "WARNING" and rejected["message_id"] == "[REDACTED]"
    assert SECRET not in stream.getvalue() and SECRET_KEY_PART not in stream.getvalue()



def test_worker_json_logs_carry_delivery_ids_and_keep_tokens_out_of_tracebacks(root_logging, sqlite_url, crms):
    settings = make_settings(sqlite_url, crms)
    app = create_app(settings)
    from connector.ledger.migrate import upgrade
    from connector.runtime import EXTENSION_KEY

    engine = app.extensions[EXTENSION_KEY].engine
    upgrade(engine)
    hubspot_token = crms.environ["HUBSPOT_ACCESS_TOKEN"]
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream, force=True)
    event_id = ingest(engine, "review.create", "msg_worker_logs")
    worker = Worker(settings, load_mappings(settings), engine, prune_enabled=False)

    def broken(works, links):
        raise RuntimeError(f"HubSpot client bug, token {hubspot_token}, header Bearer {UNREGISTERED_BEARER}")

    worker.destinations["hubspot"].deliver = broken
    # A claim takes one kind of delivery at a time: a few passes deliver what is due.
    assert worker.run_once() > 0
    for _ in range(5):
        if not worker.run_once():
            break
    engine.dispose()

    lines = json_lines(stream.getvalue())
    outcomes = [line for line in lines if line["logger"] == "connector.worker.delivery" and "outcome" in line]
    assert {line["destination"] for line in outcomes} == {"hubspot", "salesforce"}
    for line in outcomes:
        assert line["event_id"] == event_id and line["message_id"] == "msg_worker_logs"
        assert isinstance(line["delivery_id"], int)
    assert {line["outcome"] for line in outcomes if line["destination"] == "salesforce"} == {"delivered"}
    assert {(line["outcome"], line["level"]) for line in outcomes if line["destination"] == "hubspot"} \
        == {("retry", "WARNING")}
    crashes = [line for line in lines if "exception" in line]
    assert crashes
    for crash in crashes:
        assert crash["destination"] == "hubspot" and "RuntimeError" in crash["exception"]
        assert "token [REDACTED]" in crash["exception"] and "Bearer [REDACTED]" in crash["exception"]
    text = stream.getvalue()
    assert hubspot_token not in text and UNREGISTERED_BEARER not in text


def test_gunicorn_json_logs(tmp_path: Path, db_url):
    config = {"database": {"url": db_url}, "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
              "worker": {"embedded": False}}
    body = sample_bytes("review.create")
    import requests

    with gunicorn(tmp_path, config, env={"OKENDO_WEBHOOK_SECRETS": SECRET, "LOG_FORMAT": "json"}) as server:
        stored = requests.post(f"{server.base_url}/webhooks/okendo", data=body,
                               headers=signed_headers(body, "msg_gunicorn_json"), timeout=10).json()
        forged = requests.post(f"{server.base_url}/webhooks/okendo", data=body,
                               headers={**signed_headers(body, SECRET), "webhook-signature": "v1,AAAA"}, timeout=10)
        assert forged.status_code == 401
        server.wait_for_log("no_matching_signature")
        log = server.log()

    lines = json_lines(log)  # every line, access log included, is one JSON object
    [stored_line] = [line for line in lines if line.get("event_id") == stored["event_id"]]
    assert stored_line["message_id"] == "msg_gunicorn_json" and stored_line["logger"] == "connector.receiver.views"
    assert any(line["logger"] == "gunicorn.access" and "POST /webhooks/okendo" in line["message"] for line in lines)
    # The access log as fields a log tool can query, not only as text.
    access = [line for line in lines if line["logger"] == "gunicorn.access" and line.get("path") == "/webhooks/okendo"]
    assert {(line["method"], line["status"]) for line in access} >= {("POST", 202), ("POST", 401)}
    assert all(line["duration_ms"] >= 0 and line["remote"] == "127.0.0.1" for line in access)
    assert any(line["logger"] == "gunicorn.error" for line in lines)
    assert SECRET not in log and SECRET_KEY_PART not in log


def test_the_filter_renders_each_record_once_even_with_several_handlers(root_logging):
    first, second = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for stream in (first, second):
        handler = logging.StreamHandler(stream)
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("connector.test").info("a %s b %d", SECRET, 5)
    assert first.getvalue() == second.getvalue() == "a [REDACTED] b 5\n"
