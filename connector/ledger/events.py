"""Store incoming events exactly once.

The unique key on `message_id` decides, not a check-then-insert: two workers
racing on the same redelivery both run `INSERT ... ON CONFLICT DO NOTHING`, one
wins, the other reads the winner's id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from typing import Any

from sqlalchemy import Dialect, Engine, bindparam, select

from connector.ledger.database import KeptConnection, conflict_insert, driver_write_transaction
from connector.ledger.models import Event, EventOrigin, utcnow

_events = Event.__table__



@dataclass(frozen=True)
class IncomingEvent:
    """A verified webhook, or a snapshot read from Okendo's API, ready to be stored (bounded to the
    columns' sizes)."""

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
    origin: str = EventOrigin.WEBHOOK


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
        "origin": incoming.origin,
    }


_ROW_COLUMNS = tuple(_row(IncomingEvent(message_id="", body=b"", headers={}, state="")))


@dataclass(frozen=True)
class _DriverInsert:
    """The insert as the driver takes it, compiled once per dialect by SQLAlchemy from the table,
    with the columns' own bind processors (UTC datetimes, JSON headers, the body's bytes)."""

    insert_sql: str
    find_sql: str
    positional: bool
    order: tuple[str, ...]
    processors: tuple[tuple[str, Any], ...]

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _DriverInsert:
        insert = conflict_insert(dialect, _events).values({name: bindparam(name) for name in _ROW_COLUMNS})
        compiled = insert.on_conflict_do_nothing(index_elements=["message_id"]).returning(_events.c.id).compile(
            dialect=dialect)
        find = select(_events.c.id).where(_events.c.message_id == bindparam("message_id")).compile(dialect=dialect)
        processors = []
        for name in _ROW_COLUMNS:
            column_type = _events.c[name].type
            processor = column_type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors.append((name, processor))
        return cls(compiled.string, find.string, compiled.positional, tuple(compiled.positiontup or _ROW_COLUMNS),
                   tuple(processors))

    def parameters(self, incoming: IncomingEvent) -> tuple | dict:
        row = _row(incoming)
        for name, processor in self.processors:
            row[name] = processor(row[name])
        return tuple(row[name] for name in self.order) if self.positional else row

    def find_parameters(self, message_id: str) -> tuple | dict:
        return (message_id,) if self.positional else {"message_id": message_id}


_driver_inserts: dict[str, _DriverInsert] = {}


def record_events(engine: Engine, incomings: Sequence[IncomingEvent], *, kept: KeptConnection | None = None,
                  joining: Callable[[], Sequence[IncomingEvent]] | None = None) -> list[StoredEvent]:
    """Insert the events in one transaction (one commit, one fsync), or find those already
    stored under their message ids; a result per event, in order.

    Returns only after the transaction has committed, so the caller may
    acknowledge every one of them. Database errors propagate (as SQLAlchemy
    errors): the caller must acknowledge none. `kept`: a connection the caller keeps between
    groups (see KeptConnection). `joining`: called once the write lock is ours, for the events that
    arrived while we waited for it; they are stored in this transaction too, their results after
    those of `incomings`.

    The receiver's hot path: the statements go to the driver as SQLAlchemy compiled them, without
    its per-statement machinery, inside the shortest write transaction (driver_write_transaction).
    """
    statement = _driver_inserts.get(engine.dialect.name)
    if statement is None:
        statement = _driver_inserts.setdefault(engine.dialect.name, _DriverInsert.for_dialect(engine.dialect))
    new_ids: list[int | None] = []
    with driver_write_transaction(engine, kept) as cursor:
        if joining is not None:
            incomings = [*incomings, *joining()]
        rows = [statement.parameters(incoming) for incoming in incomings]
        if engine.dialect.name == "postgresql":
            # One round trip for the group (psycopg pipelines an executemany); a result set per row,
            # empty when the message id was already there.
            # https://www.psycopg.org/psycopg3/docs/api/cursors.html#psycopg.Cursor.executemany
            cursor.executemany(statement.insert_sql, rows, returning=True)
            while True:
                found = cursor.fetchone()
                new_ids.append(found[0] if found else None)
                if not cursor.nextset():
                    break
        else:  # sqlite3 refuses RETURNING in executemany
            for row in rows:
                cursor.execute(statement.insert_sql, row)
                found = cursor.fetchone()
                new_ids.append(found[0] if found else None)
        stored = []
        for incoming, new_id in zip(incomings, new_ids):
            if new_id is not None:
                stored.append(StoredEvent(event_id=new_id, created=True))
                continue
            cursor.execute(statement.find_sql, statement.find_parameters(incoming.message_id))
            stored.append(StoredEvent(event_id=cursor.fetchone()[0], created=False))
    return stored


def record_event(engine: Engine, incoming: IncomingEvent) -> StoredEvent:
    """Insert the event, or find the one already stored under its message id (see record_events)."""
    return record_events(engine, [incoming])[0]
