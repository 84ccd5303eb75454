"""Scale-out: one standing backlog on a PostgreSQL ledger, drained by 1, 2, 4 ... standalone
`connector worker` processes (no gunicorn, so no embedded delivery threads) into both CRM
emulators, HubSpot refusing the 191st request of any 10 s window as HubSpot does.

Every worker is configured with the shipped limits (HubSpot 170 per 10 s, Salesforce 4 concurrent
requests) and no `--share`: only the ledger's shared rate limit keeps them under HubSpot's window
together. Each row starts from a fresh schema and fresh emulators, so no row finds the records or
the links of another. Measured per row: drain time, CRM calls per event, 429s, the busiest 10 s
window at HubSpot, and the share of HubSpot's bound the drain reached (defined in bench/README.md).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import psutil
import sqlalchemy as sa

from bench.cpu import CpuMeter, CpuUsage, postgres_processes
from bench.drain import HUBSPOT_LIMIT, LATENCY_S, call_kind, store_backlog
from connector.ledger.database import normalize_url
from tests.crm import PROJECT_ROOT, crm_emulators
from tests.servers import write_config
from tests.workload import build_plan, work_left

CONFIGURED_HUBSPOT = (170, 10.0)  # config.yaml's margin under HubSpot's 190 per 10 s
DRAIN_TIMEOUT_S = 900


@dataclass
class ScaleoutRow:
    workers: int
    threads_per_worker: int
    events: int
    seconds: float
    hubspot_calls: Counter
    salesforce_calls: Counter
    http_429: int
    busiest_window: int  # HubSpot requests in the busiest rolling 10 s window
    hubspot_active_s: float  # from the first HubSpot request to the last
    deliveries: dict[str, int]
    cpu: CpuUsage | None = None  # the machine's and each part's CPU over the drain (bench/cpu.py)

    @property
    def hubspot_requests(self) -> int:
        return sum(self.hubspot_calls.values())

    @property
    def crm_calls(self) -> int:
        return self.hubspot_requests + sum(self.salesforce_calls.values())

    @property
    def calls_per_event(self) -> float:
        return self.crm_calls / self.events if self.events else 0.0

    @property
    def floor_s(self) -> float:
        """How long HubSpot's own bound (190 per 10 s) needs for the HubSpot requests made."""
        requests, per = HUBSPOT_LIMIT
        return self.hubspot_requests * per / requests

    @property
    def share_of_bound(self) -> float:
        """HubSpot requests ÷ (drain seconds × 190 / 10 s): the share of what HubSpot allows that was used."""
        return self.floor_s / self.seconds if self.seconds else 0.0

    @property
    def share_of_configured(self) -> float:
        """The same against the configured 170 per 10 s, the most the shared limiter ever hands out."""
        requests, per = CONFIGURED_HUBSPOT
        return self.hubspot_requests * per / requests / self.seconds if self.seconds else 0.0

    @property
    def share_while_sending(self) -> float:
        """The share over the span from the first HubSpot request to the last (start-up and tail left out)."""
        return self.floor_s / self.hubspot_active_s if self.hubspot_active_s else 0.0


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The largest number of `times` in any window (t - seconds, t], as HubSpot counts its rolling window."""
    ordered = sorted(times)
    start = most = 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


def worker_config(database_url: str, destinations: dict) -> dict:
    return {
        "database": {"url": database_url},
        "destinations": destinations,
        "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                               str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
        # The shipped worker settings (config.yaml): 2 threads, batches of 200, a poll every second.
        "worker": {"embedded": False, "threads": 2, "batch_size": 200, "poll_interval_s": 1.0},
    }


def _start_worker(config_path: Path, log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    # As an operator starts one (`connector worker`), with nothing telling it how many others run.
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "connector.cli", "--config", str(config_path), "worker"],
                                cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(workers: list[subprocess.Popen], logs: list[Path]) -> None:
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, log in zip(workers, logs):
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"connector worker {process.pid} did not stop within 60 s of SIGTERM; see {log}")


def measure_one(workdir: Path, database_url: str, messages: list[tuple[str, bytes]], workers: int, *,
                log: Callable[[str], None] = print) -> ScaleoutRow:
    workdir.mkdir(parents=True)
    stored = store_backlog(database_url, messages)
    with crm_emulators(workdir, hubspot_rate_limit=HUBSPOT_LIMIT, latency=LATENCY_S) as crms:
        destinations = crms.destinations(
            hubspot={"rate_limit": {"requests": CONFIGURED_HUBSPOT[0], "per_seconds": CONFIGURED_HUBSPOT[1]}},
            salesforce={"rate_limit": {"max_concurrency": 4}})
        config = worker_config(database_url, destinations)
        config_path = write_config(workdir / "config.yaml", config)
        env = {**os.environ, "LOG_LEVEL": "warning", **crms.environ}
        engine = sa.create_engine(normalize_url(database_url))
        logs = [workdir / f"worker{i}.log" for i in range(workers)]
        processes: list[subprocess.Popen] = []
        meter = CpuMeter({"connector": lambda: [psutil.Process(p.pid) for p in processes if p.poll() is None],
                          "PostgreSQL": postgres_processes, "emulators": lambda: [psutil.Process()]},
                         wall=time.monotonic)
        started = time.monotonic()  # the workers' start-up counts: an operator's drain includes it
        processes += [_start_worker(config_path, path, env) for path in logs]
        try:
            while (left := work_left(engine)) > 0:
                dead = [p for p in processes if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"connector worker {dead[0].pid} exited with {dead[0].returncode} "
                                       f"with {left} deliveries open; see {logs[processes.index(dead[0])]}")
                if time.monotonic() - started > DRAIN_TIMEOUT_S:
                    raise RuntimeError(f"{workers} worker(s): {left} deliveries still open after "
                                       f"{DRAIN_TIMEOUT_S} s; see {workdir}/worker*.log")
                time.sleep(0.2)
            seconds = time.monotonic() - started
            cpu = meter.sample()
        finally:
            _stop(processes, logs)
        with engine.connect() as connection:
            deliveries = dict(connection.execute(sa.text(
                "SELECT state, count(*) FROM deliveries GROUP BY state")).all())
        engine.dispose()
        hubspot_log = list(crms.hubspot.requests)
        salesforce_log = list(crms.salesforce.requests)
    arrivals = [r.at for r in hubspot_log]
    row = ScaleoutRow(
        workers=workers, threads_per_worker=config["worker"]["threads"], events=stored, seconds=seconds,
        hubspot_calls=Counter(call_kind(r.method, r.path) for r in hubspot_log),
        salesforce_calls=Counter(call_kind(r.method, r.path) for r in salesforce_log),
        http_429=sum(1 for r in [*hubspot_log, *salesforce_log] if r.status == 429),
        busiest_window=most_in_any_window(arrivals, HUBSPOT_LIMIT[1]),
        hubspot_active_s=(max(arrivals) - min(arrivals)) if len(arrivals) > 1 else 0.0,
        deliveries=deliveries, cpu=cpu)
    log(f"  scale-out {workers} worker(s): {stored} events in {seconds:.1f} s, {row.hubspot_requests} HubSpot + "
        f"{row.crm_calls - row.hubspot_requests} Salesforce calls ({row.calls_per_event:.4f} per event), "
        f"{row.http_429} x 429, busiest 10 s window {row.busiest_window}, {row.share_of_bound:.0%} of the "
        f"190/10 s bound ({row.share_while_sending:.0%} while sending); CPUs {cpu.machine_share:.0%} busy, "
        f"workers {cpu.per_event_ms('connector', stored):.2f} ms CPU per event")
    return row


def measure_scaleout(workdir: Path, schema: Callable[[], AbstractContextManager[str]], *, events: int,
                     worker_counts: tuple[int, ...], log: Callable[[str], None] = print) -> list[ScaleoutRow]:
    """`schema()` gives a fresh PostgreSQL URL per row (bench.__main__.postgres_schema)."""
    plan = build_plan(events, random.Random(7))
    log(f"  scale-out: a backlog of {len(plan.messages)} messages per row, workers {worker_counts}")
    rows = []
    for count in worker_counts:
        with schema() as url:
            rows.append(measure_one(workdir / f"scaleout-{count}", url, plan.messages, count, log=log))
    return rows


def parse_worker_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        counts = ()
    if not counts or any(count < 1 for count in counts):
        raise SystemExit(f"BENCH_SCALEOUT_WORKERS={text!r}: give worker counts separated by commas, e.g. 1,2,4")
    return counts
