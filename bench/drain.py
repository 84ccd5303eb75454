"""Drain: a standing backlog of mixed events delivered by gunicorn's embedded delivery threads
into both CRM emulators, with realistic latency and HubSpot's rate limit.

The backlog is stored as the receiver stores it (classified, one row per message id; Svix
redeliveries recorded once), then the server starts and drains it. Measured: time to drain,
API calls per event (per CRM and per kind of call), 429s received, and the peak resident
memory of every gunicorn worker, sampled four times a second.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import sqlalchemy as sa

from bench.cpu import CpuMeter, CpuUsage, postgres_processes
from connector.config import settings_from_mapping
from connector.ledger import IncomingEvent, create_ledger_engine
from connector.ledger.database import normalize_url
from connector.ledger.events import record_events
from connector.ledger.migrate import upgrade
from connector.receiver.envelope import classify
from tests.crm import PROJECT_ROOT, crm_emulators
from tests.servers import gunicorn
from tests.workload import build_plan, work_left

HUBSPOT_LIMIT = (190, 10.0)  # HubSpot Professional/Enterprise private apps: 190 requests per 10 s
LATENCY_S = (0.05, 0.15)  # every emulated CRM call takes 50-150 ms


@dataclass
class DrainResult:
    backend: str
    events: int
    seconds: float
    deliveries: dict[str, int]
    hubspot_calls: Counter
    salesforce_calls: Counter
    http_429: int
    worker_peak_rss_mb: dict[int, float] = field(default_factory=dict)
    master_peak_rss_mb: float = 0.0
    cpu: CpuUsage | None = None  # the machine's and each part's CPU over the drain (bench/cpu.py)

    @property
    def crm_calls(self) -> int:
        return sum(self.hubspot_calls.values()) + sum(self.salesforce_calls.values())

    @property
    def calls_per_event(self) -> float:
        return self.crm_calls / self.events

    @property
    def rate_limit_floor_s(self) -> float:
        """How long HubSpot's limit alone makes these HubSpot calls take, sent back to back."""
        requests, per_seconds = HUBSPOT_LIMIT
        return sum(self.hubspot_calls.values()) * per_seconds / requests


def store_backlog(database_url: str, messages: list[tuple[str, bytes]]) -> int:
    """Store the messages as the receiver would (a redelivered id is recorded once)."""
    settings = settings_from_mapping({"database": {"url": database_url}}, environ={})
    engine = create_ledger_engine(settings)
    upgrade(engine)
    incomings = []
    for message_id, body in messages:
        envelope = classify(body)
        incomings.append(IncomingEvent(
            message_id=message_id, body=body, headers={"webhook-id": message_id, "content-type": "application/json"},
            state=envelope.state, state_reason=envelope.reason, resource_type=envelope.resource_type,
            topic=envelope.topic, resource_id=envelope.resource_id, sequence_number=envelope.sequence_number,
            customer_email=envelope.customer_email, verified_by_secret=0))
    for start in range(0, len(incomings), 1000):
        record_events(engine, incomings[start:start + 1000])
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    engine.dispose()
    return stored


def call_kind(method: str, path: str) -> str:
    """A short name for a CRM call: the object and the operation, without ids."""
    parts = [part for part in path.split("/") if part and not any(ch.isdigit() for ch in part[-3:])]
    return f"{method} /{'/'.join(parts[-4:])}"


class _RssSampler(threading.Thread):
    def __init__(self, master_pid: int):
        super().__init__(daemon=True)
        self.master = psutil.Process(master_pid)
        self.peaks: dict[int, float] = {}
        self.master_peak = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.25):
            try:
                self.master_peak = max(self.master_peak, self.master.memory_info().rss / 2**20)
                for child in self.master.children():
                    rss = child.memory_info().rss / 2**20
                    self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), rss)
            except psutil.Error:
                continue

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure_drain(workdir: Path, backend: str, database_url: str, *, events: int, log=print) -> DrainResult:
    workdir.mkdir(parents=True)
    plan = build_plan(events, random.Random(7))
    stored = store_backlog(database_url, plan.messages)
    log(f"  drain {backend}: backlog of {stored} events stored ({len(plan.messages)} messages)")
    with crm_emulators(workdir, hubspot_rate_limit=HUBSPOT_LIMIT, latency=LATENCY_S) as crms:
        config = {
            "database": {"url": database_url},
            "receiver": {"secrets": "${OKENDO_WEBHOOK_SECRETS}"},
            # The shipped settings: HubSpot at 170 per 10 s (a margin under 190), Salesforce at
            # 4 concurrent requests, 2 delivery threads per gunicorn worker, batches of 200.
            "destinations": crms.destinations(hubspot={"rate_limit": {"requests": 170, "per_seconds": 10}},
                                              salesforce={"rate_limit": {"max_concurrency": 4}}),
            "mappings": {"files": [str(PROJECT_ROOT / "mappings" / "hubspot.yaml"),
                                   str(PROJECT_ROOT / "mappings" / "salesforce.yaml")]},
            "worker": {"threads": 2, "batch_size": 200, "poll_interval_s": 1.0},
        }
        env = {"OKENDO_WEBHOOK_SECRETS": "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "LOG_LEVEL": "warning",
               **crms.environ}
        engine = sa.create_engine(normalize_url(database_url))
        started = time.monotonic()  # the server's start-up counts: its workers begin at once
        with gunicorn(workdir, config, env=env) as server:
            sampler = _RssSampler(server.process.pid)
            sampler.start()
            master = psutil.Process(server.process.pid)
            parts = {"connector": lambda: [master, *master.children()]}
            if backend == "postgresql":
                parts["PostgreSQL"] = postgres_processes
            meter = CpuMeter({**parts, "emulators": lambda: [psutil.Process()]}, wall=time.monotonic)
            deadline = started + 900
            while (left := work_left(engine)) > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left} deliveries still open after 15 minutes:\n{server.log()[-3000:]}")
                time.sleep(0.2)
            seconds = time.monotonic() - started
            cpu = meter.sample()
            sampler.stop()
        with engine.connect() as connection:
            deliveries = dict(connection.execute(sa.text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())
        engine.dispose()
        hubspot = Counter(call_kind(r.method, r.path) for r in crms.hubspot.requests)
        salesforce = Counter(call_kind(r.method, r.path) for r in crms.salesforce.requests)
        too_many = sum(1 for r in [*crms.hubspot.requests, *crms.salesforce.requests] if r.status == 429)
    result = DrainResult(backend, stored, seconds, deliveries, hubspot, salesforce, too_many,
                         sampler.peaks, sampler.master_peak, cpu)
    log(f"  drain {backend}: {seconds:.1f} s, {result.crm_calls} CRM calls ({result.calls_per_event:.4f} per event), "
        f"{too_many} x 429, CPUs {cpu.machine_share:.0%} busy, peak worker RSS {max(sampler.peaks.values(), default=0):.0f} MB, deliveries {deliveries}")
    return result
