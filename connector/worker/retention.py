"""Retention: prune finished events, keep everything that still needs a person or a retry.

An event is finished when it is no longer `received` and none of its
deliveries is pending, retrying or dead. The link table and the ordering
tombstones are kept: they are what later updates and deletes rely on; and so is
the newest state of each pruned resource (connector.ledger.resource_states), what
a later backfill from Okendo's API compares with. A pruned event leaves the payload search
(connector.ledger.search) in the same transaction.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, delete, exists, select

from connector.ledger.database import write_transaction
from connector.ledger.models import Delivery, DeliveryAttempt, DeliveryState, Event, EventState, utcnow
from connector.ledger.resource_states import remember_pruned
from connector.ledger.search import forget as forget_words

_events = Event.__table__
_deliveries = Delivery.__table__
_attempts = DeliveryAttempt.__table__


def prunable(older_than_days: float):  # noqa: ANN201 - a SQL select of event ids
    cutoff = utcnow() - timedelta(days=older_than_days)
    open_delivery = exists().where(_deliveries.c.event_id == _events.c.id,
                                   _deliveries.c.state.in_(DeliveryState.OPEN))
    return (select(_events.c.id)
            .where(_events.c.received_at < cutoff, _events.c.state != EventState.RECEIVED, ~open_delivery)
            .order_by(_events.c.id))


def prune(engine: Engine, older_than_days: float, *, batch_size: int = 1000, limit: int | None = None) -> int:
    """Delete finished events older than the cutoff, in short transactions; returns how many."""
    removed = 0
    while limit is None or removed < limit:
        size = batch_size if limit is None else min(batch_size, limit - removed)
        with write_transaction(engine) as connection:
            candidates = list(connection.execute(prunable(older_than_days).limit(size)).scalars())
            if not candidates:
                break
            # SQLite's BEGIN IMMEDIATE already serialises this with every other writer. On
            # PostgreSQL a replay may have re-queued one of these deliveries since the select
            # above: lock the deliveries (waiting for a replay still running), then the events
            # (skipping those another prune or a replay holds), and look again, so a replayed
            # delivery is never deleted. Deliveries before events: the order a replay locks them.
            connection.execute(select(_deliveries.c.id).where(_deliveries.c.event_id.in_(candidates))
                               .order_by(_deliveries.c.id).with_for_update())
            ids = list(connection.execute(prunable(older_than_days).where(_events.c.id.in_(candidates))
                                          .with_for_update(of=_events, skip_locked=True)).scalars())
            if ids:
                remember_pruned(connection, ids)  # what a later backfill compares with (resource_states)
                forget_words(connection, ids)  # out of the payload search too (before the bodies go)
                delivery_ids = select(_deliveries.c.id).where(_deliveries.c.event_id.in_(ids))
                connection.execute(delete(_attempts).where(_attempts.c.delivery_id.in_(delivery_ids)))
                connection.execute(delete(_deliveries).where(_deliveries.c.event_id.in_(ids)))
                connection.execute(delete(_events).where(_events.c.id.in_(ids)))
        removed += len(ids)
        if len(candidates) < size:
            break
    return removed
