"""The alert outbox: written once per (target, condition, group, window), claimed with a lease, sent, marked.

Writing: every worker evaluates the conditions, and any number may find the same one at once.
Writes are serialised (SQLite: the write lock taken at BEGIN IMMEDIATE; PostgreSQL: a
transaction-scoped advisory lock), and inside that turn a group whose last message is younger
than the interval gets nothing: at most one message per group per interval, across workers,
hosts and restarts. The unique key on (target, condition, group, window_start) holds even if
two writers were ever not serialised.

Sending: a row is claimed with a lease (attempt counted first), sent, then marked sent; a failed
send is retried with backoff (alerts.retry_base_s doubling up to retry_max_s, or as long as the
target's Retry-After asked) up to `alerts.max_attempts`, then
kept as `failed`. A sender that dies mid-send leaves its lease to expire, and the row is sent
again by whoever claims it next, marked as a repeat, with the same idempotency key: at least once.
The window for a duplicate is only between the target's acceptance and the commit that follows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, Engine, and_, case, delete, func, or_, select, text, update

from connector.alerts.config import AlertsConfig
from connector.alerts.message import Alert
from connector.ledger.database import conflict_insert, write_transaction
from connector.ledger.models import AlertCounter, AlertMessage, utcnow

_outbox = AlertMessage.__table__
_counters = AlertCounter.__table__
# pg_advisory_xact_lock's key for alert writers (the claim lock of connector.worker.claims is another).
_WRITE_LOCK_KEY = 0xA1E27

PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True)
class Firing:
    """A condition found true, and what its message says."""

    alert: Alert
    # The counter this message reports, and how much of it (webhooks answered 503): taken from the
    # counter in the same transaction that writes the message, so no 503 is reported twice.
    consumes: tuple[str, int] | None = None


@dataclass(frozen=True)
class LastMessage:
    created_at: datetime
    covered_until: datetime


def window_start(now: datetime, interval_s: float) -> datetime:
    epoch = now.timestamp()
    return datetime.fromtimestamp(epoch - epoch % interval_s, tz=timezone.utc).replace(microsecond=0)


def last_messages(connection: Connection, condition: str | None = None,
                  since: datetime | None = None) -> dict[tuple[str, str], LastMessage]:
    """The newest message of each (condition, group), any target."""
    o = _outbox
    query = select(o.c.condition, o.c.group_key, func.max(o.c.created_at), func.max(o.c.covered_until))
    if condition is not None:
        query = query.where(o.c.condition == condition)
    if since is not None:
        query = query.where(o.c.created_at >= since)
    rows = connection.execute(query.group_by(o.c.condition, o.c.group_key)).all()
    return {(row[0], row[1]): LastMessage(row[2], row[3]) for row in rows}


def quiet(last: LastMessage | None, now: datetime, interval_s: float) -> bool:
    """Whether a group may get a message now: none yet, or its last one is at least an interval old."""
    return last is None or (now - last.created_at).total_seconds() >= interval_s


def write(engine: Engine, firings: Iterable[Firing], targets: Iterable[str], interval_s: float,
          now: datetime | None = None) -> int:
    """Write one row per target for each firing whose group is quiet; returns the rows written."""
    now = now or utcnow()
    firings, targets = list(firings), sorted(targets)
    if not firings or not targets:
        return 0
    written = 0
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITE_LOCK_KEY})
        last = last_messages(connection, since=now - timedelta(seconds=interval_s))
        for firing in firings:
            alert = firing.alert
            if not quiet(last.get((alert.condition, alert.group)), now, interval_s):
                continue
            if firing.consumes is not None and not _take(connection, *firing.consumes):
                continue
            rows = [{"target": target, "condition": alert.condition, "group_key": alert.group[:255],
                     "window_start": window_start(now, interval_s), "created_at": now, "covered_until": alert.at,
                     "message": alert.to_json(), "state": PENDING, "attempts": 0, "next_attempt_at": now}
                    for target in targets]
            # RETURNING counts what was inserted (a conflict returns nothing); rowcount is not reliable here.
            written += len(connection.execute(
                conflict_insert(connection.dialect, _outbox).on_conflict_do_nothing().returning(_outbox.c.id), rows).all())
            last[(alert.condition, alert.group)] = LastMessage(now, alert.at)
    return written


# --- counters kept between messages ---------------------------------------------------------------


def add_to_counter(engine: Engine, name: str, count: int, first_at: datetime, last_at: datetime) -> None:
    """Add `count` to a counter (several processes add to one)."""
    with write_transaction(engine) as connection:
        insert = conflict_insert(connection.dialect, _counters).values(
            name=name, count=count, first_at=first_at, last_at=last_at)
        connection.execute(insert.on_conflict_do_update(index_elements=["name"], set_={
            "count": _counters.c.count + insert.excluded.count,
            "first_at": func.coalesce(_counters.c.first_at, insert.excluded.first_at),
            "last_at": insert.excluded.last_at}))


def read_counter(connection: Connection, name: str) -> tuple[int, datetime | None, datetime | None]:
    row = connection.execute(select(_counters.c.count, _counters.c.first_at, _counters.c.last_at)
                             .where(_counters.c.name == name)).first()
    return (int(row.count), row.first_at, row.last_at) if row else (0, None, None)


def _take(connection: Connection, name: str, count: int) -> bool:
    """Take `count` from a counter; False when it no longer holds that much (another writer reported it)."""
    c = _counters
    remaining = c.c.count - count
    result = connection.execute(update(c).where(c.c.name == name, c.c.count >= count).values(
        count=remaining, first_at=case((remaining == 0, None), else_=c.c.last_at)))
    return result.rowcount == 1


# --- sending ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    target: str
    condition: str
    group: str
    alert: Alert
    attempts: int  # including this one
    created_at: datetime
    repeat: bool  # an earlier try's lease ran out unfinished: it may have reached the target

    @property
    def key(self) -> str:
        """The idempotency key: the same on every try of this row, different in every other ledger."""
        digest = hashlib.sha256(f"{self.target}|{self.condition}|{self.group}|{self.created_at.isoformat()}"
                                .encode()).hexdigest()[:16]
        return f"okendo-alert-{self.id}-{digest}"


def claim(engine: Engine, owner: str, targets: Iterable[str], lease_s: float,
          now: datetime | None = None) -> Claimed | None:
    """Lease the oldest due message for one of `targets`, counting the attempt before it is made."""
    now = now or utcnow()
    names = list(targets)
    if not names:
        return None
    o = _outbox
    due = and_(o.c.state == PENDING, o.c.next_attempt_at <= now, o.c.target.in_(names),
               or_(o.c.lease_expires_at.is_(None), o.c.lease_expires_at <= now))
    with write_transaction(engine) as connection:
        query = select(o).where(due).order_by(o.c.next_attempt_at, o.c.id).limit(1)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = connection.execute(query).first()
        if row is None:
            return None
        connection.execute(update(o).where(o.c.id == row.id).values(
            lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s), attempts=o.c.attempts + 1))
    return Claimed(row.id, row.target, row.condition, row.group_key, Alert.from_json(row.message),
                   row.attempts + 1, row.created_at, repeat=row.lease_expires_at is not None)


def mark_sent(engine: Engine, claimed: Claimed, owner: str, now: datetime | None = None) -> None:
    o = _outbox
    with write_transaction(engine) as connection:
        connection.execute(update(o).where(o.c.id == claimed.id, o.c.lease_owner == owner).values(
            state=SENT, sent_at=now or utcnow(), lease_owner=None, lease_expires_at=None))


def mark_failed(engine: Engine, claimed: Claimed, owner: str, error: str, *, permanent: bool,
                retry_after: float | None, config: AlertsConfig, now: datetime | None = None) -> bool:
    """Record a failed try: due again after a backoff, or `failed` for good. True when given up."""
    now = now or utcnow()
    give_up = permanent or claimed.attempts >= config.max_attempts
    wait = min(config.retry_base_s * 2 ** (claimed.attempts - 1), config.retry_max_s)
    if retry_after is not None:  # the target said when (a 429's Retry-After): that, within reason
        wait = min(max(retry_after, 1.0), config.retry_max_s)
    o = _outbox
    with write_transaction(engine) as connection:
        connection.execute(update(o).where(o.c.id == claimed.id, o.c.lease_owner == owner).values(
            state=FAILED if give_up else PENDING, last_error=error[:2000], lease_owner=None, lease_expires_at=None,
            next_attempt_at=now if give_up else now + timedelta(seconds=wait)))
    return give_up


def prune(engine: Engine, keep_days: float, now: datetime | None = None) -> int:
    """Remove messages older than `keep_days` (sent, failed, or waiting for a target no longer configured)."""
    cutoff = (now or utcnow()) - timedelta(days=keep_days)
    with write_transaction(engine) as connection:
        return connection.execute(delete(_outbox).where(_outbox.c.created_at < cutoff)).rowcount


def recent(connection: Connection, limit: int = 50) -> list:
    o = _outbox
    return connection.execute(select(o).order_by(o.c.id.desc()).limit(limit)).all()
