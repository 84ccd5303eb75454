"""The status page's charts: events received, deliveries delivered and failed per destination,
CRM call latency, queue depth and the oldest waiting delivery, over the last hour, 24 hours or
7 days.

Every figure is counted by the database with bucketed queries over one range of an index (migration
0013 adds those the ledger lacked). The last hour is counted from the ledger's rows on every view;
24 hours and 7 days add up the kept counts of closed 15-minute intervals (connector/status/chart_rollups.py)
and count only the open ones, so a chart costs about the same on a ledger of any size
(bench/charts.py times each one on 100,000 events, on SQLite and PostgreSQL).

The ledger keeps no history of its queue, so its depth and its oldest waiting delivery are worked out
from the deliveries themselves: a delivery joined the queue when it was created and left it when it
reached a final state (delivered, dead, stale, skipped: its updated_at). Depth at the end of an
interval is today's depth, less what joined since, plus what left since. The oldest waiting delivery
in an interval is the longest any delivery had waited, among those that left the queue in it and
those still waiting. A delivery replayed since is counted by its latest journey only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import abort, render_template, request
from sqlalchemy import Connection, Engine, Integer, cast, func, literal, select

from connector.ledger.models import Delivery, DeliveryAttempt, DeliveryState, DestinationStatus, Event, utcnow
from connector.runtime import runtime
from connector.status import chart_rollups
from connector.status.auth import require_auth
from connector.status.chart_svg import Series, chart, duration
from connector.status.views import bp

_events, _deliveries, _attempts = Event.__table__, Delivery.__table__, DeliveryAttempt.__table__
FINAL = (DeliveryState.DELIVERED, DeliveryState.DEAD, DeliveryState.STALE, DeliveryState.SKIPPED)
ALL_STATES = DeliveryState.DUE + FINAL


@dataclass(frozen=True)
class Range:
    name: str
    words: str
    width: timedelta  # one bar or point
    count: int  # how many


RANGES = {r.name: r for r in (Range("1h", "last hour", timedelta(minutes=1), 60),
                              Range("24h", "last 24 hours", timedelta(minutes=15), 96),
                              Range("7d", "last 7 days", timedelta(hours=2), 84))}


@dataclass(frozen=True)
class Window:
    """`count` intervals of `width` ending with the one that holds `now`, aligned on round times."""

    start: datetime
    width: timedelta
    count: int
    now: datetime

    @classmethod
    def ending(cls, chosen: Range, now: datetime) -> Window:
        width_s = int(chosen.width.total_seconds())
        end = (int(now.timestamp()) // width_s + 1) * width_s
        start = datetime.fromtimestamp(end - width_s * chosen.count, tz=timezone.utc)
        return cls(start, chosen.width, chosen.count, now)

    @property
    def starts(self) -> list[datetime]:
        return [self.start + self.width * i for i in range(self.count)]

    def ends(self) -> list[datetime]:
        """Each interval's end, the last one cut at now."""
        return [min(self.start + self.width * (i + 1), self.now) for i in range(self.count)]


def _epoch(connection: Connection, column: Any) -> Any:
    """Seconds since 1970 of a timestamp column, in SQL. SQLite keeps UTC as text that strftime reads
    (https://www.sqlite.org/lang_datefunc.html); PostgreSQL has extract(epoch)
    (https://www.postgresql.org/docs/current/functions-datetime.html#FUNCTIONS-DATETIME-EXTRACT)."""
    if connection.dialect.name == "sqlite":
        return cast(func.strftime("%s", column), Integer)
    return func.extract("epoch", column)


def _bucket(connection: Connection, column: Any, window: Window) -> Any:
    """Which interval of the window a timestamp falls in (0 for the first)."""
    offset = _epoch(connection, column) - literal(int(window.start.timestamp()))
    width = int(window.width.total_seconds())
    if connection.dialect.name == "sqlite":
        return cast(offset / width, Integer).label("bucket")  # integer division of integers; offsets are >= 0
    return cast(func.floor(offset / width), Integer).label("bucket")


def _in_window(column: Any, window: Window) -> list[Any]:
    return [column >= window.start, column < window.start + window.width * window.count]


