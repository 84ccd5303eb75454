"""Only the newest state of a resource is sent: when newer events of a resource are planned, its
older deliveries still waiting for the same mapping end `stale` at once, with no CRM call.

Okendo sends each event with the resource's whole state (https://docs.okendo.io/webhooks/getting-started),
so the newest event of a resource carries everything an older one would write, and the CRM's
workflows never fire on a value about to be overwritten. Doing it when the newer event is planned,
rather than when the older one comes up for a claim, keeps superseded deliveries out of claims
altogether: every claim of a kind is work for the CRM, in full batches, and a resource's newest
event does not wait behind the stale ones of its predecessors.

A delete supersedes the older writes of the record it deletes, when both name the record by the
resource's own identity (a review's note, a review's Okendo_Review__c keyed by its review id): a
review created, updated and deleted while waiting never reaches the CRM, and its delete finds
nothing to do. A record others share (a contact keyed by email) is never superseded by a delete.

Never superseded: a delivery tried before (an earlier try may have written it, its answer lost: it
goes out itself and looks before creating again), one replayed, one under a live lease (a worker is
delivering it), and any older event's mappings that the newer event does not have (a survey
create's Contact, when only the response has an update).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from connector import metrics
from connector.ledger.models import Delivery, DeliveryAttempt, DeliveryState
from connector.worker.resource_rows import due_rows_of

_deliveries = Delivery.__table__
_attempts = DeliveryAttempt.__table__

Resource = tuple[str, str, str]  # (destination, resource type, resource id)


@dataclass(frozen=True)
class Superseded:
    delivery_id: int
    destination: str
    reason: str


def supersede(connection: Connection, resources: Iterable[Resource], now: datetime,
              owner: str | None = None, deletes: Collection[str] | None = None) -> list[Superseded]:
    """End as stale, inside the caller's write transaction, every older delivery of these resources
    that a newer due delivery of the same mapping supersedes; returns them (for the metrics).

    `deletes` names the mappings that delete (None: any may), so that only resources with a due delete
    have their deliveries' operations (JSON) read."""
    wanted = sorted(set(resources))
    if not wanted:
        return []
    d = _deliveries
    rows = [SimpleNamespace(**row._mapping, operation=None) for row in due_rows_of(connection, (
        d.c.id, d.c.destination, d.c.resource_type, d.c.resource_id, d.c.mapping, d.c.event_id, d.c.attempts,
        d.c.replayed_at, d.c.lease_expires_at), wanted, with_sequence=True)]
    per_resource: dict[Resource, list[SimpleNamespace]] = {}
    for row in rows:
        per_resource.setdefault((row.destination, row.resource_type, row.resource_id), []).append(row)
    # Only a resource with two due deliveries of one mapping, or a due delete, has anything to supersede;
    # only one with a delete needs its deliveries' operations (JSON) read.
    contested = {resource: any(deletes is None or r.mapping in deletes for r in mine)
                 for resource, mine in per_resource.items()
                 if len({r.mapping for r in mine}) < len(mine) or any(deletes is None or r.mapping in deletes
                                                                      for r in mine)}
    rows = [row for row in rows if (row.destination, row.resource_type, row.resource_id) in contested]
    if not rows:
        return []
    needed = [r.id for r in rows if contested[(r.destination, r.resource_type, r.resource_id)]]
    operations: dict[int, Any] = {}
    for start in range(0, len(needed), 500):
        operations.update(connection.execute(select(d.c.id, d.c.operation).where(
            d.c.id.in_(needed[start:start + 500]))).all())
    for row in rows:
        row.operation = operations.get(row.id)
    newest: dict[tuple[str, str, str, str], tuple[str, int]] = {}
    deleted_at: dict[tuple[str, str, str, str], tuple[str, int]] = {}  # newest delete of the resource's own record
    for row in rows:
        kind = (row.destination, row.resource_type, row.resource_id, row.mapping)
        newest[kind] = max(newest.get(kind, ("", 0)), (row.sequence_key, row.event_id))
        if _owned_record(row) and row.operation.get("action") == "delete":
            record = (row.destination, row.resource_type, row.resource_id, row.operation.get("object"))
            deleted_at[record] = max(deleted_at.get(record, ("", 0)), (row.sequence_key, row.event_id))
    older = {}
    for row in rows:
        if row.attempts or row.replayed_at is not None or (row.lease_expires_at is not None
                                                            and row.lease_expires_at > now):
            continue
        rank = (row.sequence_key, row.event_id)
        newer = newest[(row.destination, row.resource_type, row.resource_id, row.mapping)]
        deleted = deleted_at.get((row.destination, row.resource_type, row.resource_id,
                               row.operation.get("object"))) if _owned_record(row) else None
        if rank < newer:
            older[row.id] = Superseded(row.id, row.destination,
                                       f"superseded by sequence {int(newer[0])} of the same {row.resource_type}, "
                                       "waiting for this mapping: only the newest state is sent")
        elif deleted is not None and rank < deleted and row.operation.get("action") != "delete":
            older[row.id] = Superseded(row.id, row.destination,
                                       f"superseded by the delete at sequence {int(deleted[0])} of the same "
                                       f"{row.resource_type}, waiting: the record would be deleted right after")
    if not older:
        return []
    if connection.dialect.name == "postgresql":
        # Read without locks above: take only rows no claim holds now (a claimer skips ours in turn).
        mine = set(connection.execute(select(d.c.id).where(
            d.c.id.in_(list(older)), d.c.state.in_(DeliveryState.DUE), d.c.attempts == 0)
            .with_for_update(skip_locked=True)).scalars())
        older = {delivery_id: item for delivery_id, item in older.items() if delivery_id in mine}
        if not older:
            return []
    items = list(older.values())
    # Recorded as a claim that found it superseded would: one attempt, outcome stale, the reason.
    connection.execute(update(d).where(d.c.id == bindparam("delivery_id")).values(
        state=DeliveryState.STALE, last_error=bindparam("reason"), attempts=d.c.attempts + 1, updated_at=now),
        [{"delivery_id": item.delivery_id, "reason": item.reason} for item in items])
    connection.execute(insert(_attempts), [
        {"delivery_id": item.delivery_id, "started_at": now, "duration_ms": 0, "outcome": "stale",
         "http_status": None, "error": item.reason, "error_class": None, "worker": owner, "requests": []}
        for item in items])
    return items


def _owned_record(row) -> bool:  # type: ignore[no-untyped-def]
    """Whether the delivery's operation names its record by the resource's own identity: by a key
    holding the resource's id (an Okendo_Review__c by its review id), or keyless, by the resource
    itself through the link table (a review's note). Not a record others share (a contact by email)."""
    operation = row.operation if isinstance(row.operation, dict) else None
    if not operation or not row.resource_id:
        return False
    key, source = operation.get("key"), operation.get("source")
    if key:
        return isinstance(key, dict) and str(key.get("value")) == row.resource_id
    return isinstance(source, dict) and source.get("type") == row.resource_type and source.get("id") == row.resource_id


def report(superseded: list[Superseded]) -> None:
    """Count them as the worker counts every delivery's outcome (after the commit)."""
    for item in superseded:
        metrics.delivery_finished(item.destination, "stale")
