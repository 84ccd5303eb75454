"""Replay: queue deliveries again, by event, state, topic, destination or time range.

The signature is never checked again: the event was verified when it
arrived and its raw body is what the ledger kept. Who replayed and when is
recorded on each delivery. Rows a worker holds a lease on are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, and_, func, or_, select, update

from connector.ledger.database import write_transaction
from connector.ledger.models import Delivery, DeliveryState, Event, EventState, utcnow
from connector.ledger.selection import event_conditions

_deliveries = Delivery.__table__
_events = Event.__table__

REPLAYABLE_STATES = (DeliveryState.DEAD, DeliveryState.RETRYING, DeliveryState.DELIVERED, DeliveryState.SKIPPED,
                     DeliveryState.STALE, DeliveryState.PENDING)


@dataclass(frozen=True)
class ReplayFilter:
    event_ids: tuple[int, ...] = ()
    delivery_ids: tuple[int, ...] = ()
    states: tuple[str, ...] = ()
    topic: str | None = None  # an event name: review.create
    destination: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None  # an email, a resource id or a message id
    origin: str | None = None  # webhook, backfill or reconcile
    search: str | None = None  # words of the payload (connector.ledger.search)

    def is_empty(self) -> bool:
        return not (self.event_ids or self.delivery_ids or self.states or self.topic or self.destination
                    or self.since or self.until or self.text or self.origin
                    or (self.search or "").strip())


@dataclass
class ReplaySummary:
    requeued: int = 0
    held: int = 0  # refused: a worker holds a lease on them
    replanned_events: list[int] = field(default_factory=list)


def _conditions(selection: ReplayFilter, now: datetime) -> list:
    d, e = _deliveries, _events
    conditions = []
    if selection.delivery_ids:
        conditions.append(d.c.id.in_(selection.delivery_ids))
    if selection.event_ids:
        conditions.append(d.c.event_id.in_(selection.event_ids))
    if selection.states:
        conditions.append(d.c.state.in_(selection.states))
    if selection.destination:
        conditions.append(d.c.destination == selection.destination)
    chosen_events = event_conditions(topic=selection.topic, since=selection.since, until=selection.until,
                                     text=selection.text, origin=selection.origin, search=selection.search)
    if chosen_events:
        conditions.append(d.c.event_id.in_(select(e.c.id).where(*chosen_events)))
    return conditions


def _not_held(now: datetime):  # noqa: ANN202
    d = _deliveries
    return or_(d.c.lease_expires_at.is_(None), d.c.lease_expires_at <= now)


def count(engine: Engine, selection: ReplayFilter) -> ReplaySummary:
    """How many deliveries a replay of this selection would queue, and how many are held by a worker."""
    now = utcnow()
    conditions = _conditions(selection, now)
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(_deliveries).where(*conditions)).scalar_one()
        free = connection.execute(select(func.count()).select_from(_deliveries)
                                  .where(*conditions, _not_held(now))).scalar_one()
    return ReplaySummary(requeued=free, held=total - free)


def replay(engine: Engine, selection: ReplayFilter, *, by: str) -> ReplaySummary:
    """Queue the selected deliveries again (attempts start over); re-map the selected events."""
    if selection.is_empty():
        raise ValueError("a replay needs a selection (an event, a state, a topic, a destination or a time range)")
    now = utcnow()
    conditions = _conditions(selection, now)
    summary = ReplaySummary()
    with write_transaction(engine) as connection:
        held = connection.execute(select(func.count()).select_from(_deliveries)
                                  .where(*conditions, ~_not_held(now))).scalar_one()
        result = connection.execute(
            update(_deliveries).where(*conditions, _not_held(now)).values(
                state=DeliveryState.PENDING, next_attempt_at=now, attempts=0, lease_owner=None,
                lease_expires_at=None, replayed_at=now, replayed_by=by[:128], updated_at=now))
        summary.requeued, summary.held = result.rowcount, held
        if selection.event_ids:
            # Re-map them too: mappings added since may now handle them.
            replan = and_(_events.c.id.in_(selection.event_ids),
                          _events.c.state.in_((EventState.PLANNED, EventState.UNMAPPED)))
            summary.replanned_events = list(connection.execute(select(_events.c.id).where(replan)).scalars())
            connection.execute(update(_events).where(replan).values(state=EventState.RECEIVED))
    return summary


def delivery_destinations(engine: Engine) -> list[str]:
    """Every destination the ledger holds deliveries for (served by the destination index)."""
    with engine.connect() as connection:
        return list(connection.execute(select(_deliveries.c.destination).distinct()).scalars())
