"""The ledger's tables.

Modelled on dj-stripe's webhook row: each event keeps its raw body, the headers
that matter, how it was verified, its processing state and why, so anything can
be inspected and replayed later. Deliveries, attempts and record links are the
worker's bookkeeping: one delivery per (event, mapping, destination).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

# Column lengths the receiver enforces before inserting (PostgreSQL would refuse longer values).
MESSAGE_ID_MAX = 255
RESOURCE_TYPE_MAX = 64
TOPIC_MAX = 32
RESOURCE_ID_MAX = 255
SEQUENCE_MAX = 100  # digits; larger than any 64-bit number on purpose: Okendo documents no maximum length
EMAIL_MAX = 320


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use timezone-aware UTC")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class EventOrigin:
    """Where an event came from (the `origin` column)."""

    WEBHOOK = "webhook"  # posted by Okendo through Svix, signature verified
    BACKFILL = "backfill"  # read from Okendo's API by `connector okendo backfill`
    RECONCILE = "reconcile"  # read from Okendo's API by the worker's periodic reconciliation

    API = (BACKFILL, RECONCILE)


class EventState:
    """Processing states of an event (the per-destination ones live on deliveries)."""

    RECEIVED = "received"  # verified and stored; the worker has not mapped it yet
    PLANNED = "planned"  # mapped: its deliveries exist
    UNMAPPED = "unmapped"  # mapped, but no enabled mapping handles it
    INVALID = "invalid"  # signed, but the body is not a usable Okendo envelope
    UNSUPPORTED = "unsupported"  # a well-formed envelope of a resource type or topic we do not handle


def sequence_key(sequence_number: str) -> str:
    """A digit string padded to a fixed width, so text order is numeric order in SQL indexes."""
    return str(int(sequence_number)).zfill(SEQUENCE_MAX)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    # Svix's message id: identical on every redelivery, so the unique key deduplicates.
    message_id: Mapped[str] = mapped_column(String(MESSAGE_ID_MAX), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # The signed `webhook-timestamp` of the attempt that was stored.
    webhook_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resource_type: Mapped[str | None] = mapped_column(String(RESOURCE_TYPE_MAX))
    topic: Mapped[str | None] = mapped_column(String(TOPIC_MAX))
    resource_id: Mapped[str | None] = mapped_column(String(RESOURCE_ID_MAX), index=True)
    # Exactly as sent: a digit string that can exceed 64 bits. Compare as int.
    sequence_number: Mapped[str | None] = mapped_column(String(SEQUENCE_MAX))
    customer_email: Mapped[str | None] = mapped_column(String(EMAIL_MAX), index=True)
    state: Mapped[str] = mapped_column(String(16), default=EventState.RECEIVED)
    state_reason: Mapped[str | None] = mapped_column(Text)
    # 1-based position of the configured secret that verified the signature;
    # NULL only when insecure development mode accepted an unsigned event.
    verified_by_secret: Mapped[int | None] = mapped_column(SmallInteger)
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    # Where it came from: a webhook, or a snapshot read from Okendo's API (connector.backfill).
    origin: Mapped[str] = mapped_column(String(16), default="webhook", server_default="webhook")

    __table_args__ = (
        Index("ix_events_state_id", "state", "id"),
        Index("ix_events_resource_type_topic_id", "resource_type", "topic", "id"),
        Index("ix_events_origin_id", "origin", "id"),
    )


class DeliveryState:
    PENDING = "pending"  # due now
    RETRYING = "retrying"  # due at next_attempt_at
    DELIVERED = "delivered"
    DEAD = "dead"  # a permanent error, or out of attempts: kept with its last error until replayed
    STALE = "stale"  # a newer event of the same resource was applied first
    SKIPPED = "skipped"  # nothing to do (no key, no record to update), with the reason

    DUE = (PENDING, RETRYING)
    OPEN = (PENDING, RETRYING, DEAD)  # what retention must never remove


class Delivery(Base):
    """One event's journey to one destination through one mapping."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    mapping: Mapped[str] = mapped_column(String(128))
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    crm_record_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Copied from the event, so ordering and one-at-a-time per resource need no join.
    resource_type: Mapped[str | None] = mapped_column(String(RESOURCE_TYPE_MAX))
    resource_id: Mapped[str | None] = mapped_column(String(RESOURCE_ID_MAX))
    sequence_key: Mapped[str | None] = mapped_column(String(SEQUENCE_MAX))
    position: Mapped[int] = mapped_column(Integer, default=0)  # the mapping's place among the event's
    # The CRM record a keyed write targets (object, key field, value): two deliveries
    # aiming at one record (a review and a loyalty sign-up of one shopper) never run at once.
    target_key: Mapped[str | None] = mapped_column(String(255))
    operation: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what the mapping produced last
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replayed_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        UniqueConstraint("event_id", "mapping", "destination"),
        # The worker's claim query: due deliveries in a state, oldest first.
        Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_deliveries_destination_state", "destination", "state"),
        Index("ix_deliveries_destination_resource", "destination", "resource_type", "resource_id"),
        Index("ix_deliveries_lease_expires_at", "lease_expires_at"),
        Index("ix_deliveries_destination_target_key", "destination", "target_key"),
        Index("ix_deliveries_destination_mapping_state_next_attempt_at", "destination", "mapping", "state",
              "next_attempt_at"),
        Index("ix_deliveries_event_id", "event_id"),
        # The status page's filters: by delivery state (and destination), newest events first.
        Index("ix_deliveries_state_event_id", "state", "event_id"),
        Index("ix_deliveries_destination_state_event_id", "destination", "state", "event_id"),
        # The status page's charts (migration 0013): what was delivered, failed, queued and left when.
        Index("ix_deliveries_destination_state_updated_at", "destination", "state", "updated_at", "created_at"),
        Index("ix_deliveries_state_created_at", "state", "created_at"),
    )


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(Text)
    error_class: Mapped[str | None] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(128))
    requests: Mapped[list[Any] | None] = mapped_column(JSON)  # what was sent (dry-run: what would be)

    # CRM call latency over time on the status page's charts (migration 0013).
    __table_args__ = (Index("ix_delivery_attempts_started_at", "started_at", "delivery_id", "duration_ms"),)


