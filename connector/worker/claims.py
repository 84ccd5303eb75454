"""Claiming due deliveries with leases.

A claim is one short write transaction: SQLite serialises it with BEGIN
IMMEDIATE; PostgreSQL with a transaction-scoped advisory lock (so two workers
never claim two events of one resource at once) and `FOR UPDATE SKIP LOCKED`
on the rows. Each claim takes, per (destination, resource), only the
deliveries of the lowest-sequence event, and never a resource another worker
holds: deliveries for one resource and destination never run concurrently.
Nor a delivery whose target CRM record (a contact keyed by email) another
worker is writing: a lookup-then-create must not race another one. A dead
worker's leases simply expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, or_, select, text, update

from connector.ledger.database import write_transaction
from connector.ledger.models import Delivery, DeliveryState, utcnow

_deliveries = Delivery.__table__
# Any constant shared by every worker of this ledger: pg_advisory_xact_lock's key.
_CLAIM_LOCK_KEY = 0x0C0FFEE


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: int
    mapping: str
    destination: str
    resource_type: str | None
    resource_id: str | None
    sequence_key: str | None
    position: int
    previous_attempts: int  # attempts before this claim (since the last replay): they count toward the maximum
    created_at: datetime  # when the retry schedule started: the delivery's creation, or its last replay
    replayed: bool = False  # replayed: tries before the replay may have reached the CRM too

    @property
    def tried_before(self) -> bool:
        """Whether an earlier try may have reached the CRM (a create must look before creating again)."""
        return self.previous_attempts > 0 or self.replayed


def claim(engine: Engine, owner: str, limit: int, lease_s: float, now: datetime | None = None) -> list[Claimed]:
    now = now or utcnow()
    d = _deliveries
    due = (select(d.c.id, d.c.event_id, d.c.mapping, d.c.destination, d.c.resource_type, d.c.resource_id,
                  d.c.sequence_key, d.c.position, d.c.attempts, d.c.created_at, d.c.target_key, d.c.replayed_at)
           .where(d.c.state.in_(DeliveryState.DUE),
                  or_(d.c.next_attempt_at.is_(None), d.c.next_attempt_at <= now),
                  or_(d.c.lease_expires_at.is_(None), d.c.lease_expires_at <= now))
           .order_by(d.c.next_attempt_at, d.c.id)
           .limit(limit * 4))
    held = (select(d.c.destination, d.c.resource_type, d.c.resource_id, d.c.target_key).distinct()
            .where(d.c.lease_expires_at > now, d.c.state.in_(DeliveryState.DUE)))
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLAIM_LOCK_KEY})
            due = due.with_for_update(skip_locked=True)
        candidates = connection.execute(due).all()
        if not candidates:
            return []
        busy_resources, busy_targets = set(), set()
        for row in connection.execute(held):
            busy_resources.add((row.destination, row.resource_type, row.resource_id))
            if row.target_key:
                busy_targets.add((row.destination, row.target_key))
        free = [row for row in candidates if (row.destination, row.target_key) not in busy_targets]
        chosen = _one_event_per_resource(free, busy_resources, limit)
        if not chosen:
            return []
        connection.execute(
            update(d).where(d.c.id.in_([row.id for row in chosen]))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                    attempts=d.c.attempts + 1, updated_at=now))
    return [Claimed(row.id, row.event_id, row.mapping, row.destination, row.resource_type, row.resource_id,
                    row.sequence_key, row.position, row.attempts, row.replayed_at or row.created_at,
                    row.replayed_at is not None) for row in chosen]


def _one_event_per_resource(candidates: list, busy: set[tuple], limit: int) -> list:
    """Per (destination, resource): all due deliveries of its lowest-sequence event, in mapping order."""
    lowest: dict[tuple, tuple[str, int]] = {}
    for row in candidates:
        resource = (row.destination, row.resource_type, row.resource_id)
        if resource in busy:
            continue
        rank = (row.sequence_key or "", row.event_id)
        if resource not in lowest or rank < lowest[resource]:
            lowest[resource] = rank
    chosen = [row for row in candidates
              if lowest.get((row.destination, row.resource_type, row.resource_id)) == (row.sequence_key or "",
                                                                                      row.event_id)]
    chosen.sort(key=lambda row: (row.event_id, row.position))
    return chosen[:limit]


def renew(engine: Engine, owner: str, ids: list[int], lease_s: float) -> None:
    if not ids:
        return
    d = _deliveries
    with write_transaction(engine) as connection:
        connection.execute(update(d).where(d.c.id.in_(ids), d.c.lease_owner == owner)
                           .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s)))


def release(engine: Engine, owner: str, ids: list[int]) -> None:
    """Give claimed deliveries back untouched (shutdown): due again at once, attempt not counted."""
    if not ids:
        return
    d = _deliveries
    with write_transaction(engine) as connection:
        connection.execute(update(d).where(d.c.id.in_(ids), d.c.lease_owner == owner)
                           .values(lease_owner=None, lease_expires_at=None, attempts=d.c.attempts - 1))


def held_by_others(owner: str | None = None):  # noqa: ANN201 - a SQL expression
    """Rows under a live lease (the status page refuses to replay them)."""
    d = _deliveries
    condition = and_(d.c.lease_expires_at.is_not(None), d.c.lease_expires_at > utcnow())
    return condition if owner is None else and_(condition, d.c.lease_owner != owner)
