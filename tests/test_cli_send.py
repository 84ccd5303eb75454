"""`connector send`: signed events over a real socket to the connector's receiver, which verifies them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from werkzeug.serving import make_server

from connector.cli import main
from connector.onboarding.samples import MAX_BODY_BYTES
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes
from tests.conftest import event_rows, make_app
from tests.servers import free_port
from tests.signing import OTHER_SECRET, SECRET


@contextmanager
def serving(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app behind a real HTTP server on a free port, in this process."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def connector(sqlite_url, monkeypatch):
    """(base URL, ledger engine) of a connector whose signing secret is SECRET, which `send` reads too."""
    monkeypatch.setenv("OKENDO_WEBHOOK_SECRETS", SECRET)
    app = make_app(sqlite_url)
    engine = app.extensions[EXTENSION_KEY].engine
    with serving(app) as url:
        yield url, engine
    engine.dispose()


def stored_headers(row) -> dict[str, str]:  # type: ignore[no-untyped-def]
    # A JSON column: SQLite's raw SELECT gives the text.
    return json.loads(row.headers) if isinstance(row.headers, str) else row.headers


def send(runner, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(main, ["send", *args])


def test_send_posts_a_signed_sample_that_the_receiver_verifies(runner, connector):
    url, ledger = connector
    result = send(runner, "review.create", "--url", url)

    assert result.exit_code == 0, result.output
    assert '202 ACCEPTED {"event_id": 1, "state": "received"}' in result.output
    assert "stored as event 1; the worker delivers it to the CRMs" in result.output
    [row] = event_rows(ledger)
    assert row.verified_by_secret == 1  # the receiver checked the signature with the first secret
    assert row.body == sample_bytes("review.create")  # the exact bytes that were signed
    assert (row.resource_type, row.topic) == ("review", "create")
    assert row.message_id.startswith("msg_") and row.message_id in result.output
    assert "webhook-signature" in stored_headers(row)
    assert SECRET not in result.output


def test_redeliver_gets_200_with_the_same_event_id(runner, connector):
    url, ledger = connector
    result = send(runner, "review.update", "--url", f"{url}/webhooks/okendo", "--redeliver")

    assert result.exit_code == 0, result.output
    assert '202 ACCEPTED {"event_id": 1, "state": "received"}' in result.output
    assert '200 OK {"duplicate": true, "event_id": 1}' in result.output
    assert "a redelivery of event 1: deduplicated, nothing stored twice" in result.output
    assert "2 post(s): 1 new, 1 duplicate(s), 0 not acknowledged" in result.output
    assert len(event_rows(ledger)) == 1


def test_send_all_posts_every_shipped_sample_in_story_order(runner, connector):
    url, ledger = connector
    result = send(runner, "--all", "--url", url)

    assert result.exit_code == 0, result.output
    assert "16 post(s): 16 new, 0 duplicate(s), 0 not acknowledged" in result.output
    rows = event_rows(ledger)
    names = [f"{row.resource_type}.{row.topic}" for row in rows]
    assert len(set(names)) == 16 and all(row.state == "received" for row in rows)
    assert names[0] == "loyalty_customer.create" and names[-1] == "loyalty_customer.delete"
    assert names.index("review.create") < names.index("review.update") < names.index("review.delete")


def test_a_fixed_id_with_svix_headers_is_deduplicated_across_runs(runner, connector):
    url, ledger = connector
    first = send(runner, "loyalty_customer.create", "--url", url, "--id", "msg_try_1", "--svix-headers")
    second = send(runner, "loyalty_customer.create", "--url", url, "--id", "msg_try_1", "--svix-headers")

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert '200 OK {"duplicate": true, "event_id": 1}' in second.output
    [row] = event_rows(ledger)
    assert row.message_id == "msg_try_1"
    assert "svix-signature" in stored_headers(row) and "webhook-signature" not in stored_headers(row)


def test_a_wrong_secret_is_refused_with_the_reason_and_what_to_do(runner, connector):
    url, ledger = connector
    result = send(runner, "review.create", "--url", url, "--secret", OTHER_SECRET)

    assert result.exit_code == 1
    assert '401 UNAUTHORIZED {"error": "signature verification failed", "reason": "no_matching_signature"}' \
        in result.output
    assert "the secret differs from the connector's: use the same OKENDO_WEBHOOK_SECRETS" in result.output
    assert "1 post(s) not acknowledged" in result.output
    assert OTHER_SECRET not in result.output and SECRET not in result.output
    assert event_rows(ledger) == []


def test_a_connector_without_a_secret_answers_503_and_send_says_how_to_fix_it(runner, sqlite_url, monkeypatch):
    monkeypatch.setenv("OKENDO_WEBHOOK_SECRETS", SECRET)
    app = make_app(sqlite_url, secrets=[])
    with serving(app) as url:
        result = send(runner, "review.create", "--url", url)
    app.extensions[EXTENSION_KEY].engine.dispose()
    assert result.exit_code == 1
    assert "503 SERVICE UNAVAILABLE" in result.output
    assert "set OKENDO_WEBHOOK_SECRETS where it runs and restart it" in result.output


def test_send_a_file_of_your_own(runner, connector, tmp_path):
    url, ledger = connector
    event = json.loads(sample_bytes("review.create"))
    event["resource"]["reviewId"] = "my-own-review"
    path = tmp_path / "my-event.json"
    path.write_text(json.dumps(event, indent=2))

    result = send(runner, str(path), "--url", url)
    assert result.exit_code == 0, result.output
    assert f"{path} -> {url}/webhooks/okendo" in result.output
    [row] = event_rows(ledger)
    assert row.resource_id == "my-own-review" and row.body == path.read_bytes()


def test_bad_inputs_are_refused_before_posting(runner, connector, tmp_path, monkeypatch):
    url, ledger = connector
    big = tmp_path / "big.json"
    big.write_bytes(b'{"padding": "' + b"x" * MAX_BODY_BYTES + b'"}')
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")

    too_large = send(runner, str(big), "--url", url)
    assert too_large.exit_code == 1 and f"{big}: larger than {MAX_BODY_BYTES} bytes" in too_large.output
    not_utf8 = send(runner, str(binary), "--url", url)
    assert not_utf8.exit_code == 1 and "is not UTF-8 text" in not_utf8.output
    unknown = send(runner, "review.created", "--url", url)
    assert unknown.exit_code == 1
    assert "review.created: no such file, and no shipped sample of that name" in unknown.output
    assert "review.create, review.delete" in unknown.output
    bad_id = send(runner, "review.create", "--url", url, "--id", "msg with spaces")
    assert bad_id.exit_code == 1 and "--id 'msg with spaces'" in bad_id.output
    two_with_one_id = send(runner, "review.create", "review.update", "--url", url, "--id", "msg_1")
    assert two_with_one_id.exit_code == 2 and "--id names one event's message id" in two_with_one_id.output
    bad_secret = send(runner, "review.create", "--url", url, "--secret", "whsec_")
    assert bad_secret.exit_code == 1 and "--secret is not a valid Svix signing secret" in bad_secret.output
    nothing = send(runner, "--url", url)
    assert nothing.exit_code == 2 and "name a sample" in nothing.output

    monkeypatch.delenv("OKENDO_WEBHOOK_SECRETS")
    no_secret = send(runner, "review.create", "--url", url)
    assert no_secret.exit_code == 1
    assert "no signing secret: set OKENDO_WEBHOOK_SECRETS" in no_secret.output
    assert event_rows(ledger) == []


def test_nothing_listening_says_to_start_the_connector(runner, monkeypatch):
    monkeypatch.setenv("OKENDO_WEBHOOK_SECRETS", SECRET)
    url = f"http://127.0.0.1:{free_port()}"
    result = send(runner, "--all", "--url", url)
    assert result.exit_code == 1
    assert f"nothing answers at {url}/webhooks/okendo: start the connector (`make run`" in result.output


def test_shipped_samples_are_found_from_any_folder(runner, connector, tmp_path, monkeypatch):
    url, ledger = connector
    monkeypatch.chdir(tmp_path)  # no checkout here: the samples come with the installed package
    result = send(runner, "survey_response.create", "--url", url)
    assert result.exit_code == 0, result.output
    assert '202 ACCEPTED {"event_id": 1, "state": "received"}' in result.output
    assert [row.resource_type for row in event_rows(ledger)] == ["survey_response"]
