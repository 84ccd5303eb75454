"""No password never means open (issue 13): behind a reverse proxy on the same host every request
arrives from 127.0.0.1, so the status page and its API serve only requests made directly on this
machine, and read a client's address from forwarding headers only when the operator lists proxies."""

from __future__ import annotations

import time

import pytest
import requests
import sqlalchemy as sa

from connector.ledger.database import normalize_url
from connector.onboarding.doctor import binds_loopback_only
from tests.proxy import reverse_proxy
from tests.servers import PROJECT_ROOT, gunicorn
from tests.signing import SECRET, signed_headers
from connector.samples import sample_bytes

PASSWORD = "correct horse battery staple"
STATUS_ROUTES = ["/status", "/status/", "/status/events", "/status/events/1", "/status/replay?state=dead",
                 "/status/audit", "/api/stats", "/api/events", "/api/events/1", "/api/audit"]
POST_ROUTES = ["/api/events/1/replay", "/api/deliveries/1/replay", "/api/replay", "/status/events/1/replay",
               "/status/deliveries/1/replay", "/status/replay", "/status/logout"]


def config(db_url: str, **status) -> dict:
    # The embedded worker delivers in dry-run (no CRM credentials): the event has deliveries to replay.
    return {"database": {"url": db_url}, "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
            "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}},  # dry-run
            "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                                   str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
            "worker": {"poll_interval_s": 0.1}, "status": status}


def post_sample(base: str) -> None:
    body = sample_bytes("review.create")
    assert requests.post(f"{base}/webhooks/okendo", data=body, headers=signed_headers(body, "msg_proxy_1"),
                         timeout=10).status_code == 202


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """One server with no password for the whole module (each start costs a second or two)."""
    folder = tmp_path_factory.mktemp("open")
    with gunicorn(folder, config(f"sqlite:///{folder / 'ledger.db'}"), env={"OKENDO_WEBHOOK_SECRETS": SECRET},
                  workers=1) as server:
        post_sample(server.base_url)
        yield server


def test_without_a_password_every_route_is_refused_through_a_proxy_and_served_directly(open_server):
    base = open_server.base_url
    with reverse_proxy(base) as proxy:
        for route in STATUS_ROUTES:
            direct = requests.get(base + route, timeout=10)
            assert direct.status_code == 200, (route, direct.status_code)
            relayed = requests.get(proxy + route, timeout=10)
            assert relayed.status_code == 403, (route, relayed.status_code)
            assert "CONNECTOR_ADMIN_PASSWORD" in relayed.text
            assert "harriet" not in relayed.text.lower()  # nothing of the ledger leaks into the refusal
        for route in POST_ROUTES:
            assert requests.post(proxy + route, json={}, timeout=10).status_code == 403, route
        # The webhook itself still works through the proxy: that is what the proxy is for.
        body = sample_bytes("review.update")
        assert requests.post(f"{proxy}/webhooks/okendo", data=body, headers=signed_headers(body, "msg_proxy_2"),
                             timeout=10).status_code == 202


@pytest.mark.parametrize("header", ["Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host",
                                    "X-Forwarded-Proto"])
def test_a_forwarding_header_alone_is_enough_to_be_refused(open_server, header):
    answer = requests.get(f"{open_server.base_url}/api/stats", headers={header: "127.0.0.1"}, timeout=10)
    assert answer.status_code == 403 and "CONNECTOR_ADMIN_PASSWORD" in answer.json()["hint"]


def test_with_listed_proxies_the_client_address_is_the_forwarded_one(tmp_path, sqlite_url):
    env = {"OKENDO_WEBHOOK_SECRETS": SECRET, "CONNECTOR_ADMIN_PASSWORD": PASSWORD}
    with gunicorn(tmp_path, config(sqlite_url, admin_password="${CONNECTOR_ADMIN_PASSWORD}", trusted_proxies=1),
                  env=env, workers=1) as server:
        post_sample(server.base_url)
        deadline = time.monotonic() + 20
        while not requests.get(f"{server.base_url}/api/events/1", auth=("admin", PASSWORD),
                               timeout=10).json().get("deliveries"):
            assert time.monotonic() < deadline, "the event was never planned"
            time.sleep(0.2)
        with reverse_proxy(server.base_url, client_address="198.51.100.23") as proxy:
            assert requests.get(f"{proxy}/api/stats", timeout=10).status_code == 401
            # A client's own X-Forwarded-For is not believed: the proxy's hop is.
            answer = requests.post(f"{proxy}/api/events/1/replay", auth=("admin", PASSWORD),
                                   headers={"X-Forwarded-For": "10.9.8.7"}, timeout=10)
            assert answer.status_code == 200, answer.text
    engine = sa.create_engine(normalize_url(sqlite_url))
    with engine.connect() as connection:
        replayed_by = set(connection.execute(sa.text("SELECT replayed_by FROM deliveries")).scalars())
    engine.dispose()
    assert any("198.51.100.23" in (who or "") for who in replayed_by), replayed_by
    assert not any("10.9.8.7" in (who or "") for who in replayed_by)


def test_with_listed_proxies_and_no_password_nothing_is_served(tmp_path, sqlite_url):
    with gunicorn(tmp_path, config(sqlite_url, trusted_proxies=1), env={"OKENDO_WEBHOOK_SECRETS": SECRET},
                  workers=1) as server:
        assert requests.get(f"{server.base_url}/status", timeout=10).status_code == 403


@pytest.mark.parametrize("bind, loopback", [("127.0.0.1:8000", True), ("localhost:8000", True), ("[::1]:8000", True),
                                            ("0.0.0.0:8080", False), ("[::]:8000", False), ("10.0.0.5:80", False),
                                            ("unix:/run/connector.sock", False), ("127.0.0.1:8000,0.0.0.0:9", False),
                                            ("example.org:80", False)])
def test_which_binds_are_loopback_only(bind, loopback):
    assert binds_loopback_only(bind) is loopback
