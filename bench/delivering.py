"""Ingest with delivery on: `make run`'s own settings under load, then the catch-up.

The server is the shipped one (config.yaml's worker settings: delivery threads embedded in each
gunicorn worker, 2 of them; HubSpot limited to 170 requests per 10 s, Salesforce to 4 concurrent
requests; the shipped mappings), delivering into the CRM emulators of the drain benchmark (every
call 50-150 ms, HubSpot refusing past 190 per 10 s) rather than dry-run, so the catch-up runs
at the rate real CRMs would allow. Measured: the load (as for delivery off), what the delivery
threads finished while it ran, the backlog left when it stopped, and how long that took to drain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from bench.drain import HUBSPOT_LIMIT, LATENCY_S
from bench.loadgen import LoadResult
from bench.signed import SECRET
from connector.ledger.database import normalize_url
from tests.crm import PROJECT_ROOT, crm_emulators
from tests.servers import gunicorn

CATCH_UP_TIMEOUT_S = 600
_FINISHED = ("delivered", "stale", "skipped", "dead")


@dataclass
class DeliveryOnRun:
    load: LoadResult
    events_stored: int  # when the load stopped (warm-up included)
    finished_during_load: int  # deliveries delivered, stale, skipped or dead by then
    waiting_events: int  # events not yet planned when the load stopped
    open_deliveries: int  # deliveries pending or retrying when the load stopped
    drain_s: float | None  # from the end of the load until nothing was left; None: not within the timeout
    hubspot_during_load: int
    hubspot_during_drain: int
    http_429: int

    @property
    def backlog(self) -> int:
        return self.waiting_events + self.open_deliveries

    @property
    def catch_up_share(self) -> float | None:
        """HubSpot requests while catching up ÷ (catch-up seconds × 190 / 10 s)."""
        if not self.drain_s:
            return None
        requests, per = HUBSPOT_LIMIT
        return self.hubspot_during_drain / (self.drain_s * requests / per)


def shipped_config(database_url: str, destinations: dict) -> dict:
    """config.yaml as `make run` reads it, with the emulators' addresses and this run's ledger."""
    return {
        "database": {"url": database_url, "sqlite_synchronous": "FULL"},
        "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
        "destinations": destinations,
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        # worker: left to its defaults, which are config.yaml's (embedded, 2 threads, batches of 200).
    }


def _counts(engine: sa.Engine) -> tuple[int, int, int, int]:
    """Events stored, events not yet planned, deliveries open, deliveries finished."""
    with engine.connect() as connection:
        events, waiting = connection.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE state = 'received') FROM events")).one()
        states = dict(connection.execute(sa.text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())
    return (events, waiting, states.get("pending", 0) + states.get("retrying", 0),
            sum(states.get(state, 0) for state in _FINISHED))


def measure_delivery_on(workdir: Path, backend: str, database_url: str, load: Callable[[str], LoadResult], *,
                        log=print) -> DeliveryOnRun:  # type: ignore[no-untyped-def]
    """`load(base_url)` runs the closed-loop load against the server and returns when it has stopped."""
    workdir.mkdir(parents=True)
    with crm_emulators(workdir, hubspot_rate_limit=HUBSPOT_LIMIT, latency=LATENCY_S) as crms:
        destinations = crms.destinations(hubspot={"rate_limit": {"requests": 170, "per_seconds": 10}},
                                         salesforce={"rate_limit": {"max_concurrency": 4}})
        env = {"OKENDO_WEBHOOK_SECRETS": SECRET, "LOG_LEVEL": "info", **crms.environ}
        engine = sa.create_engine(normalize_url(database_url))
        with gunicorn(workdir, shipped_config(database_url, destinations), env=env) as server:
            result = load(server.base_url)
            stopped = time.monotonic()
            hubspot_during_load = len(crms.hubspot.requests)
            stored, waiting, open_deliveries, finished = _counts(engine)
            log(f"  ingest {backend:10} {'delivery on':12} {result.summary()}")
            log(f"  ingest {backend:10} delivery on: {stored} events stored, {finished} deliveries finished during "
                f"the load; left: {waiting} events to plan, {open_deliveries} deliveries open")
            drain_s = None
            while time.monotonic() - stopped < CATCH_UP_TIMEOUT_S:
                _, waiting_now, open_now, _ = _counts(engine)
                if waiting_now + open_now == 0:
                    drain_s = time.monotonic() - stopped
                    break
                time.sleep(0.2)
            if drain_s is None:
                log(f"  ingest {backend:10} delivery on: backlog not drained {CATCH_UP_TIMEOUT_S} s after the load; "
                    f"see {server.log_path}")
        engine.dispose()
        hubspot_log = list(crms.hubspot.requests)
        too_many = sum(1 for r in [*hubspot_log, *crms.salesforce.requests] if r.status == 429)
    run = DeliveryOnRun(result, stored, finished, waiting, open_deliveries, drain_s, hubspot_during_load,
                        len(hubspot_log) - hubspot_during_load, too_many)
    if drain_s is not None:
        log(f"  ingest {backend:10} delivery on: drained {drain_s:.1f} s after the load, "
            f"{run.hubspot_during_drain} HubSpot requests meanwhile ({run.catch_up_share:.0%} of the 190/10 s bound), "
            f"{too_many} x 429")
    return run
