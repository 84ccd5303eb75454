"""Resources read from Okendo's API, stored as events that never put an older state over a newer one.

A resource read from the API (a *snapshot*) carries no `sequenceNumber`, the number that orders the
webhooks of a resource (https://docs.okendo.io/webhooks/getting-started), so the connector gives it
a place in that order, once, when it stores it:

    A snapshot goes right after the newest event the ledger had received for its resource when the
    snapshot was read, and before every event received after that.

It takes that event's sequence number (0 for a resource the ledger has never seen), and, stored
later, it ranks after it; the worker then orders, coalesces and guards it like any webhook
(connector.worker.ordering, coalescing). What follows, in every interleaving:
- a resource the ledger has never seen: the snapshot applies (as a `create`: every mapping that
  writes a new review's records runs); a known one that differs: it applies as an `update`;
- a webhook received after the snapshot was read has a higher sequence and supersedes it, whether it
  is applied before or after the snapshot comes up;
- a webhook received well before the snapshot was read is older than what the snapshot shows (Okendo
  sends a webhook after the change it reports), so the snapshot, ranked after it, wins;
- but a webhook received less than SETTLE_S before the read may report a change Okendo's list does
  not show yet (an index that lags behind the webhooks): the snapshot is not stored then (counted
  as `settling`), the webhook stands, and the next read (the next reconciliation) compares again;
- a resource deleted by a webhook stays deleted: no snapshot is stored for it, and a snapshot stored
  before the delete arrived is stale against the tombstone or superseded by the delete;
- a snapshot that says what the ledger's newest state of the resource says is not stored at all, so
  re-reading costs no CRM call; its message id is derived from the resource, its place and its
  content, so two runs storing the same snapshot at once store it once;
- a snapshot the ledger could not keep whole is refused by name and not stored: an id longer than
  the ledger's resource ids, or a body over the receiver's limit (receiver.max_body_bytes, what a
  webhook that size would get: a 413).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from connector import okendo
from connector.ledger.events import IncomingEvent, record_events
from connector.ledger.models import (
    EMAIL_MAX,
    MESSAGE_ID_MAX,
    RESOURCE_ID_MAX,
    Event,
    EventOrigin,
    EventState,
    ResourceState,
    sequence_key,
)
from connector.ledger.resource_states import MEANINGFUL_STATES, canonical, content_hash, resource_of

_events = Event.__table__
_states = ResourceState.__table__

MESSAGE_ID_PREFIX = "okendo-api:"
# Seconds after a webhook of a resource during which a read of it is not trusted over the webhook.
# Okendo does not say how soon its list shows a change; two minutes is far more than an index lag
# and costs little: the webhook carries the change, and the next read compares again.
SETTLE_S = 120.0
MAX_BODY_BYTES = 1_048_576  # receiver.max_body_bytes's default


@dataclass(frozen=True)
class Snapshot:
    """One resource as Okendo's API answered it."""

    resource_type: str
    resource: dict[str, Any]
    read_at: datetime  # when the request that answered it was sent
    request: str  # that request (method, path and query; never credentials)
    origin: str  # EventOrigin.BACKFILL or RECONCILE

    @property
    def resource_id(self) -> str:
        return str(self.resource[okendo.RESOURCE_ID_FIELDS[self.resource_type]])


