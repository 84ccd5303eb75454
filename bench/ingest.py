"""Ingest: signed posts to the connector under gunicorn, beside a bare Flask baseline served
by the same gunicorn configuration, at several concurrencies, on SQLite and PostgreSQL.

Two connector configurations: *delivery off* (`worker.embedded: false`, the request path alone,
at every concurrency) and, at concurrency 16, *delivery on*: `make run`'s own settings, the
embedded delivery threads mapping and delivering into both CRM emulators while the load runs
(bench/delivering.py). The load generator runs in a process of its own, so the emulators'
threads in this one never share its interpreter lock.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.delivering import DeliveryOnRun, measure_delivery_on
from bench.loadgen import LoadResult, run_load
from bench.signed import SECRET, signed_requests
from tests.servers import gunicorn

CONCURRENCIES = (1, 16, 64)
DELIVERY_ON_CONCURRENCY = 16


@dataclass
class IngestRow:
    backend: str
    concurrency: int
    baseline: LoadResult
    connector: LoadResult  # delivery off
    delivering: DeliveryOnRun | None = None  # delivery on, at DELIVERY_ON_CONCURRENCY only

    @property
    def ratio(self) -> float:
        return self.connector.per_second / self.baseline.per_second if self.baseline.per_second else 0.0

    @property
    def delivering_ratio(self) -> float | None:
        if self.delivering is None or not self.baseline.per_second:
            return None
        return self.delivering.load.per_second / self.baseline.per_second


def connector_config(database_url: str) -> dict:
    # Delivery off: the request path alone (the drain benchmark and the delivery-on run measure delivery).
    return {
        "database": {"url": database_url, "sqlite_synchronous": "FULL"},
        "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
        "destinations": {},
        "mappings": {"files": []},
        "worker": {"embedded": False},
    }


def request_count(concurrency: int, duration_s: float, warmup_s: float) -> int:
    # Enough pre-signed requests for any plausible rate; the run reports if they ran out (a bare Flask
    # baseline took 4,100-4,700/s on a quiet 2-CPU VM on 2026-12-04 and ran out of 3,000/s: its rate
    # then came from a shorter window). About 2 KB each in the load generator's memory.
    return int((duration_s + warmup_s) * (2500 if concurrency == 1 else 6000))


def signed_load(url: str, count: int, label: str, concurrency: int, duration_s: float,
                warmup_s: float) -> LoadResult:
    """In the load process: sign `count` requests (before the clock starts), then post them."""
    return run_load(url, iter(signed_requests(count, label)), concurrency=concurrency, duration_s=duration_s,
                    warmup_s=warmup_s)


def measure_ingest(workdir: Path, backend: str, database_url: str, *, delivery_url: str | None, duration_s: float,
                   warmup_s: float, concurrencies=CONCURRENCIES, log=print) -> list[IngestRow]:
    """`delivery_url`: a ledger of its own for the delivery-on run (None leaves that run out)."""
    rows = []
    env = {"OKENDO_WEBHOOK_SECRETS": SECRET, "LOG_LEVEL": "info"}
    connector_dir = workdir / f"ingest-{backend}-connector"
    baseline_dir = workdir / f"ingest-{backend}-baseline"
    connector_dir.mkdir(parents=True)
    baseline_dir.mkdir(parents=True)
    # spawn, not fork: this process has threads (the emulators), which a fork would copy mid-stride.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as loads:
        def load(server_url: str, label: str, concurrency: int) -> LoadResult:
            return loads.submit(signed_load, f"{server_url}/webhooks/okendo",
                                request_count(concurrency, duration_s, warmup_s), label, concurrency,
                                duration_s, warmup_s).result()

        with ExitStack() as servers:
            connector = servers.enter_context(gunicorn(connector_dir, connector_config(database_url), env=env))
            baseline = servers.enter_context(gunicorn(baseline_dir, connector_config(database_url), env=env,
                                                      app="bench.baseline:app"))
            for concurrency in concurrencies:
                results = {}
                for name, server in (("baseline", baseline), ("delivery off", connector)):
                    results[name] = load(server.base_url, f"{backend}-{name.split()[0]}-c{concurrency}",
                                         concurrency)
                    log(f"  ingest {backend:10} {name:12} {results[name].summary()}")
                rows.append(IngestRow(backend, concurrency, results["baseline"], results["delivery off"]))
        # Delivery on last, once the other two servers are stopped: its ledger and emulators are its own.
        row = next((r for r in rows if r.concurrency == DELIVERY_ON_CONCURRENCY), None)
        if delivery_url is not None and row is not None:
            label = f"{backend}-on-c{DELIVERY_ON_CONCURRENCY}"
            row.delivering = measure_delivery_on(
                workdir / f"ingest-{backend}-delivering", backend, delivery_url,
                lambda server_url: load(server_url, label, DELIVERY_ON_CONCURRENCY), log=log)
    return rows
