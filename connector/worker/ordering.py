"""Per-resource ordering: an older event never overwrites a newer one.

Okendo does not guarantee delivery order; `sequenceNumber` (a digit string,
compared as an integer) orders the events of a resource
(https://docs.okendo.io/webhooks/getting-started).
The newest event applied per (destination, resourceType, resource id) is
kept in `resource_versions`; a delete leaves a tombstone there.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select, tuple_
from connector.ledger.database import upsert_all
from connector.ledger.models import ResourceVersion, utcnow

_versions = ResourceVersion.__table__

Resource = tuple[str, str, str]  # (destination, resource type, resource id)


@dataclass(frozen=True)
class Version:
    sequence_key: str
    deleted: bool


def load(connection: Connection, resources: set[Resource]) -> dict[Resource, Version]:
    if not resources:
        return {}
    v = _versions
    # An expanding IN of triples: one statement shape (and one compiled-cache entry) for any batch.
    query = select(v.c.destination, v.c.resource_type, v.c.resource_id, v.c.sequence_key, v.c.deleted).where(
        tuple_(v.c.destination, v.c.resource_type, v.c.resource_id).in_(list(resources)))
    return {(row.destination, row.resource_type, row.resource_id): Version(row.sequence_key, row.deleted)
            for row in connection.execute(query)}


def stale_reason(current: Version | None, sequence_key: str | None, topic: str | None) -> str | None:
    """Why this event must not be applied, or None when it may."""
    if current is None or sequence_key is None:
        return None
    if current.deleted and topic != "delete":
        return f"the resource was deleted (sequence {int(current.sequence_key)}); a {topic} cannot bring it back"
    if int(sequence_key) < int(current.sequence_key):
        return f"sequence {int(sequence_key)} is older than sequence {int(current.sequence_key)}, already applied"
    return None


def advanced(current: Version | None, sequence_key: str, deleted: bool) -> Version:
    """The version once this event is applied (never moving backwards; a delete stays deleted)."""
    if current is not None and int(current.sequence_key) > int(sequence_key):
        sequence_key = current.sequence_key
    return Version(sequence_key, deleted or (current.deleted if current else False))


def save(connection: Connection, versions: dict[Resource, tuple[Version, int]]) -> None:
    """Store the new versions (with the event that set each) in one statement."""
    if not versions:
        return
    now = utcnow()
    upsert_all(connection, _versions, ("destination", "resource_type", "resource_id"), [
        {"destination": destination, "resource_type": resource_type, "resource_id": resource_id,
         "sequence_key": version.sequence_key, "event_id": event_id, "deleted": version.deleted, "updated_at": now}
        for (destination, resource_type, resource_id), (version, event_id) in versions.items()])
