"""Claiming due deliveries with leases.

A claim is one short write transaction: SQLite serialises it with BEGIN
IMMEDIATE; PostgreSQL with a transaction-scoped advisory lock (so two workers
never claim two events of one resource at once) and `FOR UPDATE SKIP LOCKED`
on the rows. A claim takes one kind of delivery (destination and mapping) so
that a backlog leaves in full CRM batches; per (destination, resource) only the
oldest open event, and per event its mappings one after the other; never a
resource another worker holds: deliveries for one resource and destination
never run concurrently.
Nor a delivery whose target CRM record (a contact keyed by email) another
worker is writing: a lookup-then-create must not race another one. A dead
worker's leases simply expire.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, func, or_, select, text, update

from connector.ledger.database import write_transaction
from connector.ledger.models import Delivery, DeliveryState, DestinationStatus, utcnow
from connector.worker.resource_rows import due_rows_of

_deliveries = Delivery.__table__
_status = DestinationStatus.__table__
# Any constant shared by every worker of this ledger: pg_advisory_xact_lock's first key (the second is
# the schema's hash). Workers of a release before this one used the one-key form: stop them all before
# starting this one, or two of them could claim one resource's events at once.
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
    # When the lease of a worker that died during an earlier try ran out (None: no try was abandoned):
    # until then, that try may still have written to the CRM.
    abandoned_lease_until: datetime | None = None
    # The sequence of a newer event of this resource waiting for the same mapping: that one is sent
    # instead, and this one ends stale without a CRM call.
    superseded_by: str | None = None

    @property
    def tried_before(self) -> bool:
        """Whether an earlier try may have reached the CRM (a create must look before creating again)."""
        return self.previous_attempts > 0 or self.replayed


def claim(engine: Engine, owner: str, limit: int, lease_s: float, now: datetime | None = None,
          held: Iterable[str] = ()) -> list[Claimed]:
    """Lease up to `limit` due deliveries, all of one kind (destination and mapping) when possible.

    One kind per claim is what lets a backlog go out in full CRM batches (100 records per
    HubSpot call, 200 per Salesforce collection) instead of a few records for each of a dozen
    kinds. Order is kept: a delivery is taken only when its event is the oldest still open for
    its resource (in any kind of that destination), and when no earlier mapping of its event for
    that destination is still open (a note waits for the contact it is attached to).
    """
    now = now or utcnow()
    d = _deliveries
    # A paused destination's deliveries wait unclaimed, so they spend no attempts (connector.worker.pausing).
    paused = select(_status.c.destination).where(_status.c.paused_at.is_not(None))
    due = and_(d.c.state.in_(DeliveryState.DUE),
               or_(d.c.next_attempt_at.is_(None), d.c.next_attempt_at <= now),
               or_(d.c.lease_expires_at.is_(None), d.c.lease_expires_at <= now),
               d.c.destination.not_in(paused))
    held = list(held)  # destinations waiting for their daily API budget (connector.worker.budget)
    if held:
        due = and_(due, d.c.destination.not_in(held))
    # What choosing needs (no timestamps: reading them is most of the cost of a row); the rest is read
    # for the chosen deliveries only.
    columns = (d.c.id, d.c.event_id, d.c.mapping, d.c.destination, d.c.resource_type, d.c.resource_id,
               d.c.sequence_key, d.c.position, d.c.attempts, d.c.target_key,
               d.c.replayed_at.is_not(None).label("replayed"))
    window = limit * 4
    held = (select(d.c.destination, d.c.resource_type, d.c.resource_id, d.c.target_key).distinct()
            .where(d.c.lease_expires_at > now, d.c.state.in_(DeliveryState.DUE)))
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            # Keyed by the schema too: ledgers sharing one database (a schema each) never wait for each other.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"),
                               {"key": _CLAIM_LOCK_KEY})
        # Every kind with due deliveries, oldest first (counted by the database, not read row by row):
        # when the oldest kinds all wait for batches in flight, a younger kind goes instead of nobody.
        kinds = [(row.destination, row.mapping) for row in connection.execute(
            select(d.c.destination, d.c.mapping).where(due).group_by(d.c.destination, d.c.mapping)
            .order_by(func.min(d.c.next_attempt_at), func.min(d.c.id)).limit(_KINDS_TRIED))]
        if not kinds:
            return []
        busy_resources, busy_targets = set(), set()
        for row in connection.execute(held):
            busy_resources.add((row.destination, row.resource_type, row.resource_id))
            if row.target_key:
                busy_targets.add((row.destination, row.target_key))
        chosen: list = []
        superseded: dict[int, str] = {}
        partial: tuple[list, dict[int, str]] | None = None  # the first kind found with a part batch only
        for destination, mapping in kinds[:_KINDS_TRIED]:
            candidates = _select_due(connection, select(*columns).where(
                due, d.c.destination == destination, d.c.mapping == mapping)
                .order_by(d.c.next_attempt_at, d.c.id).limit(window))
            found: dict[int, str] = {}
            chosen = _in_order(connection, candidates, busy_resources, busy_targets, limit, found)
            # A few of a kind whose others wait for batches in flight: those will be free soon, and go
            # together in one CRM call instead of two. Another kind goes first if it has a full batch.
            if chosen and (len(chosen) >= limit // 2 or len(chosen) == len(candidates)):
                superseded.update(found)
                break
            if chosen and partial is None:
                partial = (chosen, found)
            chosen = []
        if not chosen and partial is not None:
            chosen, found = partial
            superseded.update(found)
        if not chosen:  # every kind tried waits for another: take what is free across kinds
            oldest = _select_due(connection, select(*columns).where(due).order_by(d.c.next_attempt_at, d.c.id)
                                 .limit(window))
            chosen = _in_order(connection, oldest, busy_resources, busy_targets, limit, superseded)
        if not chosen:
            return []
        ids = [row.id for row in chosen]
        times = {row.id: row for row in connection.execute(
            select(d.c.id, d.c.created_at, d.c.replayed_at, d.c.lease_expires_at).where(d.c.id.in_(ids)))}
        connection.execute(
            update(d).where(d.c.id.in_(ids))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                    attempts=d.c.attempts + 1, updated_at=now))
    return [Claimed(row.id, row.event_id, row.mapping, row.destination, row.resource_type, row.resource_id,
                    row.sequence_key, row.position, row.attempts,
                    times[row.id].replayed_at or times[row.id].created_at, row.replayed,
                    times[row.id].lease_expires_at, superseded.get(row.id)) for row in chosen]


# How many kinds (oldest first) a claim looks at before taking a mixed batch.
_KINDS_TRIED = 8


def _select_due(connection: Connection, query) -> list:  # type: ignore[no-untyped-def]
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return connection.execute(query).all()


def _in_order(connection: Connection, candidates: list, busy_resources: set[tuple], busy_targets: set[tuple],
              limit: int, superseded: dict[int, str]) -> list:
    """The candidates that may go now, in event and mapping order, at most `limit`.

    A candidate never tried before for which a newer event of its resource waits with a delivery of
    the same mapping is superseded: it is still claimed, in its turn, so it ends stale and its event's other mappings go
    on; the newer one writes the newest state, and the CRM never sees the older one (its workflows
    would fire on a value about to be overwritten). `superseded` gets the newer sequence of each.
    """
    free = [row for row in candidates if (row.destination, row.target_key) not in busy_targets
            and (row.destination, row.resource_type, row.resource_id) not in busy_resources]
    if not free:
        return []
    d = _deliveries
    open_rows = []
    first_positions: list = []
    for destination in {row.destination for row in free}:
        mine = [row for row in free if row.destination == destination]
        resources = list({(row.resource_type, row.resource_id) for row in mine if row.resource_id is not None})
        # Through ix_deliveries_destination_resource (a row-value IN made SQLite read every due row).
        # A delivery carries its event's resource, so these rows hold every open mapping of the events
        # that have one, and give their first open mapping too.
        open_rows += due_rows_of(connection, (d.c.destination, d.c.resource_type, d.c.resource_id, d.c.event_id,
                                              d.c.position, d.c.mapping),
                                 [(destination, resource_type, resource_id) for resource_type, resource_id in resources])
        # Events without a resource: their first open mapping counted by the database.
        event_ids = list({row.event_id for row in mine if row.resource_id is None})
        for chunk in _chunks(event_ids):
            first_positions += connection.execute(select(d.c.destination, d.c.event_id, func.min(d.c.position)).where(
                d.c.state.in_(DeliveryState.DUE), d.c.destination == destination, d.c.event_id.in_(chunk))
                .group_by(d.c.destination, d.c.event_id)).all()
    # The oldest open event of each resource, and the first open mapping of each event.
    lowest: dict[tuple, tuple[str, int]] = {}
    newest: dict[tuple, tuple[str, int]] = {}  # per (destination, resource, mapping)
    first_position: dict[tuple[str, int], int] = {}
    for row in open_rows:
        if row.resource_id is not None and row.sequence_key:
            kind = (row.destination, row.resource_type, row.resource_id, row.mapping)
            newest[kind] = max(newest.get(kind, ("", 0)), (row.sequence_key, row.event_id))
        resource = (row.destination, row.resource_type, row.resource_id)
        rank = (row.sequence_key or "", row.event_id)
        if row.resource_id is not None and (resource not in lowest or rank < lowest[resource]):
            lowest[resource] = rank
        key = (row.destination, row.event_id)
        first_position[key] = min(first_position.get(key, row.position), row.position)
    for destination, event_id, position in first_positions:
        key = (destination, event_id)
        first_position[key] = min(first_position.get(key, position), position)
    chosen = [row for row in free
              if (row.resource_id is None
                  or lowest.get((row.destination, row.resource_type, row.resource_id)) == (row.sequence_key or "",
                                                                                           row.event_id))
              and first_position.get((row.destination, row.event_id), row.position) == row.position]
    chosen.sort(key=lambda row: (row.event_id, row.position))
    chosen = chosen[:limit]
    for row in chosen:
        if row.attempts or row.replayed:
            # An earlier try may have written this one (its answer lost): it goes out itself and looks
            # before creating again; the newer one, never tried, would not know to look.
            continue
        newer = newest.get((row.destination, row.resource_type, row.resource_id, row.mapping))
        if row.sequence_key and newer is not None and newer > (row.sequence_key, row.event_id):
            superseded[row.id] = newer[0]
    return chosen


def _chunks(values: list, size: int = 500):  # type: ignore[no-untyped-def]
    for start in range(0, len(values), size):
        yield values[start:start + size]


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