def events_received(connection: Connection, window: Window) -> list[int]:
    """Events stored per interval (ix_events_received_at)."""
    e = _events
    bucket = _bucket(connection, e.c.received_at, window)
    counts = [0] * window.count
    for index, number in connection.execute(
            select(bucket, func.count()).where(*_in_window(e.c.received_at, window)).group_by(bucket)):
        if 0 <= index < window.count:
            counts[index] = number
    return counts


def destinations(connection: Connection, configured: list[str]) -> list[str]:
    """The configured destinations and every one the workers reported on (a destination removed from
    the configuration still has deliveries to show)."""
    reported = connection.execute(select(DestinationStatus.__table__.c.destination)).scalars()
    return sorted(set(configured) | set(reported))


def outcomes(connection: Connection, window: Window, names: list[str]) -> dict[str, dict[str, list[int]]]:
    """Per destination, deliveries that reached delivered and dead in each interval, by when they did
    (ix_deliveries_destination_state_updated_at)."""
    d = _deliveries
    bucket = _bucket(connection, d.c.updated_at, window)
    result = {name: {DeliveryState.DELIVERED: [0] * window.count, DeliveryState.DEAD: [0] * window.count}
              for name in names}
    if not names:
        return result
    query = (select(d.c.destination, d.c.state, bucket, func.count())
             .where(d.c.destination.in_(names), d.c.state.in_((DeliveryState.DELIVERED, DeliveryState.DEAD)),
                    *_in_window(d.c.updated_at, window))
             .group_by(d.c.destination, d.c.state, bucket))
    for name, state, index, number in connection.execute(query):
        if 0 <= index < window.count:
            result[name][state][index] = number
    return result


def latency(connection: Connection, window: Window) -> dict[str, dict[str, list[Any]]]:
    """Per destination and interval: CRM calls (attempts), their summed and longest duration in ms
    (ix_delivery_attempts_started_at, then each attempt's delivery by its primary key)."""
    a, d = _attempts, _deliveries
    bucket = _bucket(connection, a.c.started_at, window)
    query = (select(d.c.destination, bucket, func.count(), func.sum(a.c.duration_ms), func.max(a.c.duration_ms))
             .select_from(a.join(d, d.c.id == a.c.delivery_id))
             .where(*_in_window(a.c.started_at, window), a.c.duration_ms.is_not(None))
             .group_by(d.c.destination, bucket))
    result: dict[str, dict[str, list[Any]]] = {}
    for name, index, calls, total, longest in connection.execute(query):
        if 0 <= index < window.count:
            lines = result.setdefault(name, Figures.no_latency(window.count))
            lines["calls"][index], lines["sum_ms"][index], lines["max_ms"][index] = calls, float(total), float(longest)
    return result


def flows(connection: Connection, window: Window, names: list[str]) -> tuple[list[int], list[int], list[float]]:
    """Per interval: deliveries that joined the queue (created; ix_deliveries_state_created_at), those that
    left it (reached a final state; ix_deliveries_destination_state_updated_at) and the longest any of
    those had waited, in seconds."""
    d = _deliveries
    n = window.count
    joined, left, longest = [0] * n, [0] * n, [0.0] * n
    created = _bucket(connection, d.c.created_at, window)
    for index, number in connection.execute(
            select(created, func.count()).where(d.c.state.in_(ALL_STATES), *_in_window(d.c.created_at, window))
            .group_by(created)):
        if 0 <= index < n:
            joined[index] = number
    if names:
        finished = _bucket(connection, d.c.updated_at, window)
        waited = func.max(_epoch(connection, d.c.updated_at) - _epoch(connection, d.c.created_at))
        for index, number, wait in connection.execute(
                select(finished, func.count(), waited)
                .where(d.c.destination.in_(names), d.c.state.in_(FINAL), *_in_window(d.c.updated_at, window))
                .group_by(finished)):
            if 0 <= index < n:
                left[index], longest[index] = number, float(wait or 0)
    return joined, left, longest