@dataclass
class SnapshotCounts:
    read: int = 0
    stored: int = 0  # new events in the ledger
    missing: int = 0  # of the stored: resources the ledger had never seen
    different: int = 0  # of the stored: resources whose newest state in the ledger says otherwise
    unchanged: int = 0  # not stored: the ledger's newest state says the same
    deleted: int = 0  # not stored: deleted by a webhook, and a snapshot never brings a resource back
    already: int = 0  # stored before (the same snapshot, by another run or an earlier try)
    settling: int = 0  # not stored: a webhook of it arrived less than SETTLE_S before the read
    stored_ids: list[str] = field(default_factory=list)  # the resources stored, for the caller's report
    refused: list[str] = field(default_factory=list)  # not stored, by name and why

    def add(self, other: SnapshotCounts) -> None:
        for name in ("read", "stored", "missing", "different", "unchanged", "deleted", "already", "settling"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.stored_ids += other.stored_ids
        self.refused += other.refused


@dataclass(frozen=True)
class _Newest:
    """The newest state of a resource the ledger holds (an event, or what retention kept of one)."""

    rank: tuple[str, int]  # (sequence key, event id)
    deleted: bool
    resource: dict[str, Any] | None  # None: only its hash is left (the events were pruned)
    content_hash: str | None


def _says_the_same(snapshot: dict[str, Any], newest: _Newest) -> bool:
    if newest.resource is not None:
        # On the fields the API answered: a webhook may carry fields the API leaves out (or the other
        # way round), and that alone is not a change worth a CRM write.
        return all(canonical(snapshot[key]) == canonical(newest.resource.get(key)) for key in snapshot)
    return newest.content_hash == content_hash(snapshot)


def store_snapshots(engine: Engine, snapshots: Sequence[Snapshot], *, dry_run: bool = False,
                    max_body_bytes: int = MAX_BODY_BYTES) -> SnapshotCounts:
    """Store, as received events, the snapshots the ledger lacks (see the module's rule); one
    transaction for all of them. `dry_run`: count what would be stored, store nothing."""
    counts = SnapshotCounts(read=len(snapshots))
    if not snapshots:
        return counts
    by_type: dict[str, list[Snapshot]] = {}
    for snapshot in snapshots:
        refusal = _refusal(snapshot, max_body_bytes)
        if refusal:
            counts.refused.append(refusal)
            continue
        by_type.setdefault(snapshot.resource_type, []).append(snapshot)
    incoming: list[tuple[IncomingEvent, str, bool]] = []
    for resource_type, group in by_type.items():
        ids = sorted({snapshot.resource_id for snapshot in group})
        view = _ledger_view(engine, resource_type, ids)
        for snapshot in group:
            known = view.newest.get(snapshot.resource_id)
            if known is not None and known.deleted:
                counts.deleted += 1
                continue
            if known is not None and _says_the_same(snapshot.resource, known):
                counts.unchanged += 1
                continue
            if view.webhook_settling(snapshot):
                counts.settling += 1
                continue
            incoming.append((_incoming(snapshot, view.place(snapshot), topic="update" if known else "create"),
                             snapshot.resource_id, known is None))
    if dry_run:
        counts.missing = sum(1 for _, _, missing in incoming if missing)
        counts.different = len(incoming) - counts.missing
        counts.stored = len(incoming)
        return counts
    results = record_events(engine, [event for event, _, _ in incoming]) if incoming else []
    for (_, resource_id, missing), result in zip(incoming, results):
        if not result.created:
            counts.already += 1
            continue
        counts.stored += 1
        counts.stored_ids.append(resource_id)
        if missing:
            counts.missing += 1
        else:
            counts.different += 1
    return counts


@dataclass
class _LedgerView:
    newest: dict[str, _Newest]  # per resource: its newest state in the ledger
    received: dict[str, list[tuple[datetime, str]]]  # per resource: (received at, sequence key) of its events
    pruned: dict[str, str]  # per resource: the sequence key retention kept of its pruned events
    webhooks_at: dict[str, list[datetime]]  # per resource: when its webhooks (not snapshots) were received

    def webhook_settling(self, snapshot: Snapshot) -> bool:
        """A webhook of the resource arrived less than SETTLE_S before the snapshot was read."""
        since = snapshot.read_at - timedelta(seconds=SETTLE_S)
        return any(since < at <= snapshot.read_at for at in self.webhooks_at.get(snapshot.resource_id, ()))

    def place(self, snapshot: Snapshot) -> str | None:
        """The sequence key of the newest event received before the snapshot was read."""
        keys = [key for at, key in self.received.get(snapshot.resource_id, ()) if at <= snapshot.read_at]
        if snapshot.resource_id in self.pruned:
            keys.append(self.pruned[snapshot.resource_id])
        return max(keys, default=None)


def _ledger_view(engine: Engine, resource_type: str, ids: list[str]) -> _LedgerView:
    e, s = _events, _states
    view = _LedgerView({}, {}, {}, {})
    newest_event: dict[str, tuple[tuple[str, int], str | None]] = {}
    with engine.connect() as connection:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in connection.execute(
                    select(e.c.id, e.c.resource_id, e.c.sequence_number, e.c.topic, e.c.received_at, e.c.origin)
                    .where(e.c.resource_type == resource_type, e.c.resource_id.in_(chunk),
                           e.c.state.in_(MEANINGFUL_STATES), e.c.sequence_number.is_not(None))):
                rank = (sequence_key(row.sequence_number), row.id)
                if row.resource_id not in newest_event or rank > newest_event[row.resource_id][0]:
                    newest_event[row.resource_id] = (rank, row.topic)
                view.received.setdefault(row.resource_id, []).append((row.received_at, rank[0]))
                if row.origin == EventOrigin.WEBHOOK:
                    view.webhooks_at.setdefault(row.resource_id, []).append(row.received_at)
            for row in connection.execute(select(s).where(s.c.resource_type == resource_type,
                                                         s.c.resource_id.in_(chunk))):
                view.newest[row.resource_id] = _Newest((row.sequence_key or "", row.event_id), row.deleted, None,
                                                       row.content_hash)
                if row.sequence_key:
                    view.pruned[row.resource_id] = row.sequence_key
        # The bodies of the newest events only: what the snapshots are compared with.
        wanted = {rank[1]: resource_id for resource_id, (rank, _topic) in newest_event.items()
                  if resource_id not in view.newest or rank > view.newest[resource_id].rank}
        bodies: dict[int, bytes] = {}
        event_ids = sorted(wanted)
        for start in range(0, len(event_ids), 500):
            bodies.update(connection.execute(select(e.c.id, e.c.body).where(
                e.c.id.in_(event_ids[start:start + 500]))).all())
    for event_id, resource_id in wanted.items():
        rank, topic = newest_event[resource_id]
        resource = resource_of(bodies.get(event_id))
        view.newest[resource_id] = _Newest(rank, topic == "delete", resource,
                                           content_hash(resource) if resource is not None else None)
    return view


def _refusal(snapshot: Snapshot, max_body_bytes: int) -> str | None:
    """Why the ledger cannot keep this snapshot whole (named by its resource), or None."""
    what = f"{snapshot.resource_type.replace('_customer', ' member')} {snapshot.resource_id[:80]}"
    if len(snapshot.resource_id) > RESOURCE_ID_MAX:
        return f"{what}…: its id is longer than {RESOURCE_ID_MAX} characters; left out"
    size = len(_document(snapshot, "update", "0"))
    if size > max_body_bytes:
        return (f"{what}: {size:,} bytes, more than the {max_body_bytes:,} bytes a webhook may carry "
                "(receiver.max_body_bytes); left out: raise that limit to store it")
    return None


def _document(snapshot: Snapshot, topic: str, sequence: str) -> bytes:
    return json.dumps({
        "resourceType": snapshot.resource_type,
        "topic": topic,
        "resource": snapshot.resource,
        # Not Okendo's: where the resource came from and where the connector placed it (see above).
        "snapshot": {"origin": snapshot.origin, "readAt": snapshot.read_at.isoformat(),
                     "request": snapshot.request, "placedAfterSequence": sequence},
    }, ensure_ascii=False, separators=(",", ":")).encode()


def _incoming(snapshot: Snapshot, place: str | None, topic: str) -> IncomingEvent:
    sequence = str(int(place)) if place else "0"
    digest = content_hash(snapshot.resource)
    message_id = f"{MESSAGE_ID_PREFIX}{snapshot.resource_type}:{snapshot.resource_id}:{sequence}:{digest[:24]}"
    if len(message_id) > MESSAGE_ID_MAX:
        message_id = MESSAGE_ID_PREFIX + hashlib.sha256(message_id.encode()).hexdigest()
    email = snapshot.resource
    for key in okendo.CUSTOMER_EMAIL_PATHS.get(snapshot.resource_type, ()):
        email = email.get(key) if isinstance(email, dict) else None
    email = email.strip().lower() if isinstance(email, str) and 0 < len(email.strip()) <= EMAIL_MAX else None
    return IncomingEvent(
        message_id=message_id,
        body=_document(snapshot, topic, sequence),
        headers={"okendo-api-request": snapshot.request, "okendo-api-read-at": snapshot.read_at.isoformat()},
        state=EventState.RECEIVED,
        resource_type=snapshot.resource_type,
        topic=topic,
        resource_id=snapshot.resource_id,
        sequence_number=sequence,
        customer_email=email,
        received_at=snapshot.read_at,
        origin=snapshot.origin,
    )
