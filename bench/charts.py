"""The status page's charts on a large ledger: 100,000 events over the last 7 days, two deliveries
each (HubSpot and Salesforce) and their attempts, then each chart's query
(connector/status/charts.py, what /status/charts runs) timed for each range: last hour, 24 h, 7 days.

Rows go straight into the ledger's tables in batches of 5,000 (the charts read no payload, so every
body is `{}`). Outcomes are drawn from a seeded generator, so every run holds the same ledger:
about 3% of deliveries dead (after two attempts), 1% still waiting, the rest delivered.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from connector.config import settings_from_mapping
from connector.ledger import create_ledger_engine
from connector.ledger.migrate import upgrade
from connector.ledger.models import Delivery, DeliveryAttempt, Event, utcnow
from connector.status import charts
from bench.marks import mark

TARGET_MS = 200.0
RUNS = 7  # each chart is timed this many times after one untimed run; the median and the slowest are kept
DESTINATIONS = ("hubspot", "salesforce")
BATCH = 5000


@dataclass
class ChartTiming:
    range: str
    chart: str
    timings_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.timings_ms)

    @property
    def slowest_ms(self) -> float:
        return max(self.timings_ms)


@dataclass
class ChartsResult:
    backend: str
    events: int
    deliveries: int
    attempts: int
    store_s: float
    timings: list[ChartTiming]
    first_view_ms: float

    @property
    def page_timings(self) -> list[ChartTiming]:
        return [t for t in self.timings if t.chart == "every chart of the page"]


def store_ledger(engine: sa.Engine, events: int, *, seed: int = 18) -> tuple[int, int]:
    """`events` events spread evenly over the last 7 days, with their deliveries and attempts."""
    rng = random.Random(seed)
    now = utcnow()
    start = now - timedelta(days=7)
    step = timedelta(days=7) / events
    event_rows, delivery_rows, attempt_rows = [], [], []
    delivery_id = attempts = 0

    def flush() -> None:
        with engine.begin() as connection:
            for table, rows in ((Event.__table__, event_rows), (Delivery.__table__, delivery_rows),
                                (DeliveryAttempt.__table__, attempt_rows)):
                if rows:
                    connection.execute(sa.insert(table), rows)
                    rows.clear()

    for i in range(events):
        received = start + step * i
        event_rows.append({"id": i + 1, "message_id": f"msg_chart_{i}", "received_at": received,
                           "resource_type": "review", "topic": "create", "resource_id": f"review-{i:06d}",
                           "state": "planned", "headers": {}, "body": b"{}", "origin": "webhook"})
        for position, destination in enumerate(DESTINATIONS):
            delivery_id += 1
            roll = rng.random()
            state = "pending" if roll < 0.01 and received > now - timedelta(hours=2) else \
                "dead" if roll < 0.04 else "delivered"
            created = received + timedelta(milliseconds=200)
            tries = 0 if state == "pending" else 2 if state == "dead" else 1
            moment = created
            for _ in range(tries):
                moment += timedelta(seconds=rng.uniform(0.2, 20))
                took = rng.randint(40, 900)
                attempt_rows.append({"delivery_id": delivery_id, "started_at": moment, "duration_ms": took,
                                     "outcome": "retry" if state == "dead" and _ == 0 else state})
                moment += timedelta(milliseconds=took)
                attempts += 1
            delivery_rows.append({"id": delivery_id, "event_id": i + 1, "mapping": f"{destination}_contact",
                                  "destination": destination, "state": state, "attempts": tries,
                                  "created_at": created, "updated_at": moment, "position": position,
                                  "resource_type": "review", "resource_id": f"review-{i:06d}"})
        if len(event_rows) >= BATCH:
            flush()
    flush()
    return delivery_id, attempts


def _page(engine: sa.Engine, name: str) -> None:
    """What /status/charts?range=NAME computes: every chart's figures, drawn."""
    chosen = charts.RANGES[name]
    charts.render(charts.all_charts(engine, chosen, list(DESTINATIONS)), chosen)


