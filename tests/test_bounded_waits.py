"""Bounded waits, with real processes: gunicorn serving, another process holding the ledger's lock.

Every webhook is answered within `receiver.answer_within_s` (202, or 503 with Retry-After) however
many arrive, /healthz, /readyz and the status page within a second; once the lock is released,
every acknowledged event is in the ledger exactly once, and every refused one is stored when
Svix sends it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from connector.ledger.database import normalize_url
from tests.ledger_locks import ledger_locked
from tests.servers import Gunicorn, gunicorn
from tests.signing import SECRET, sample_bytes, signed_headers

BODY = sample_bytes("review.create")
PROBES = ("/healthz", "/readyz", "/status/", "/api/stats")


@dataclass(frozen=True)
class Answer:
    target: str  # the message id posted, or the path read
    status: int
    seconds: float  # from sending the request to its answer, as the client sees it
    retry_after: str | None
    text: str


# Past Svix's 15 s the answer no longer counts: the client stops waiting (status 0: no answer).
CLIENT_TIMEOUT_S = 16


def _request(method: str, url: str, target: str, **kwargs) -> Answer:
    started = time.monotonic()
    try:
        response = requests.request(method, url, timeout=CLIENT_TIMEOUT_S, **kwargs)
    except requests.Timeout:
        return Answer(target, 0, time.monotonic() - started, None, f"no answer within {CLIENT_TIMEOUT_S} s")
    return Answer(target, response.status_code, time.monotonic() - started, response.headers.get("Retry-After"),
                  response.text)


def _post(base: str, message_id: str) -> Answer:
    return _request("POST", f"{base}/webhooks/okendo", message_id, data=BODY, headers=signed_headers(BODY, message_id))


def _get(base: str, path: str) -> Answer:
    return _request("GET", f"{base}{path}", path)


def _traffic(base: str, *, waves: list[tuple[float, int]], probe_until: float) -> tuple[list[Answer], list[Answer]]:
    """Bursts of concurrent webhooks (`count` posted at once, `at` seconds in), and every probe
    read every half second meanwhile; returns the answers once all have come."""
    schedule = sorted([(at, "post", f"msg_{n}_{k}") for n, (at, count) in enumerate(waves) for k in range(count)]
                      + [(k * 0.5, "get", path) for k in range(int(probe_until / 0.5) + 1) for path in PROBES])
    posts: list[Future[Answer]] = []
    gets: list[Future[Answer]] = []
    with ThreadPoolExecutor(max(count for _, count in waves) + 2 * len(PROBES)) as pool:
        started = time.monotonic()
        for at, kind, target in schedule:
            time.sleep(max(started + at - time.monotonic(), 0))
            if kind == "post":
                posts.append(pool.submit(_post, base, target))
            else:
                gets.append(pool.submit(_get, base, target))
        return [f.result() for f in posts], [f.result() for f in gets]


def _stored(db_url: str) -> dict[str, int]:
    engine = sa.create_engine(normalize_url(db_url))
    try:
        with engine.connect() as connection:
            return dict(connection.execute(sa.text("SELECT message_id, count(*) FROM events GROUP BY message_id")).all())
    finally:
        engine.dispose()


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., AbstractContextManager[Gunicorn]]:
    def start(db_url: str, **receiver: Any) -> AbstractContextManager[Gunicorn]:
        config = {"database": {"url": db_url}, "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}", **receiver}}
        return gunicorn(tmp_path, config, env={"OKENDO_WEBHOOK_SECRETS": SECRET}, workers=2)
    return start


def _assert_bounded(webhooks: list[Answer], probes: list[Answer], bound: float, status_pages: int = 200) -> None:
    slow = [(a.target, a.status, round(a.seconds, 2)) for a in webhooks if a.seconds > bound]
    assert not slow, f"webhooks answered after the {bound} s bound: {slow}"
    assert {a.status for a in webhooks} <= {202, 503}, [(a.target, a.status, a.text) for a in webhooks]
    assert all(a.retry_after == "5" for a in webhooks if a.status == 503)
    slow_probes = [(a.target, a.status, round(a.seconds, 2)) for a in probes if a.seconds > 1.0]
    assert not slow_probes, f"probes answered after 1 s: {slow_probes}"
    by_path = {path: {a.status for a in probes if a.target == path} for path in PROBES}
    assert by_path == {"/healthz": {200}, "/readyz": {503}, "/status/": {status_pages}, "/api/stats": {status_pages}}, \
        by_path
    assert all("ledger busy" in a.text for a in probes if a.status == 503)


def _redeliver_like_svix(base: str, message_id: str) -> Answer:
    # Svix retries a refused message, then again 5 s later (https://docs.svix.com/retries); a
    # second apart here. Just after the lock goes, a write that waited for it may not have finished.
    for _ in range(3):
        answer = _post(base, message_id)
        if answer.status != 503:
            break
        time.sleep(1)
    return answer


def _assert_nothing_lost_once_released(base: str, db_url: str, webhooks: list[Answer]) -> None:
    acknowledged = {a.target for a in webhooks if a.status == 202}
    stored = _stored(db_url)
    assert acknowledged <= set(stored) and all(count == 1 for count in stored.values())
    # Each refused event, sent again: stored now, or found stored (the write in progress when its
    # first attempt gave up may have committed it), never twice.
    again = [_redeliver_like_svix(base, a.target) for a in webhooks if a.status == 503]
    assert {a.status for a in again} <= {200, 202}, [(a.target, a.status, a.text) for a in again]
    assert _stored(db_url) == {a.target: 1 for a in webhooks}
    assert {_get(base, "/readyz").status for _ in range(4)} == {200}


def test_a_locked_sqlite_ledger_answers_every_webhook_within_the_bound(serve, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serve(db_url, answer_within_s=3) as server:
        # 2 workers x 4 threads: each wave is three times what the threads can take at once.
        with ledger_locked(db_url):
            webhooks, probes = _traffic(server.base_url, waves=[(0.0, 24), (4.0, 24)], probe_until=7.0)
        _assert_bounded(webhooks, probes, bound=3.0)
        _assert_nothing_lost_once_released(server.base_url, db_url, webhooks)


def test_the_default_bound_holds_while_the_lock_outlasts_it(serve, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with serve(db_url) as server:  # answer_within_s 10, busy_timeout_ms 5000: the shipped settings
        with ledger_locked(db_url):
            webhooks, probes = _traffic(server.base_url, waves=[(0.0, 16), (3.0, 16), (6.0, 16), (9.0, 16)],
                                        probe_until=11.0)
        _assert_bounded(webhooks, probes, bound=10.0)
        _assert_nothing_lost_once_released(server.base_url, db_url, webhooks)


@pytest.mark.postgres
def test_a_locked_postgres_events_table_answers_every_webhook_within_the_bound(serve, postgres_url):
    with serve(postgres_url, answer_within_s=3) as server:
        with ledger_locked(postgres_url):
            webhooks, probes = _traffic(server.base_url, waves=[(0.0, 24), (4.0, 24)], probe_until=7.0)
        # The status page cannot read a table locked ACCESS EXCLUSIVE: it says so at once (503).
        _assert_bounded(webhooks, probes, bound=3.0, status_pages=503)
        _assert_nothing_lost_once_released(server.base_url, postgres_url, webhooks)
