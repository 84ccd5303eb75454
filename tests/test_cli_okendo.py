"""`connector okendo subscribe` and `connector okendo list` against a local emulator of Okendo's
subscription endpoints (tests/emulators/okendo.py), over a real socket."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import requests
import yaml

from connector.cli import main
from connector.onboarding.topics import CORROBORATED_EVENTS
from tests.emulators.okendo import DOCUMENTED_RESOURCE_TYPES, OkendoEmulator
from tests.servers import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = "https://connector.shop.example.com/webhooks/okendo"


def shipped_config(tmp_path: Path, **okendo: object) -> str:
    """The shipped config.yaml and mappings, with its okendo section (changed by `okendo`)."""
    tree = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    tree["mappings"]["files"] = [str(PROJECT_ROOT / f) for f in tree["mappings"]["files"]]
    tree["okendo"].update(okendo)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


@pytest.fixture
def okendo_api(monkeypatch):
    with OkendoEmulator() as emulator:
        monkeypatch.setenv("OKENDO_API_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OKENDO_USER_ID", emulator.user_id)
        monkeypatch.setenv("OKENDO_API_KEY", emulator.api_key)
        monkeypatch.delenv("OKENDO_WEBHOOK_SECRETS", raising=False)
        yield emulator


def subscribe(runner, tmp_path, *args: str, config: str | None = None):
    return runner.invoke(main, ["--config", config or shipped_config(tmp_path), "okendo", "subscribe", *args])


def test_subscribe_creates_the_subscription_for_every_mapped_event_and_prints_the_secret_once(
        runner, tmp_path, okendo_api, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = subscribe(runner, tmp_path, "--url", ENDPOINT)

    assert result.exit_code == 0, result.output
    [created] = okendo_api.subscriptions
    secret = okendo_api.secrets[created["webhookSubscriptionId"]]
    assert f"export OKENDO_WEBHOOK_SECRETS='{secret}'" in result.stdout
    assert result.output.count(secret) == 1
    assert f"created subscription {created['webhookSubscriptionId']} for {ENDPOINT}: 16 event(s), enabled" in result.output
    # The survey topics only a secondary source lists are left out, and the user is told.
    assert "not subscribed: survey_response.delete, survey_response.update" in result.output
    # What Okendo received: Basic auth with the user id and key, the version header, every pair (§8).
    post = okendo_api.calls("POST")[0]
    user, key = base64.b64decode(post.headers["authorization"].removeprefix("Basic ")).decode().split(":")
    assert (user, key) == (okendo_api.user_id, okendo_api.api_key)
    assert post.headers["okendo-api-version"] == "2025-02-01"
    assert post.body["endpointUrl"] == ENDPOINT and post.body["isEnabled"] is True
    assert post.body["version"] == "2025-02-01"
    assert {f"{p['resourceType']}.{p['topic']}" for p in post.body["subscriptions"]} == CORROBORATED_EVENTS
    # Never written to disk: not in the working folder, which holds the config too.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_subscribe_named_topics_and_patterns(runner, tmp_path, okendo_api):
    result = subscribe(runner, tmp_path, "--url", ENDPOINT, "--topics", "review.*", "--topics", "loyalty_customer.create")
    assert result.exit_code == 0, result.output
    pairs = okendo_api.subscriptions[0]["subscriptions"]
    assert [f"{p['resourceType']}.{p['topic']}" for p in pairs] == [
        "loyalty_customer.create", "review.create", "review.delete", "review.update"]


def test_subscribe_refuses_an_unknown_topic_and_an_unreachable_url_before_calling_okendo(runner, tmp_path, okendo_api):
    unknown = subscribe(runner, tmp_path, "--url", ENDPOINT, "--topics", "review.create,reviews.created")
    assert unknown.exit_code == 2
    assert "--topics" in unknown.output and "'reviews.created' is not an Okendo event" in unknown.output
    assert "review.update" in unknown.output  # the known events are listed

    local = subscribe(runner, tmp_path, "--url", "https://127.0.0.1:8000/webhooks/okendo")
    assert local.exit_code == 2
    assert "Okendo's servers cannot reach 127.0.0.1" in local.output and "connector send" in local.output
    assert okendo_api.requests == []


def test_subscribe_shows_okendos_validation_errors(runner, tmp_path, okendo_api):
    result = subscribe(runner, tmp_path, "--url", "http://connector.shop.example.com/webhooks/okendo")
    assert result.exit_code == 1
    assert "Okendo refused the subscription (HTTP 422)" in result.output and "fix --url" in result.output
    assert "/endpointUrl: must be an HTTPS URL" in result.output
    assert okendo_api.subscriptions == []


def test_subscribe_names_the_event_okendo_does_not_offer(runner, tmp_path, monkeypatch):
    # The documented API enum has no survey_response (REFERENCE §4): a store may get a 422 for it.
    offered = frozenset(f"{t}.{topic}" for t in DOCUMENTED_RESOURCE_TYPES for topic in ("create", "update", "delete"))
    with OkendoEmulator(offered_events=offered) as emulator:
        monkeypatch.setenv("OKENDO_API_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OKENDO_USER_ID", emulator.user_id)
        monkeypatch.setenv("OKENDO_API_KEY", emulator.api_key)
        refused = subscribe(runner, tmp_path, "--url", ENDPOINT)
        assert refused.exit_code == 1
        assert "/subscriptions/15/resourceType: must be equal to one of the allowed values" in refused.output
        assert "--topics (leave out what Okendo does not offer)" in refused.output

        accepted = subscribe(runner, tmp_path, "--url", ENDPOINT, "--topics", "review.*,loyalty_*")
        assert accepted.exit_code == 0, accepted.output
        assert len(emulator.subscriptions[0]["subscriptions"]) == 15


def test_subscribe_refuses_a_second_subscription_to_the_same_url(runner, tmp_path, okendo_api):
    existing = okendo_api.add_subscription(ENDPOINT, ["review.create"])
    refused = subscribe(runner, tmp_path, "--url", ENDPOINT + "/")
    assert refused.exit_code == 1
    assert f"Okendo already has subscription {existing['webhookSubscriptionId']}" in refused.output
    assert "deliver every event twice" in refused.output and "--allow-duplicate" in refused.output
    assert okendo_api.calls("POST") == []

    again = subscribe(runner, tmp_path, "--url", ENDPOINT, "--allow-duplicate")
    assert again.exit_code == 0, again.output
    assert len(okendo_api.subscriptions) == 2


def test_wrong_credentials_name_the_variables_and_never_show_the_key(runner, tmp_path, okendo_api, monkeypatch):
    monkeypatch.setenv("OKENDO_API_KEY", "w" * 32)
    result = runner.invoke(main, ["--config", shipped_config(tmp_path), "okendo", "list"])
    assert result.exit_code == 1
    assert "Okendo refused the credentials (HTTP 401" in result.output
    assert "check OKENDO_USER_ID and OKENDO_API_KEY" in result.output
    assert "w" * 32 not in result.output
    assert [call.status for call in okendo_api.requests] == [401]  # a refusal is not retried


def test_missing_credentials_are_named_before_any_request(runner, tmp_path, okendo_api, monkeypatch):
    monkeypatch.delenv("OKENDO_API_KEY")
    result = subscribe(runner, tmp_path, "--url", ENDPOINT)
    assert result.exit_code == 1
    assert "OKENDO_API_KEY not set" in result.output and "okendo.api_key" in result.output
    assert okendo_api.requests == []


def test_rate_limit_429_is_waited_out_as_retry_after_says(runner, tmp_path, okendo_api):
    okendo_api.exhaust_rate_limit()  # another client just spent the burst of this API key
    result = runner.invoke(main, ["--config", shipped_config(tmp_path), "okendo", "list"])
    assert result.exit_code == 0, result.output
    assert "no webhook subscriptions yet" in result.output
    limited, served = okendo_api.requests
    assert (limited.status, served.status) == (429, 200)
    assert served.at - limited.at >= 0.9  # the emulator's Retry-After: 1


def test_rate_limit_gives_up_after_a_bounded_number_of_attempts(runner, tmp_path, okendo_api):
    okendo_api.fail(status=429, headers={"Retry-After": "0"}, body={"message": "Too Many Requests"}, times=10)
    result = runner.invoke(main, ["--config", shipped_config(tmp_path), "okendo", "list"])
    assert result.exit_code == 1
    assert "Okendo kept answering 429 Too Many Requests after 4 attempts" in result.output
    assert "2 requests/s" in result.output
    assert len(okendo_api.requests) == 4


def test_a_long_retry_after_is_reported_instead_of_waited(runner, tmp_path, okendo_api):
    okendo_api.fail(status=429, headers={"Retry-After": "120"}, times=1)
    result = subscribe(runner, tmp_path, "--url", ENDPOINT)
    assert result.exit_code == 1
    assert "it asks to wait 120 s; try again then" in result.output
    assert len(okendo_api.requests) == 1


def test_list_pages_through_next_url_within_the_rate_limit(runner, tmp_path, okendo_api):
    for number in range(350):
        okendo_api.add_subscription(f"https://shop{number}.example.com/webhooks/okendo", ["review.create"])
    result = runner.invoke(main, ["--config", shipped_config(tmp_path), "okendo", "list"])
    assert result.exit_code == 0, result.output
    assert "350 subscription(s):" in result.output
    assert "https://shop0.example.com/webhooks/okendo  enabled  version 2025-02-01" in result.output
    assert "1 event(s): review.create" in result.output
    pages = okendo_api.calls("GET")
    assert len(pages) == 4 and pages[0].query["limit"] == ["100"]
    assert all(json.loads(page.query["lastEvaluated"][0]) for page in pages[1:])
    # Four requests against a burst of three at 2/s: paced by the client, none was refused.
    assert [page.status for page in pages] == [200] * 4
    assert all(secret not in result.output for secret in okendo_api.secrets.values())


def test_list_retries_a_server_error_once_it_clears(runner, tmp_path, okendo_api):
    okendo_api.fail(method="GET", status=503, body={"message": "Service Unavailable"})
    result = runner.invoke(main, ["--config", shipped_config(tmp_path), "okendo", "list"])
    assert result.exit_code == 0, result.output
    assert [call.status for call in okendo_api.requests] == [503, 200]


def test_a_create_left_without_answer_is_not_repeated(runner, tmp_path, okendo_api):
    okendo_api.fail(method="POST", delay=1.5)
    result = subscribe(runner, tmp_path, "--url", ENDPOINT, config=shipped_config(tmp_path, timeout_s=0.5))
    assert result.exit_code == 1
    assert "the subscription may or may not have been created: run `connector okendo list`" in result.output
    # Okendo goes on to create it after all; `list` then shows it, and nothing was sent twice.
    deadline = time.monotonic() + 5
    while not okendo_api.calls("POST") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(okendo_api.calls("POST")) == 1
    listed = runner.invoke(main, ["--config", shipped_config(tmp_path), "okendo", "list"])
    assert f"1 subscription(s):\n  {okendo_api.subscriptions[0]['webhookSubscriptionId']}  {ENDPOINT}" in listed.output


def test_an_unreachable_api_names_the_base_url(runner, tmp_path, monkeypatch):
    base_url = f"http://127.0.0.1:{free_port()}/enterprise"
    monkeypatch.setenv("OKENDO_API_BASE_URL", base_url)
    monkeypatch.setenv("OKENDO_USER_ID", "someone")
    monkeypatch.setenv("OKENDO_API_KEY", "k" * 32)
    result = subscribe(runner, tmp_path, "--url", ENDPOINT)
    assert result.exit_code == 1
    assert f"cannot reach Okendo at {base_url}" in result.output and "OKENDO_API_BASE_URL" in result.output


def test_an_answer_without_a_secret_says_not_to_subscribe_again(runner, tmp_path, okendo_api):
    okendo_api.secret_field = None
    result = subscribe(runner, tmp_path, "--url", ENDPOINT)
    assert result.exit_code == 1
    assert "carries no signing secret we recognise" in result.output and "Do not subscribe again" in result.output
    assert "webhookSubscriptionId" in result.output  # the fields it did carry


def test_the_api_base_url_must_be_https_except_to_this_machine(runner, tmp_path):
    result = runner.invoke(main, ["--config", shipped_config(tmp_path, api_base_url="http://api.okendo.io/enterprise"),
                                  "okendo", "list"])
    assert result.exit_code == 1
    assert "okendo.api_base_url: must be an https:// URL" in result.output


def test_the_emulator_checks_the_version_header(okendo_api):
    # The emulator itself: a request without okendo-api-version is refused (REFERENCE §8 [C]).
    response = requests.get(f"{okendo_api.base_url}/webhook_subscriptions",
                            auth=(okendo_api.user_id, okendo_api.api_key), timeout=5)
    assert response.status_code == 400 and "okendo-api-version" in response.json()["message"]
