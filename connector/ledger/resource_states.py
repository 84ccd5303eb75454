"""What the ledger keeps of a resource once retention has pruned its events.

A backfill or a reconciliation compares what Okendo's API says with the newest state the ledger
holds, and places its snapshot after the newest event received (connector.backfill.snapshots).
Retention deletes finished events after some days; it first keeps, per resource, the newest of
them as a sequence key, a content hash and whether it was a delete, so a second backfill a year
later still stores nothing for a review that has not changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select, tuple_

from connector.ledger.database import conflict_insert
from connector.ledger.models import Event, EventState, ResourceState, sequence_key, utcnow

_events = Event.__table__
_states = ResourceState.__table__

# Event states that say something about a resource (an invalid or unsupported body says nothing).
MEANINGFUL_STATES = (EventState.RECEIVED, EventState.PLANNED, EventState.UNMAPPED)


def content_hash(resource: Any) -> str:
    """What a resource says, as a hash that ignores key order and whitespace."""
    return hashlib.sha256(canonical(resource).encode()).hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def resource_of(body: bytes | None) -> dict[str, Any] | None:
    """The `resource` object of a stored event's body, or None."""
    try:
        document = json.loads(body) if body is not None else None
    except ValueError:
        return None
    resource = document.get("resource") if isinstance(document, dict) else None
    return resource if isinstance(resource, dict) else None


def remember_pruned(connection: Connection, event_ids: Sequence[int]) -> None:
    """Inside retention's transaction, before these events are deleted: keep the newest state of
    each of their resources (only where it is newer than what is kept already)."""
    e = _events
    newest: dict[tuple[str, str], tuple[tuple[str, int], Any]] = {}
    for start in range(0, len(event_ids), 500):
        for row in connection.execute(
                select(e.c.id, e.c.resource_type, e.c.resource_id, e.c.sequence_number, e.c.topic, e.c.body)
                .where(e.c.id.in_(list(event_ids[start:start + 500])), e.c.resource_id.is_not(None),
                       e.c.sequence_number.is_not(None), e.c.state.in_(MEANINGFUL_STATES))):
            rank = (sequence_key(row.sequence_number), row.id)
            resource = (row.resource_type, row.resource_id)
            if resource not in newest or rank > newest[resource][0]:
                newest[resource] = (rank, row)
    if not newest:
        return
    now = utcnow()
    rows = []
    for (resource_type, resource_id), ((key, event_id), row) in newest.items():
        deleted = row.topic == "delete"
        resource = None if deleted else resource_of(row.body)
        rows.append({"resource_type": resource_type, "resource_id": resource_id, "sequence_key": key,
                     "event_id": event_id, "content_hash": content_hash(resource) if resource is not None else None,
                     "deleted": deleted, "updated_at": now})
    insert = conflict_insert(connection.dialect, _states)
    kept = tuple_(func.coalesce(_states.c.sequence_key, ""), _states.c.event_id)
    connection.execute(insert.on_conflict_do_update(
        index_elements=["resource_type", "resource_id"],
        set_={name: insert.excluded[name] for name in ("sequence_key", "event_id", "content_hash", "deleted",
                                                       "updated_at")},
        where=kept < tuple_(insert.excluded.sequence_key, insert.excluded.event_id)), rows)