def measure_charts(backend: str, database_url: str, *, events: int, log: Callable[[str], None]) -> ChartsResult:
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": database_url}}, environ={}))
    upgrade(engine)
    started = time.monotonic()
    deliveries, attempts = store_ledger(engine, events)
    store_s = time.monotonic() - started
    log(f"  stored {events:,} events, {deliveries:,} deliveries and {attempts:,} attempts in {store_s:.1f} s")
    if backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does on a live ledger
    # The first view of the week after the upgrade counts and keeps every closed quarter-hour of it.
    begun = time.perf_counter()
    _page(engine, "7d")
    first_view_ms = (time.perf_counter() - begun) * 1000
    log(f"  first view of 7 days (counts and keeps {7 * 96} quarter-hours): {first_view_ms:.0f} ms")
    timings = []
    for name in charts.RANGES:
        timing = ChartTiming(name, "every chart of the page")
        _page(engine, name)  # warm: the first run reads pages into the cache
        for _ in range(RUNS):
            begun = time.perf_counter()
            _page(engine, name)
            timing.timings_ms.append((time.perf_counter() - begun) * 1000)
        timings.append(timing)
        log(f"  {name}: median {timing.median_ms:.1f} ms, slowest {timing.slowest_ms:.1f} ms")
    # The charts' queries on the ledger's rows alone, as the last hour always runs them and as the
    # open quarter-hours of the longer ranges do, for the whole range: what the kept counts save.
    with engine.connect() as connection:
        for name in ("24h", "7d"):
            window = charts.Window.ending(charts.RANGES[name], utcnow())
            timing = ChartTiming(name, "every chart from the ledger's rows alone (not what the page runs)")
            for _ in range(3):
                begun = time.perf_counter()
                charts.raw_figures(connection, window, list(DESTINATIONS))
                timing.timings_ms.append((time.perf_counter() - begun) * 1000)
            timings.append(timing)
            log(f"  {name} from the rows alone: median {timing.median_ms:.1f} ms")
    engine.dispose()
    return ChartsResult(backend, events, deliveries, attempts, store_s, timings, first_view_ms)



def charts_targets(results: list[ChartsResult]) -> list[str]:
    """Rows for the report's targets table."""
    lines = []
    for r in results:
        slowest = max(r.page_timings, key=lambda t: t.slowest_ms)
        lines.append(f"| {r.backend}: every chart over {r.events:,} events answers in < {TARGET_MS:.0f} ms "
                     f"| all of a page's charts together: slowest {slowest.slowest_ms:.1f} ms ({slowest.range}) "
                     f"| {mark(slowest.slowest_ms < TARGET_MS)} |")
    return lines


def charts_section(results: list[ChartsResult]) -> list[str]:
    if not results:
        return []
    ranges = list(charts.RANGES)
    lines = [
        "## Charts",
        "",
        f"{results[0].events:,} events over the last 7 days with {results[0].deliveries:,} deliveries and "
        f"{results[0].attempts:,} attempts, stored straight into the ledger. Timed: what `/status/charts` "
        f"computes for each range (every chart's figures, drawn as SVG), {RUNS} times after one untimed run, "
        "median / slowest ms; the first view of the 7 days, which counts and keeps every closed quarter-hour; "
        "and, for comparison, every figure counted from the ledger's rows alone. PostgreSQL is VACUUM ANALYZEd "
        "first, as autovacuum would have; SQLite is not.",
        "",
        "| ledger | what | " + " | ".join(charts.RANGES[name].words for name in ranges) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in ranges) + " |",
    ]
    for r in results:
        for chart in dict.fromkeys(t.chart for t in r.timings):
            cells = []
            for name in ranges:
                timing = next((t for t in r.timings if t.chart == chart and t.range == name), None)
                cells.append(f"{timing.median_ms:.1f} / {timing.slowest_ms:.1f}" if timing else "–")
            lines.append(f"| {r.backend} | {chart} | " + " | ".join(cells) + " |")
        lines.append(f"| {r.backend} | first view of the week (counts and keeps it) | – | – | {r.first_view_ms:.0f} |")
    return lines + [""]
