"""What `connector events` reads that the status page's queries (queries.py) do not: each event's
delivery states per destination, and for `--follow` what is new since the last look, by keysets on
ids (every read here is served by a primary key or an index; nothing is scanned):

- new events: queries.list_events' own newest-first pages under the same filter, read back only as
  far as the last event already printed, so the filter means exactly what it means on the page;
- delivery outcomes: each delivery attempt is one row written when the attempt finishes, so
  attempts with an id above the last one seen are the outcomes that happened since.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, func, select

from connector.ledger.models import Delivery, DeliveryAttempt, Event
from connector.ledger.selection import event_conditions
from connector.status import queries
from connector.status.terminal import OUTCOME_STATES

_events = Event.__table__
_deliveries = Delivery.__table__
_attempts = DeliveryAttempt.__table__


def states_by_destination(connection: Connection, event_ids: list[int]) -> dict[int, dict[str, dict[str, int]]]:
    """event id -> destination -> delivery state -> how many (queries.list_events counts states only)."""
    if not event_ids:
        return {}
    d = _deliveries
    found: dict[int, dict[str, dict[str, int]]] = {}
    for event_id, destination, state, number in connection.execute(
            select(d.c.event_id, d.c.destination, d.c.state, func.count()).where(d.c.event_id.in_(event_ids))
            .group_by(d.c.event_id, d.c.destination, d.c.state)):
        found.setdefault(event_id, {}).setdefault(destination, {})[state] = number
    return found


def newest_event_id(connection: Connection) -> int:
    return connection.execute(select(func.max(_events.c.id))).scalar_one() or 0


def newest_events(connection: Connection, selection: queries.EventFilter, limit: int) -> list[dict[str, Any]]:
    """The `limit` newest events the filter selects, oldest first."""
    rows, _ = queries.list_events(connection, selection, limit=limit)
    return rows[::-1]


def events_after(connection: Connection, selection: queries.EventFilter, after_id: int,
                 page: int = 100) -> list[dict[str, Any]]:
    """The events the filter selects with an id above `after_id`, oldest first."""
    found: list[dict[str, Any]] = []
    before = selection.before
    while True:
        rows, next_before = queries.list_events(connection, replace(selection, before=before), limit=page)
        newer = [row for row in rows if row["id"] > after_id]
        found.extend(newer)
        if len(newer) < len(rows) or next_before is None or next_before <= after_id:
            return found[::-1]
        before = next_before


def newest_attempt_id(connection: Connection) -> int:
    return connection.execute(select(func.max(_attempts.c.id))).scalar_one() or 0


def outcomes_between(connection: Connection, selection: queries.EventFilter, after_id: int, up_to: int,
                     limit: int = 500) -> list[dict[str, Any]]:
    """Delivery attempts with an id in (after_id, up_to], oldest first, of the deliveries the filter
    selects: their event's topic, time, shopper, origin and words as on the page; the destination; an event
    state, or a delivery state matched by the state the attempt left the delivery in. `attempt` is
    the attempt's number among its delivery's."""
    a, d, e = _attempts, _deliveries, _events
    earlier = a.alias("earlier")
    conditions = [a.c.id > after_id, a.c.id <= up_to,
                  *event_conditions(topic=selection.topic, since=selection.since, until=selection.until,
                                    text=selection.text, origin=selection.origin, search=selection.search)]
    if selection.destination:
        conditions.append(d.c.destination == selection.destination)
    if selection.state in queries.EVENT_STATES:
        conditions.append(e.c.state == selection.state)
    elif selection.delivery_state:
        conditions.append(a.c.outcome.in_([outcome for outcome, state in OUTCOME_STATES.items()
                                           if state == selection.delivery_state]))
    number = (select(func.count()).where(earlier.c.delivery_id == a.c.delivery_id, earlier.c.id <= a.c.id)
              .scalar_subquery())
    query = (select(a.c.id.label("attempt_id"), a.c.started_at, a.c.duration_ms, a.c.outcome, a.c.http_status,
                    a.c.error, number.label("attempt"), d.c.id.label("delivery_id"), d.c.mapping, d.c.destination,
                    e.c.id.label("event_id"), e.c.resource_type, e.c.topic, e.c.resource_id)
             .select_from(a.join(d, d.c.id == a.c.delivery_id).join(e, e.c.id == d.c.event_id))
             .where(*conditions).order_by(a.c.id).limit(limit))
    return [dict(row._mapping) for row in connection.execute(query)]