class WorkerPresence(Base):
    """A running delivery worker (embedded in gunicorn or standalone, on any host), by its heartbeat."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # embedded | standalone
    threads: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_claim_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deliveries_done: Mapped[int] = mapped_column(BigIntId, default=0)
    config_hash: Mapped[str] = mapped_column(String(64))


class AuditEntry(Base):
    """Who did what on the status page: sign-ins (right or wrong, never the password) and replays."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))  # sign_in | sign_in_failed | sign_out | replay
    address: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)


class RecordLink(Base):
    """Which CRM record an Okendo resource became, per destination and object.

    Deletes that carry only ids (a loyalty adjustment delete has no customer)
    are resolved through this table, so it outlives pruned events.
    """

    __tablename__ = "record_links"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64))
    crm_object: Mapped[str] = mapped_column(String(128))
    source_type: Mapped[str] = mapped_column(String(RESOURCE_TYPE_MAX))
    source_id: Mapped[str] = mapped_column(String(RESOURCE_ID_MAX))
    crm_record_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("destination", "crm_object", "source_type", "source_id"),)


class ResourceVersion(Base):
    """The newest event applied per Okendo resource and destination: the ordering guard.

    An older event loses to it (`stale`); a delete leaves `deleted` set, a
    tombstone, so a late update cannot bring the record back.
    """

    __tablename__ = "resource_versions"

    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(RESOURCE_TYPE_MAX), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(RESOURCE_ID_MAX), primary_key=True)
    sequence_key: Mapped[str] = mapped_column(String(SEQUENCE_MAX))
    event_id: Mapped[int | None] = mapped_column(BigIntId)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DestinationStatus(Base):
    """What the workers last learned about each CRM, for the status page."""

    __tablename__ = "destination_status"

    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    quota: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Paused: no worker claims this destination's deliveries (they wait; no attempt is spent) until
    # resumed. Set by an operator, or by a worker when the failure is the destination's, not a record's.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_by: Mapped[str | None] = mapped_column(String(128))  # a user, or "connector" when automatic
    # The last remote check (what the mappings write that the CRM lacks), run at start and on reload.
    remote_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    remote_problems: Mapped[list[str] | None] = mapped_column(JSON)


class AlertMessage(Base):
    """One alert for one target, in the outbox it leaves through (connector.alerts.outbox).

    Written once per (target, condition, group, interval window): the unique key makes a second
    evaluator, or the same one after a crash, insert nothing. The message is fixed when written,
    so every retry sends the same text.
    """

    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(64))
    condition: Mapped[str] = mapped_column(String(32))
    group_key: Mapped[str] = mapped_column(String(255))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)  # the interval window it was written in
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    covered_until: Mapped[datetime] = mapped_column(UTCDateTime)  # what it counts happened before this
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("target", "condition", "group_key", "window_start"),
        Index("ix_alert_outbox_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_alert_outbox_condition_group_key_created_at", "condition", "group_key", "created_at"),
    )


