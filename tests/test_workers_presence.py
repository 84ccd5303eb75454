"""Workers are visible (issue 14): each running delivery worker keeps a row in the ledger by its
heartbeat; the overview lists them and warns when deliveries wait with nobody delivering, or when
workers run different configurations; /metrics counts the live ones. Real processes on PostgreSQL
show two workers, then one after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from connector.ledger.models import utcnow
from connector.mapping.loader import load_mappings
from connector.worker.runner import Worker
from tests.servers import PROJECT_ROOT, write_config
from tests.test_status import build_app, post_event, sign_in
from tests.test_worker import ingest, ledger  # noqa: F401
from connector.runtime import EXTENSION_KEY
from connector.samples import sample_bytes


def rows(engine) -> list:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT * FROM workers ORDER BY started_at")).all()


def wait_until(condition, timeout: float = 20, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def test_a_running_worker_keeps_its_row_fresh_and_removes_it_when_it_stops(ledger, crms):
    settings, engine = ledger
    settings.worker.heartbeat_s = 0.2
    worker = Worker(settings, load_mappings(settings), engine, prune_enabled=False, kind="standalone").start(1)
    try:
        [row] = rows(engine)
        assert (row.kind, row.threads, row.pid, len(row.config_hash)) == ("standalone", 1, os.getpid(), 64)
        first_beat = row.heartbeat_at
        ingest(engine, "review.create")
        wait_until(lambda: rows(engine)[0].deliveries_done == 4, message="the 4 deliveries were never counted")
        row = rows(engine)[0]
        assert row.heartbeat_at > first_beat and row.last_claim_at is not None
    finally:
        worker.stop()
    assert rows(engine) == []


def test_the_overview_lists_workers_and_warns_when_deliveries_wait_with_nobody_delivering(db_url):
    app = build_app(db_url)
    engine = app.extensions[EXTENSION_KEY].engine
    client = app.test_client()
    sign_in(client)
    assert post_event(client, sample_bytes("review.create"), "msg-nobody").status_code == 202
    page = client.get("/status").text
    assert "no delivery worker has sent a heartbeat" in page and "No delivery worker is running." in page
    assert client.get("/api/stats").get_json()["warnings"]

    with engine.begin() as connection:  # two live workers on two configurations, one gone quiet
        for name, fingerprint, age in (("a", "1" * 64, 0), ("b", "2" * 64, 0), ("c", "1" * 64, 3600)):
            moment = utcnow().replace(microsecond=0)
            connection.execute(sa.text(
                "INSERT INTO workers (name, host, pid, kind, threads, started_at, heartbeat_at, last_claim_at, "
                "deliveries_done, config_hash) VALUES (:n, 'host-1', 1, 'standalone', 2, :t, :h, NULL, 0, :c)"),
                {"n": name, "t": moment, "h": moment - timedelta(seconds=age), "c": fingerprint})
    page = client.get("/status").text
    assert page.count('data-alive="yes"') == 2 and page.count('data-alive="no"') == 1
    assert "run 2 different configurations" in page
    assert "no delivery worker has sent a heartbeat" not in page
    metrics = app.test_client().get("/metrics").text
    assert "okendo_connector_workers_alive 2.0" in metrics
    engine.dispose()


@pytest.mark.postgres
def test_two_worker_processes_show_then_one_after_a_sigkill(postgres_url, tmp_path):
    from connector.config import settings_from_mapping
    from connector.ledger import create_ledger_engine
    from connector.ledger.migrate import upgrade
    from connector.metrics import scrape_registry
    from prometheus_client import generate_latest

    tree = {"database": {"url": postgres_url}, "receiver": {"secrets": []},
            "destinations": {"hubspot": {"type": "hubspot"}},
            "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml")]},
            "worker": {"embedded": False, "heartbeat_s": 0.3, "poll_interval_s": 0.1}}
    config = write_config(tmp_path / "config.yaml", tree)
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": postgres_url}}, environ={}))
    upgrade(engine)
    processes = [subprocess.Popen([sys.executable, "-m", "connector.cli", "--config", str(config), "worker"],
                                  cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(2)]
    try:
        def alive() -> float:
            text = generate_latest(scrape_registry(engine, heartbeat_s=0.3)).decode()
            return float(next(line.split()[1] for line in text.splitlines()
                              if line.startswith("okendo_connector_workers_alive ")))

        wait_until(lambda: alive() == 2, message="two workers never showed")
        assert {row.pid for row in rows(engine)} == {p.pid for p in processes}
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait(10)
        wait_until(lambda: alive() == 1, timeout=10, message="the killed worker's heartbeat never went stale")
        assert len(rows(engine)) == 2  # its row stays, stale, for the overview to show
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
        engine.dispose()
