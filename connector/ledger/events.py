"""Store incoming events exactly once.

The unique key on `message_id` decides, not a check-then-insert: two workers
racing on the same redelivery both run `INSERT ... ON CONFLICT DO NOTHING`, one
wins, the other reads the winner's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from connector.ledger.database import write_transaction
from connector.ledger.models import Event, utcnow

_events = Event.__table__

_DIALECT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


@dataclass(frozen=True)
class IncomingEvent:
    """A verified webhook, ready to be stored (bounded to the columns' sizes)."""

    message_id: str
    body: bytes
    headers: dict[str, str]
    state: str
    webhook_timestamp: datetime | None = None
    resource_type: str | None = None
    topic: str | None = None
    resource_id: str | None = None
    sequence_number: str | None = None
    customer_email: str | None = None
    state_reason: str | None = None
    verified_by_secret: int | None = None
    received_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class StoredEvent:
    event_id: int
    created: bool  # False: a redelivery of a message already in the ledger


def _row(incoming: IncomingEvent) -> dict:
    return {
        "message_id": incoming.message_id,
        "received_at": incoming.received_at,
        "webhook_timestamp": incoming.webhook_timestamp,
        "resource_type": incoming.resource_type,
        "topic": incoming.topic,
        "resource_id": incoming.resource_id,
        "sequence_number": incoming.sequence_number,
        "customer_email": incoming.customer_email,
        "state": incoming.state,
        "state_reason": incoming.state_reason,
        "verified_by_secret": incoming.verified_by_secret,
        "headers": incoming.headers,
        "body": incoming.body,
    }


# Built once per dialect: the values come as parameters, so the compiled form is cached.
_INSERTS = {
    name: insert(_events).on_conflict_do_nothing(index_elements=["message_id"]).returning(_events.c.id)
    for name, insert in _DIALECT_INSERTS.items()
}
_FIND_BY_MESSAGE_ID = select(_events.c.id).where(_events.c.message_id == bindparam("message_id"))


def record_events(engine: Engine, incomings: Sequence[IncomingEvent]) -> list[StoredEvent]:
    """Insert the events in one transaction (one commit, one fsync), or find those already
    stored under their message ids; a result per event, in order.

    Returns only after the transaction has committed, so the caller may
    acknowledge every one of them. Database errors propagate: the caller must
    acknowledge none.
    """
    statement = _INSERTS[engine.dialect.name]
    stored = []
    with write_transaction(engine) as connection:
        for incoming in incomings:
            new_id = connection.execute(statement, _row(incoming)).scalar_one_or_none()
            if new_id is not None:
                stored.append(StoredEvent(event_id=new_id, created=True))
                continue
            existing = connection.execute(_FIND_BY_MESSAGE_ID, {"message_id": incoming.message_id}).scalar_one()
            stored.append(StoredEvent(event_id=existing, created=False))
    return stored


def record_event(engine: Engine, incoming: IncomingEvent) -> StoredEvent:
    """Insert the event, or find the one already stored under its message id (see record_events)."""
    return record_events(engine, [incoming])[0]
