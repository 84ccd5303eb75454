"""Turn received events into deliveries, one per mapping outcome.

An event stays `received` until the transaction that inserts its
deliveries marks it planned, so nothing is dropped between storing and
planning: a crash before that commit leaves it `received` for the next pass.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Engine, select, update

from connector.ledger.database import conflict_insert, write_transaction
from connector.ledger.models import Delivery, DeliveryState, Event, EventState, sequence_key, utcnow
from connector.mapping.engine import MappingSet
from connector.mapping.operations import FAILED, READY, Outcome
from connector.worker import coalescing
from connector.worker.planning_turn import planning_turn

_events = Event.__table__
_deliveries = Delivery.__table__

_STATE_FOR_OUTCOME = {READY: DeliveryState.PENDING, FAILED: DeliveryState.DEAD}


def target_key(outcome: Outcome) -> str | None:
    """Which shared CRM record a write may create, as a short stable text: two deliveries with the
    same one never run at once, so a lookup-then-create cannot race another (Salesforce has no
    unique email to stop a second Contact).

    A record keyed by a shared value (a contact by email) is that record. A record whose
    association may create its target (`if_missing: create`: a transaction's Contact) is that
    target: its own record is keyed by its own resource, which deliveries already never share.
    """
    operation = outcome.operation
    if operation is None:
        return None
    creates = next((ref for ref in operation.associations if ref.if_missing == "create" and ref.key is not None),
                   None)
    if creates is not None:
        text = f"{creates.to}|{creates.key.field}|{str(creates.key.value).lower()}"  # type: ignore[union-attr]
    elif operation.key is not None:
        text = f"{operation.object}|{operation.key.field}|{str(operation.key.value).lower()}"
    else:
        return None
    return text if len(text) <= 255 else "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def delivery_row(event: Any, position: int, outcome: Outcome, planned_with: str | None = None) -> dict[str, Any]:
    """A delivery for this outcome. Its operation keeps the fingerprint of the mapping that made it
    (`planned_with`): delivered while the mapping is unchanged, it goes out as planned, unmapped again."""
    now = utcnow()
    state = _STATE_FOR_OUTCOME.get(outcome.status, DeliveryState.SKIPPED)
    operation = outcome.operation.to_json() if outcome.operation is not None else None
    if operation is not None and planned_with is not None:
        operation["planned_with"] = planned_with
    return {
        "event_id": event.id,
        "mapping": outcome.mapping,
        "destination": outcome.destination,
        "state": state,
        "attempts": 0,
        "next_attempt_at": now if state == DeliveryState.PENDING else None,
        "last_error": outcome.reason,
        "created_at": now,
        "updated_at": now,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "sequence_key": sequence_key(event.sequence_number) if event.sequence_number else None,
        "position": position,
        "target_key": target_key(outcome),
        "operation": operation,
    }


def plan_received(engine: Engine, mappings: MappingSet, limit: int = 500, owner: str | None = None) -> int:
    """Plan up to `limit` received events; returns how many this call planned.

    The mapping runs outside any transaction: the write lock is held only for
    the inserts. An event is planned by whoever first finds it still
    `received` inside the write transaction, so two planners never plan one
    event twice (and the unique key on deliveries would refuse it anyway).
    The older deliveries its new ones supersede end stale in the same
    transaction (connector.worker.coalescing). One planner at a time
    (connector.worker.planning_turn): one that finds the turn taken plans
    nothing and returns 0.
    """
    with planning_turn(engine) as mine_to_plan:
        if not mine_to_plan:
            return 0  # another thread or process is planning: deliver meanwhile
        return _plan(engine, mappings, limit, owner)


def _plan(engine: Engine, mappings: MappingSet, limit: int, owner: str | None) -> int:
    columns = (_events.c.id, _events.c.body, _events.c.resource_type, _events.c.resource_id,
               _events.c.sequence_number)
    with engine.connect() as connection:
        rows = connection.execute(select(*columns).where(_events.c.state == EventState.RECEIVED)
                                  .order_by(_events.c.id).limit(limit)).all()
    if not rows:
        return 0
    outcomes = {}
    for event in rows:
        try:
            document = json.loads(event.body)
        except ValueError:
            document = None
        outcomes[event.id] = mappings.plan(document)
    with write_transaction(engine) as connection:
        still = select(_events.c.id).where(_events.c.id.in_(list(outcomes)),
                                           _events.c.state == EventState.RECEIVED)
        if connection.dialect.name == "postgresql":
            still = still.with_for_update(skip_locked=True)
        mine = set(connection.execute(still).scalars())
        if not mine:
            return 0
        new_rows = [delivery_row(event, position, outcome, mappings.fingerprint(outcome.mapping))
                    for event in rows if event.id in mine for position, outcome in enumerate(outcomes[event.id])]
        if new_rows:
            # executemany, not one multi-row VALUES: a statement per batch size would fill
            # SQLAlchemy's compiled cache with large statements.
            connection.execute(conflict_insert(connection.dialect, _deliveries)
                               .on_conflict_do_nothing(index_elements=["event_id", "mapping", "destination"]),
                               new_rows)
        planned = [event_id for event_id in mine if outcomes[event_id]]
        unmapped = [event_id for event_id in mine if not outcomes[event_id]]
        if planned:
            connection.execute(update(_events).where(_events.c.id.in_(planned)).values(
                state=EventState.PLANNED, state_reason=None))
        if unmapped:
            connection.execute(update(_events).where(_events.c.id.in_(unmapped)).values(
                state=EventState.UNMAPPED, state_reason="no enabled mapping handles this event"))
        superseded = coalescing.supersede(connection, {
            (row["destination"], row["resource_type"], row["resource_id"]) for row in new_rows
            if row["state"] == DeliveryState.PENDING and row["resource_id"] and row["sequence_key"]}, utcnow(), owner,
            deletes=[mapping.name for mapping in mappings.mappings if mapping.spec.operation == "delete"])
    coalescing.report(superseded)
    return len(mine)
