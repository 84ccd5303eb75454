"""Ingest: signed posts to the connector under gunicorn, beside a bare Flask baseline served
by the same gunicorn configuration, at several concurrencies, on SQLite and PostgreSQL."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import LoadResult, run_load
from bench.signed import SECRET, signed_requests
from tests.servers import gunicorn

CONCURRENCIES = (1, 16, 64)


@dataclass
class IngestRow:
    backend: str
    concurrency: int
    baseline: LoadResult
    connector: LoadResult

    @property
    def ratio(self) -> float:
        return self.connector.per_second / self.baseline.per_second if self.baseline.per_second else 0.0


def connector_config(database_url: str) -> dict:
    # Deliveries are measured by the drain benchmark; here the request path alone is measured.
    return {
        "database": {"url": database_url, "sqlite_synchronous": "FULL"},
        "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
        "destinations": {},
        "mappings": {"files": []},
        "worker": {"embedded": False},
    }


def measure_ingest(workdir: Path, backend: str, database_url: str, *, duration_s: float, warmup_s: float,
                   concurrencies=CONCURRENCIES, log=print) -> list[IngestRow]:
    rows = []
    env = {"OKENDO_WEBHOOK_SECRETS": SECRET, "LOG_LEVEL": "info"}
    connector_dir = workdir / f"ingest-{backend}-connector"
    baseline_dir = workdir / f"ingest-{backend}-baseline"
    connector_dir.mkdir(parents=True)
    baseline_dir.mkdir(parents=True)
    with ExitStack() as stack:
        connector = stack.enter_context(gunicorn(connector_dir, connector_config(database_url), env=env))
        baseline = stack.enter_context(gunicorn(baseline_dir, connector_config(database_url), env=env,
                                                app="bench.baseline:app"))
        for concurrency in concurrencies:
            # Enough pre-signed requests for any plausible rate; the run reports if they ran out.
            count = int((duration_s + warmup_s) * (1200 if concurrency == 1 else 3000))
            results = {}
            for name, server in (("baseline", baseline), ("connector", connector)):
                requests = iter(signed_requests(count, f"{backend}-{name}-c{concurrency}"))
                results[name] = run_load(f"{server.base_url}/webhooks/okendo", requests,
                                         concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s)
                r = results[name]
                log(f"  ingest {backend:10} {name:9} c={concurrency:<3} {r.per_second:8.0f}/s "
                    f"p50 {r.percentile_ms(50):6.1f} ms p95 {r.percentile_ms(95):6.1f} ms "
                    f"p99 {r.percentile_ms(99):6.1f} ms errors {r.failed}{' EXHAUSTED' if r.exhausted else ''}")
            rows.append(IngestRow(backend, concurrency, results["baseline"], results["connector"]))
    return rows