@dataclass
class Figures:
    """Everything the charts show, one value per interval of a window."""

    events: list[int]
    outcomes: dict[str, dict[str, list[int]]]
    latency: dict[str, dict[str, list[Any]]]  # calls, sum_ms, max_ms (None: no call then)
    joined: list[int]
    left: list[int]
    longest_left: list[float]

    @staticmethod
    def no_outcomes(n: int) -> dict[str, list[int]]:
        return {DeliveryState.DELIVERED: [0] * n, DeliveryState.DEAD: [0] * n}

    @staticmethod
    def no_latency(n: int) -> dict[str, list[Any]]:
        return {"calls": [None] * n, "sum_ms": [None] * n, "max_ms": [None] * n}

    @classmethod
    def empty(cls, n: int, names: list[str]) -> Figures:
        return cls([0] * n, {name: cls.no_outcomes(n) for name in names}, {}, [0] * n, [0] * n, [0.0] * n)

    def __len__(self) -> int:
        return len(self.events)

    def then(self, other: Figures) -> Figures:
        """These intervals followed by the other's."""
        n, m = len(self), len(other)

        def joined_dicts(mine: dict, theirs: dict, blank: Any) -> dict:
            return {name: {key: mine.get(name, blank(n))[key] + theirs.get(name, blank(m))[key] for key in blank(0)}
                    for name in sorted(set(mine) | set(theirs))}
        return Figures(self.events + other.events, joined_dicts(self.outcomes, other.outcomes, self.no_outcomes),
                       joined_dicts(self.latency, other.latency, self.no_latency), self.joined + other.joined,
                       self.left + other.left, self.longest_left + other.longest_left)

    def grouped(self, size: int) -> Figures:
        """Every `size` consecutive intervals as one: counts and sums added, longest kept."""
        def add(values: list[Any]) -> list[Any]:
            out = []
            for i in range(0, len(values), size):
                part = [v for v in values[i:i + size] if v is not None]
                out.append(sum(part) if part else None)
            return out

        def peak(values: list[Any]) -> list[Any]:
            return [max([v for v in values[i:i + size] if v is not None], default=None)
                    for i in range(0, len(values), size)]
        zero = [0 if v is None else v for v in add(self.events)]
        return Figures(zero, {name: {state: add(values) for state, values in states.items()}
                              for name, states in self.outcomes.items()},
                       {name: {"calls": add(lines["calls"]), "sum_ms": add(lines["sum_ms"]),
                               "max_ms": peak(lines["max_ms"])} for name, lines in self.latency.items()},
                       add(self.joined), add(self.left), [v or 0.0 for v in peak(self.longest_left)])


def raw_figures(connection: Connection, window: Window, names: list[str]) -> Figures:
    """Counted from the ledger's rows, one query per figure."""
    joined, left, longest = flows(connection, window, names)
    return Figures(events_received(connection, window), outcomes(connection, window, names),
                   latency(connection, window), joined, left, longest)


def figures(engine: Engine, window: Window, names: list[str]) -> Figures:
    """A window's figures: short intervals counted from the ledger; 15-minute multiples from the kept
    counts of closed intervals (chart_rollups) and the ledger for the open ones."""
    if window.width < chart_rollups.BASE or window.width % chart_rollups.BASE:
        with engine.connect() as connection:
            return raw_figures(connection, window, names)
    size = window.width // chart_rollups.BASE
    base = Window(window.start, chart_rollups.BASE, window.count * size, window.now)
    closed = chart_rollups.closed_count(base.starts, window.now)
    chart_rollups.fill(engine, base.starts[:closed], names, window.now)
    with engine.connect() as connection:
        kept = chart_rollups.read(connection, Window(base.start, base.width, closed, window.now), names)
        rest = raw_figures(connection, Window(base.start + base.width * closed, base.width, base.count - closed,
                                              window.now), names)
    return kept.then(rest).grouped(size)


def queue(connection: Connection, window: Window, found: Figures) -> dict[str, list[float | None]]:
    """Deliveries waiting (pending or retrying) at the end of each interval, and the oldest wait then
    in seconds: see the module's docstring for how."""
    d = _deliveries
    n = window.count
    due = d.c.state.in_(DeliveryState.DUE)
    due_now = connection.execute(select(func.count()).where(due)).scalar_one()
    # The oldest delivery still waiting among those created by each interval's end (ix_deliveries_state_created_at).
    oldest_before = connection.execute(select(func.min(d.c.created_at)).where(due, d.c.created_at < window.start)
                                       ).scalar_one()
    created = _bucket(connection, d.c.created_at, window)
    first_due: list[datetime | None] = [None] * n
    for index, first in connection.execute(
            select(created, func.min(d.c.created_at)).where(due, *_in_window(d.c.created_at, window))
            .group_by(created)):
        if 0 <= index < n:
            first_due[index] = _aware(first)
    depth: list[float | None] = [None] * n
    oldest: list[float | None] = [None] * n
    after = 0  # joined minus left after the interval's end
    for i in reversed(range(n)):
        depth[i] = float(due_now - after)
        after += (found.joined[i] or 0) - (found.left[i] or 0)
    running = _aware(oldest_before)
    for i, end in enumerate(window.ends()):
        if window.starts[i] > window.now:
            depth[i] = None
            continue
        if first_due[i] is not None and (running is None or first_due[i] < running):
            running = first_due[i]
        still = (end - running).total_seconds() if running is not None and running <= end else 0.0
        oldest[i] = max(still, found.longest_left[i] or 0.0)
    return {"depth": depth, "oldest_s": oldest}