class AlertCounter(Base):
    """A count kept between an alert's messages, added to by every process (webhooks answered 503)."""

    __tablename__ = "alert_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigIntId, default=0)
    first_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RateLimitWindow(Base):
    """One CRM account's request window, shared by every process on the ledger (connector.destinations.ratelimit).

    The window is kept as spaced slots: each request takes the next free instant, `spacing` after the
    previous one, so no `per_seconds` span ever holds more than `requests`. One atomic UPDATE hands out a
    slot; nothing is held while the CRM call runs. Keyed by a hash of the account (never the credential).
    UNLOGGED on PostgreSQL (migration 0009); on SQLite the limiter keeps it in a file beside the ledger.
    """

    __tablename__ = "rate_limit_windows"

    account_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))  # the first destination that used it, for people
    next_slot_at: Mapped[float] = mapped_column(Float, default=0.0)  # epoch seconds of the next free slot
    paused_until: Mapped[float] = mapped_column(Float, default=0.0)  # set from a 429 / Retry-After
    paused_by: Mapped[str | None] = mapped_column(String(128))  # the process that saw it


class RateLimitLease(Base):
    """One of an account's concurrent-request slots (Salesforce's cap), leased for one call; a lease
    that outlives its expiry (a crashed process) is free again."""

    __tablename__ = "rate_limit_leases"

    account_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)


class ResourceState(Base):
    """The newest state the ledger held of an Okendo resource when its events were pruned.

    Retention writes it (connector.worker.retention) as it deletes a resource's finished events, so
    a later backfill or reconciliation still knows that resource, where it stands in Okendo's order
    and what it last said (connector.backfill.snapshots), long after the events are gone.
    """

    __tablename__ = "resource_states"

    resource_type: Mapped[str] = mapped_column(String(RESOURCE_TYPE_MAX), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(RESOURCE_ID_MAX), primary_key=True)
    sequence_key: Mapped[str | None] = mapped_column(String(SEQUENCE_MAX))
    event_id: Mapped[int] = mapped_column(BigIntId)  # the event it was taken from (pruned since)
    content_hash: Mapped[str | None] = mapped_column(String(64))  # None: the event was a delete
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OkendoSync(Base):
    """One backfill or reconciliation of Okendo's API (connector.backfill): its cursor, so a stopped
    run goes on where it stopped; its lease, so no two run at once on any host; and its counts.

    Named by what it reads: `backfill:reviews:approved`, `backfill:loyalty`, `reconcile:reviews`.
    """

    __tablename__ = "okendo_syncs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # running | finished | stopped | failed
    cursor: Mapped[str | None] = mapped_column(Text)  # the next page's URL (relative to the API base)
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what the run was asked (status, since)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    read: Mapped[int] = mapped_column(Integer, default=0)  # resources read from the API
    stored: Mapped[int] = mapped_column(Integer, default=0)  # snapshots stored as events
    missing: Mapped[int] = mapped_column(Integer, default=0)  # of those: resources the ledger had never seen
    different: Mapped[int] = mapped_column(Integer, default=0)  # of those: differing from the ledger's newest state
    problems: Mapped[int] = mapped_column(Integer, default=0)  # items refused (no id, not an object)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Never reset when a run starts afresh: what /metrics exports as counters.
    pages_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    read_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stored_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    missing_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    different_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    problems_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # failed runs in a row
    last_pass: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the last finished run's times and counts


class ChartBucket(Base):
    """A closed 15-minute interval of one chart series, counted once (connector/status/chart_rollups.py):
    the 24-hour and 7-day charts add up these instead of every event, delivery and attempt of the range."""

    __tablename__ = "chart_buckets"

    series: Mapped[str] = mapped_column(String(16), primary_key=True)  # events, delivered, dead, latency, joined, left, counted
    destination: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" for the ledger as a whole
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float | None] = mapped_column(Float)  # latency: the calls' summed ms
    peak: Mapped[float | None] = mapped_column(Float)  # latency: the longest call in ms; left: the longest wait in s

    __table_args__ = (Index("ix_chart_buckets_bucket_start", "bucket_start"),)
