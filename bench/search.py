"""Search in payloads: 100,000 events in a ledger, indexed as the worker indexes them, then the
events list's query (connector.status.queries.list_events, what the page and /api/events run)
timed for several searches: a rare word, a common one, a common one with a topic and a state,
the second page of a common one, a name and an order number.

The events go into the ledger's table in big batches (as the receiver stores them, without HTTP);
every payload is a review of the shipped sample's shape with its own reviewer, order number and
body, drawn from a fixed vocabulary so the counts are the same on every run.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from connector.config import settings_from_mapping
from connector.ledger import create_ledger_engine, search
from connector.ledger.migrate import upgrade
from connector.ledger.models import Event, utcnow
from connector.samples import sample_bytes
from connector.status.queries import PAGE_SIZE, EventFilter, list_events
from bench.marks import mark

TARGET_MS = 200.0
RUNS = 7  # each search is timed this many times after one untimed run; the median and the slowest are kept

RARE = "zanzibar"  # in one event's body
COMMON = "comfortable"  # in nine bodies of ten
_WORDS = ("soft warm itchy sturdy lovely faded stretched colour fit size sleeve collar button zip seam wash "
          "gift quality price delivery parcel fabric wool cotton lining pocket hood scarf sweater boots").split()
_FIRST = "Harriet Omar Zoe Priya Tomasz Aiko Mateo Chiara Kwame Ingrid Lucas Amara Noor Felix Greta".split()
_LAST = "Quill Lindqvist Marchetti Okafor Nakamura Brennan Sato Moreau Haddad Kowalski Byrne Silva".split()
_TOPICS = (("review", "create", 0.5), ("review", "update", 0.35), ("review", "delete", 0.15))


@dataclass
class SearchTiming:
    name: str
    selection: EventFilter
    rows: int = 0
    timings_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.timings_ms)

    @property
    def slowest_ms(self) -> float:
        return max(self.timings_ms)


@dataclass
class SearchResult:
    backend: str
    events: int
    store_s: float
    index_s: float
    idle_pass_ms: float  # a worker pass's indexing step with nothing left to index
    index_rows: int
    searches: list[SearchTiming]


def _body(rng: random.Random, i: int, template: dict) -> bytes:
    document = json.loads(json.dumps(template))
    resource = document["resource"]
    words = rng.sample(_WORDS, 8)
    if rng.random() < 0.9:
        words.insert(rng.randrange(len(words)), COMMON)
    body = " ".join(words).capitalize() + "."
    if i == 50_000:
        body += f" Shipped all the way to {RARE.capitalize()}."
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    resource.update(reviewId=f"review-{i:06d}", body=body, productName=f"Product {i % 500}", rating=rng.randint(1, 5))
    resource["order"] = {"orderId": str(5_800_000_000_000 + i), "orderNumber": f"#{100_000 + i}"}
    resource["reviewer"].update(name=f"{first} {last}", displayName=f"{first} {last[0]}.",
                                email=f"{first.lower()}.{last.lower()}.{i}@example.com")
    document["sequenceNumber"] = str(4_100_000_000 + i)
    return json.dumps(document).encode()


def store_events(engine: sa.Engine, events: int, *, seed: int = 15) -> None:
    """`events` reviews straight into the events table, newest last, in batches of 5,000."""
    rng = random.Random(seed)
    template = json.loads(sample_bytes("review.create"))
    table = Event.__table__
    start = utcnow() - timedelta(days=30)
    rows = []
    for i in range(events):
        resource_type, topic = "review", rng.choices([t[1] for t in _TOPICS], [t[2] for t in _TOPICS])[0]
        body = _body(rng, i, template)
        rows.append({
            "message_id": f"msg_bench_{i}", "received_at": start + timedelta(seconds=i * 25),
            "webhook_timestamp": None, "resource_type": resource_type, "topic": topic,
            "resource_id": f"review-{i:06d}", "sequence_number": str(4_100_000_000 + i),
            "customer_email": json.loads(body)["resource"]["reviewer"]["email"],
            "state": "planned" if rng.random() < 0.8 else "unmapped", "state_reason": None,
            "verified_by_secret": 1, "headers": {}, "body": body, "origin": "webhook"})
        if len(rows) == 5000:
            with engine.begin() as connection:
                connection.execute(sa.insert(table), rows)
            rows = []
    if rows:
        with engine.begin() as connection:
            connection.execute(sa.insert(table), rows)


def _searches(engine: sa.Engine) -> list[SearchTiming]:
    with engine.connect() as connection:
        _, second_page = list_events(connection, EventFilter(search=COMMON))
    return [
        SearchTiming("rare word (1 event)", EventFilter(search=RARE)),
        SearchTiming("common word (9 in 10 events), first page", EventFilter(search=COMMON)),
        SearchTiming("common word, second page", EventFilter(search=COMMON, before=second_page)),
        SearchTiming("common word + topic review.update + state unmapped",
                     EventFilter(search=COMMON, topic="review.update", state="unmapped")),
        SearchTiming("reviewer's name (two words)", EventFilter(search="Priya Nakamura")),
        SearchTiming("order number", EventFilter(search="#123456")),
        SearchTiming("a word in no payload", EventFilter(search="xylophone")),
    ]


def _time(engine: sa.Engine, timing: SearchTiming) -> None:
    with engine.connect() as connection:
        rows, _ = list_events(connection, timing.selection)  # warm: the first run reads pages into the cache
        timing.rows = len(rows)
        for _ in range(RUNS):
            started = time.perf_counter()
            list_events(connection, timing.selection)
            timing.timings_ms.append((time.perf_counter() - started) * 1000)


def measure_search(backend: str, database_url: str, *, events: int, log: Callable[[str], None]) -> SearchResult:
    engine = create_ledger_engine(settings_from_mapping({"database": {"url": database_url}}, environ={}))
    upgrade(engine)
    started = time.monotonic()
    store_events(engine, events)
    store_s = time.monotonic() - started
    log(f"  stored {events:,} events in {store_s:.1f} s; indexing")
    started = time.monotonic()
    # As a worker would, pass after pass; `now` far ahead lets PostgreSQL's mark settle at once.
    later = utcnow() + timedelta(seconds=search.SETTLE_S * 2)
    while search.index_pending(engine, now=later):
        pass
    index_s = time.monotonic() - started
    if backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE")  # what autovacuum does on a live ledger
    started = time.perf_counter()
    search.index_pending(engine, now=later)
    idle_ms = (time.perf_counter() - started) * 1000
    with engine.connect() as connection:
        index_rows = search.indexed_count(connection)
    log(f"  indexed {index_rows:,} in {index_s:.1f} s ({index_rows / index_s:,.0f} events/s); "
        f"an idle pass {idle_ms:.1f} ms")
    timings = _searches(engine)
    for timing in timings:
        _time(engine, timing)
        log(f"  {timing.name}: {timing.rows} row(s), median {timing.median_ms:.1f} ms, "
            f"slowest {timing.slowest_ms:.1f} ms")
    engine.dispose()
    return SearchResult(backend, events, store_s, index_s, idle_ms, index_rows, timings)



def search_targets(results: list[SearchResult]) -> list[str]:
    """Rows for the report's targets table."""
    lines = []
    for r in results:
        slowest = max(r.searches, key=lambda t: t.slowest_ms)
        lines.append(f"| {r.backend}: every search over {r.events:,} events answers in < {TARGET_MS:.0f} ms "
                     f"| slowest {slowest.slowest_ms:.1f} ms ({slowest.name}) "
                     f"| {mark(slowest.slowest_ms < TARGET_MS)} |")
    return lines


def search_section(results: list[SearchResult]) -> list[str]:
    if not results:
        return []
    lines = [
        "## Search in payloads",
        "",
        f"{results[0].events:,} reviews stored straight into the ledger, indexed by the worker's indexing step "
        f"(`connector.ledger.search.index_pending`, {search.INDEX_BATCH} a pass), then the events list's query "
        f"(`list_events`, {PAGE_SIZE} a page, newest first) timed {RUNS} times per search after one untimed run. "
        "PostgreSQL is ANALYZEd first, as autovacuum would have.",
        "",
        "| ledger | stored in | indexed in | events/s | idle indexing pass | index rows |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r.backend} | {r.store_s:.1f} s | {r.index_s:.1f} s | {r.index_rows / r.index_s:,.0f} "
                     f"| {r.idle_pass_ms:.1f} ms | {r.index_rows:,} |")
    lines += ["", "| ledger | search | rows | median ms | slowest ms |", "| --- | --- | ---: | ---: | ---: |"]
    for r in results:
        for t in r.searches:
            lines.append(f"| {r.backend} | {t.name} | {t.rows} | {t.median_ms:.1f} | {t.slowest_ms:.1f} |")
    return [*lines, ""]
