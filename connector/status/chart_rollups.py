"""The charts' figures per 15 minutes, kept once counted: a 24-hour or 7-day chart reads the few
hundred rows of chart_buckets instead of every event, delivery and attempt of the range.

An interval is counted the first time a chart needs it, once it has closed for LAG (an attempt is
written when its CRM call ends, so its row can arrive after its start's interval has ended): the
page asking for it counts what is missing, in one bucketed query per figure over the missing span,
and stores it (INSERT ... ON CONFLICT DO NOTHING, so two pages counting at once store it once). Only
the first view after an upgrade counts a whole range; after that, a page counts the intervals closed
since the previous view. What is still open is counted from the ledger every time.

A kept interval is not counted again: a delivery replayed later stays counted where it was
delivered or failed first, which is what happened then. Intervals older than KEEP are dropped.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from connector.ledger.database import write_transaction
from connector.ledger.models import ChartBucket, DeliveryState

BASE = timedelta(minutes=15)
LAG = timedelta(minutes=2)
KEEP = timedelta(days=8)

# Created by migration 0013; declared with the ledger's other tables.
buckets = ChartBucket.__table__


def closed_count(starts: list[datetime], now: datetime) -> int:
    """How many of these 15-minute intervals (oldest first) have closed for LAG."""
    return sum(1 for start in starts if start + BASE + LAG <= now)


def _insert(connection: Connection, rows: list[dict]) -> None:
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(dialect.insert(buckets).on_conflict_do_nothing(), rows)


def missing(connection: Connection, starts: list[datetime]) -> list[datetime]:
    if not starts:
        return []
    b = buckets.c
    counted = set(connection.execute(select(b.bucket_start).where(
        b.series == "counted", b.destination == "", b.bucket_start >= starts[0], b.bucket_start <= starts[-1])).scalars())
    return [start for start in starts if start not in counted]


def _spans(starts: list[datetime]) -> list[tuple[datetime, int]]:
    """Consecutive runs of intervals as (first start, how many)."""
    spans: list[tuple[datetime, int]] = []
    for start in starts:
        if spans and spans[-1][0] + BASE * spans[-1][1] == start:
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        else:
            spans.append((start, 1))
    return spans


def fill(engine: Engine, starts: list[datetime], names: list[str], now: datetime) -> int:
    """Count and keep those closed intervals not kept yet; how many were counted."""
    from connector.status import charts  # the bucketed queries; charts imports this module

    with engine.connect() as connection:
        todo = missing(connection, starts)
    if not todo:
        return 0
    with write_transaction(engine) as connection:
        for first, count in _spans(todo):
            window = charts.Window(first, BASE, count, now)
            figures = charts.raw_figures(connection, window, names)
            rows: list[dict] = []
            for i, start in enumerate(window.starts):
                def add(series: str, value: float, destination: str = "", total: float | None = None,
                        peak: float | None = None) -> None:
                    if value:
                        rows.append({"series": series, "destination": destination, "bucket_start": start,
                                     "count": int(value), "total": total, "peak": peak})
                add("events", figures.events[i])
                add("joined", figures.joined[i])
                add("left", figures.left[i], peak=figures.longest_left[i])
                for name, states in figures.outcomes.items():
                    add("delivered", states[DeliveryState.DELIVERED][i], name)
                    add("dead", states[DeliveryState.DEAD][i], name)
                for name, lines in figures.latency.items():
                    if lines["calls"][i]:
                        add("latency", lines["calls"][i], name, total=lines["sum_ms"][i], peak=lines["max_ms"][i])
                rows.append({"series": "counted", "destination": "", "bucket_start": start, "count": 1,
                             "total": None, "peak": None})
            _insert(connection, rows)
        connection.execute(delete(buckets).where(buckets.c.bucket_start < now - KEEP))
    return len(todo)


def read(connection: Connection, window, names: list[str]):  # type: ignore[no-untyped-def]
    """The kept figures of every interval of a window of 15-minute intervals (all closed)."""
    from connector.status import charts

    figures = charts.Figures.empty(window.count, names)
    if not window.count:
        return figures
    b = buckets.c
    index = {start: i for i, start in enumerate(window.starts)}
    for series, destination, start, count, total, peak in connection.execute(
            select(b.series, b.destination, b.bucket_start, b.count, b.total, b.peak)
            .where(b.bucket_start >= window.starts[0], b.bucket_start <= window.starts[-1], b.series != "counted")):
        i = index.get(start)
        if i is None:
            continue
        if series == "events":
            figures.events[i] = count
        elif series == "joined":
            figures.joined[i] = count
        elif series == "left":
            figures.left[i], figures.longest_left[i] = count, peak or 0.0
        elif series in ("delivered", "dead"):
            figures.outcomes.setdefault(destination, charts.Figures.no_outcomes(window.count))[series][i] = count
        elif series == "latency":
            lines = figures.latency.setdefault(destination, charts.Figures.no_latency(window.count))
            lines["calls"][i], lines["sum_ms"][i], lines["max_ms"][i] = count, total, peak
    return figures