def _aware(moment: Any) -> datetime | None:
    """min() of a timestamp comes back as text on SQLite: an aware UTC datetime either way."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def all_charts(engine: Engine, chosen: Range, configured: list[str], now: datetime | None = None) -> dict:
    window = Window.ending(chosen, now or utcnow())
    with engine.connect() as connection:
        names = destinations(connection, configured)
    found = figures(engine, window, names)
    with engine.connect() as connection:
        waiting = queue(connection, window, found)
    mean = {name: [total / calls if calls else None for total, calls in zip(lines["sum_ms"], lines["calls"])]
            for name, lines in found.latency.items()}
    return {"window": window, "events": found.events,
            "outcomes": {name: found.outcomes.get(name, Figures.no_outcomes(window.count)) for name in names},
            "latency": {name: {"mean_ms": mean[name], "max_ms": lines["max_ms"]}
                        for name, lines in sorted(found.latency.items())},
            "queue": waiting}


PALETTE = ("series-a", "series-b", "series-c", "series-d")


def render(data: dict, chosen: Range) -> list[Any]:
    """The charts as SVG, in the order the page shows them."""
    window: Window = data["window"]
    per = chosen.width
    every = "minute" if per == timedelta(minutes=1) else f"{int(per.total_seconds() // 60)} min" \
        if per < timedelta(hours=1) else f"{int(per.total_seconds() // 3600)} h"
    charts = [chart(f"Events received, {chosen.words}", f"events per {every}", window.starts, per,
                    [Series("events", "series-a", data["events"])], test_id="chart-events")]
    for name, states in data["outcomes"].items():
        charts.append(chart(f"{name}: deliveries delivered and failed, {chosen.words}", f"deliveries per {every}",
                            window.starts, per, [Series("delivered", "series-ok", states[DeliveryState.DELIVERED]),
                                                 Series("failed (dead)", "series-bad", states[DeliveryState.DEAD])],
                            test_id=f"chart-outcomes-{name}"))
    lines = []
    for i, (name, figures) in enumerate(data["latency"].items()):
        css = PALETTE[i % len(PALETTE)]
        lines += [Series(f"{name} mean", css, figures["mean_ms"]), Series(f"{name} max", css, figures["max_ms"], dashed=True)]
    charts.append(chart(f"CRM call latency, {chosen.words}", "milliseconds per call", window.starts, per,
                        lines or [Series("no calls", "series-a", [None] * window.count)], kind="lines",
                        test_id="chart-latency"))
    charts.append(chart(f"Queue depth, {chosen.words}", "deliveries waiting", window.starts, per,
                        [Series("waiting", "series-a", data["queue"]["depth"])], kind="lines", test_id="chart-queue"))
    charts.append(chart(f"Oldest waiting delivery, {chosen.words}", "time waited", window.starts, per,
                        [Series("oldest wait", "series-bad", data["queue"]["oldest_s"])], kind="lines",
                        value_text=duration, test_id="chart-oldest"))
    return charts


@bp.get("/charts")
@require_auth()
def charts() -> Any:
    name = request.args.get("range", "24h")
    chosen = RANGES.get(name)
    if chosen is None:
        abort(400, f"unknown range {name!r}: use {', '.join(RANGES)}")
    rt = runtime()
    data = all_charts(rt.engine, chosen, sorted(rt.settings.destinations))
    return render_template("status/charts.html", charts=render(data, chosen), ranges=RANGES, chosen=chosen)
