"""What the status page and its JSON API read from the ledger.

Every list is keyset-paginated on the event id (newest first) and every
filter has an index behind it, so pages stay fast at millions of events:
event state (state, id); topic (resource_type, topic, id); delivery state
and destination (deliveries: state, event_id / destination, state, event_id);
the text filter is an exact match on the shopper's email or the resource id;
origin (webhook, backfill, reconcile) is (origin, id); a search by the payload's words
(`q`) is the full-text index of connector.ledger.search.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, exists, func, select

from connector.config import Settings
from connector.worker import presence
from connector.worker.budget import budgets as budget_readings
from connector.ledger.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    DestinationStatus,
    Event,
    EventOrigin,
    EventState,
    RecordLink,
    utcnow,
)
from connector.ledger import search as payload_search
from connector.ledger.selection import event_conditions

_events = Event.__table__
_deliveries = Delivery.__table__
_attempts = DeliveryAttempt.__table__
_links = RecordLink.__table__
_status = DestinationStatus.__table__

EVENT_STATES = (EventState.RECEIVED, EventState.PLANNED, EventState.UNMAPPED, EventState.INVALID,
                EventState.UNSUPPORTED)
DELIVERY_STATES = (DeliveryState.PENDING, DeliveryState.RETRYING, DeliveryState.DELIVERED, DeliveryState.DEAD,
                   DeliveryState.STALE, DeliveryState.SKIPPED)
EVENT_ORIGINS = (EventOrigin.WEBHOOK, EventOrigin.BACKFILL, EventOrigin.RECONCILE)
PAGE_SIZE = 50


@dataclass(frozen=True)
class EventFilter:
    state: str | None = None  # an event state or a delivery state
    topic: str | None = None  # review or review.create
    destination: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None  # an email or a resource id
    before: int | None = None  # keyset: events with a smaller id
    origin: str | None = None  # webhook, backfill or reconcile
    search: str | None = None  # words of the payload, all of them ("a phrase" in quotes): the `q` argument

    def query_args(self) -> dict[str, str]:
        args = {"state": self.state, "topic": self.topic, "destination": self.destination, "text": self.text,
                "origin": self.origin, "q": self.search,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None}
        return {key: value for key, value in args.items() if value}

    @property
    def delivery_state(self) -> str | None:
        return self.state if self.state in DELIVERY_STATES else None


def _event_conditions(selection: EventFilter) -> list[Any]:
    e = _events
    conditions = event_conditions(topic=selection.topic, since=selection.since, until=selection.until,
                                  text=selection.text, origin=selection.origin, search=selection.search)
    if selection.state in EVENT_STATES:
        conditions.append(e.c.state == selection.state)
    if selection.before:
        conditions.append(e.c.id < selection.before)
    return conditions


def list_events(connection: Connection, selection: EventFilter, limit: int = PAGE_SIZE) -> tuple[list[dict], int | None]:
    """A page of events, newest first, and the id to pass as `before` for the next page."""
    e = _events
    columns = (e.c.id, e.c.message_id, e.c.received_at, e.c.resource_type, e.c.topic, e.c.resource_id,
               e.c.sequence_number, e.c.customer_email, e.c.state, e.c.state_reason, e.c.origin)
    conditions = _event_conditions(selection)
    if selection.search and payload_search.phrases(selection.search):
        rows = _events_by_search(connection, selection, columns, limit + 1)
    elif selection.delivery_state or selection.destination:
        rows = _events_by_delivery(connection, selection, columns, conditions, limit + 1)
    else:
        rows = [dict(row._mapping) for row in connection.execute(
            select(*columns).where(*conditions).order_by(e.c.id.desc()).limit(limit + 1))]
    next_before = rows[limit - 1]["id"] if len(rows) > limit else None
    rows = rows[:limit]
    summaries = _delivery_summaries(connection, [row["id"] for row in rows])
    for row in rows:
        row["deliveries"] = summaries.get(row["id"], {})
    return rows, next_before


def _events_by_delivery(connection: Connection, selection: EventFilter, columns: tuple, conditions: list,
                        wanted: int) -> list[dict]:
    """Walk the deliveries index backwards (state or destination, event id) and keep matching events."""
    d, e = _deliveries, _events
    found: list[dict] = []
    before = selection.before
    while len(found) < wanted:
        ids_query = select(d.c.event_id).distinct()
        if selection.delivery_state:
            ids_query = ids_query.where(d.c.state == selection.delivery_state)
        if selection.destination:
            ids_query = ids_query.where(d.c.destination == selection.destination)
        if before:
            ids_query = ids_query.where(d.c.event_id < before)
        ids = list(connection.execute(ids_query.order_by(d.c.event_id.desc()).limit(500)).scalars())
        if not ids:
            break
        found.extend(dict(row._mapping) for row in connection.execute(
            select(*columns).where(e.c.id.in_(ids), *conditions).order_by(e.c.id.desc())))
        before = ids[-1]
    return found[:wanted]


def _events_by_search(connection: Connection, selection: EventFilter, columns: tuple, wanted: int) -> list[dict]:
    """Walk the payload index's matches newest first, in growing chunks, and keep the events the other
    filters select: a rare word reads its few matches, a common one stops within its first chunk.
    (As one statement, `id IN (matches)` made both backends scan the events for a rare word.)"""
    d, e = _deliveries, _events
    conditions = _event_conditions(replace(selection, search=None, before=None))
    if selection.delivery_state or selection.destination:
        delivery = exists().where(d.c.event_id == e.c.id)  # the same delivery has both, as in _events_by_delivery
        if selection.delivery_state:
            delivery = delivery.where(d.c.state == selection.delivery_state)
        if selection.destination:
            delivery = delivery.where(d.c.destination == selection.destination)
        conditions.append(delivery)
    found: list[dict] = []
    before, chunk = selection.before, _SEARCH_CHUNK
    while len(found) < wanted:
        ids = payload_search.matching_ids(connection, selection.search or "", before=before, limit=chunk)
        if not ids:
            break
        found.extend(dict(row._mapping) for row in connection.execute(
            select(*columns).where(e.c.id.in_(ids), *conditions).order_by(e.c.id.desc())))
        if len(ids) < chunk:
            break
        before, chunk = ids[-1], min(chunk * 4, _SEARCH_CHUNK_MAX)
    return found[:wanted]


# Matches read per step of _events_by_search: one page's worth at first, more when the other filters
# keep few of them (a bound parameter per id: SQLite allows 32,766).
_SEARCH_CHUNK = 200
_SEARCH_CHUNK_MAX = 10_000


def _delivery_summaries(connection: Connection, event_ids: list[int]) -> dict[int, dict[str, int]]:
    if not event_ids:
        return {}
    d = _deliveries
    summary: dict[int, dict[str, int]] = {}
    query = (select(d.c.event_id, d.c.state, func.count()).where(d.c.event_id.in_(event_ids))
             .group_by(d.c.event_id, d.c.state))
    for event_id, state, number in connection.execute(query):
        summary.setdefault(event_id, {})[state] = number
    return summary


def event_detail(connection: Connection, event_id: int) -> dict[str, Any] | None:
    e, d, a = _events, _deliveries, _attempts
    row = connection.execute(select(e).where(e.c.id == event_id)).first()
    if row is None:
        return None
    event = dict(row._mapping)
    body = bytes(event.pop("body"))
    try:
        event["payload"] = json.dumps(json.loads(body), indent=2, ensure_ascii=False, sort_keys=False)
        event["document"] = json.loads(body)
    except ValueError:
        event["payload"] = body.decode("utf-8", errors="replace")
        event["document"] = None
    headers = event["headers"]
    event["headers"] = headers if isinstance(headers, dict) else json.loads(headers or "{}")
    event["api_read"] = api_read(event)
    deliveries = [dict(r._mapping) for r in connection.execute(
        select(d).where(d.c.event_id == event_id).order_by(d.c.position, d.c.id))]
    attempts = {}
    if deliveries:
        for attempt in connection.execute(select(a).where(a.c.delivery_id.in_([x["id"] for x in deliveries]))
                                          .order_by(a.c.id)):
            attempts.setdefault(attempt.delivery_id, []).append(dict(attempt._mapping))
    now = utcnow()
    for delivery in deliveries:
        delivery["attempt_list"] = attempts.get(delivery["id"], [])
        delivery["leased"] = bool(delivery["lease_expires_at"] and delivery["lease_expires_at"] > now)
    event["deliveries"] = deliveries
    event["links"] = []
    if event["resource_type"] and event["resource_id"]:
        event["links"] = [dict(r._mapping) for r in connection.execute(
            select(_links).where(_links.c.source_type == event["resource_type"],
                                 _links.c.source_id == event["resource_id"]))]
    return event


def api_read(event: dict[str, Any]) -> dict[str, Any] | None:
    """For an event read from Okendo's API (a backfill or a reconciliation): the request that read it
    and when, as connector.backfill.snapshots stored them in its headers; None for a webhook."""
    if event.get("origin") not in EventOrigin.API:
        return None
    headers = event.get("headers") or {}
    read_at: Any = headers.get("okendo-api-read-at")
    try:
        read_at = datetime.fromisoformat(read_at) if read_at else None
        if read_at is not None and read_at.tzinfo is not None:
            read_at = read_at.astimezone(timezone.utc)
    except (TypeError, ValueError):
        pass  # shown as stored
    return {"request": headers.get("okendo-api-request"), "read_at": read_at}


@dataclass
class Stats:
    deliveries_by_destination: dict[str, dict[str, int]] = field(default_factory=dict)
    deliveries_by_topic: dict[str, dict[str, int]] = field(default_factory=dict)
    events_by_state: dict[str, int] = field(default_factory=dict)
    per_minute: list[tuple[str, int]] = field(default_factory=list)  # the last hour, oldest first
    queue_depth: int = 0
    unplanned: int = 0
    oldest_pending_age_s: float | None = None
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: list[presence.Seen] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what an operator must look at now

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["per_minute"] = [{"minute": minute, "events": count} for minute, count in self.per_minute]
        data["workers"] = [worker.to_json() for worker in self.workers]
        return data


def stats(connection: Connection, now: datetime | None = None, heartbeat_s: float = 10.0,
          settings: Settings | None = None) -> Stats:
    """`settings` adds what needs the configuration: the daily API budgets."""
    e, d = _events, _deliveries
    now = now or utcnow()
    result = Stats()
    for state, number in connection.execute(select(e.c.state, func.count()).group_by(e.c.state)):
        result.events_by_state[state] = number
    for destination, state, number in connection.execute(
            select(d.c.destination, d.c.state, func.count()).group_by(d.c.destination, d.c.state)):
        result.deliveries_by_destination.setdefault(destination, {})[state] = number
    topic = e.c.resource_type + "." + e.c.topic
    for name, state, number in connection.execute(
            select(topic, d.c.state, func.count()).select_from(d.join(e, e.c.id == d.c.event_id))
            .group_by(topic, d.c.state)):
        result.deliveries_by_topic.setdefault(name or "?", {})[state] = number
    # Events received per minute over the last hour (bucketed in Python: portable and cheap for one hour).
    start = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    buckets = {start + timedelta(minutes=i): 0 for i in range(61)}
    for (received_at,) in connection.execute(select(e.c.received_at).where(e.c.received_at >= start)):
        minute = received_at.replace(second=0, microsecond=0)
        if minute in buckets:
            buckets[minute] += 1
    result.per_minute = [(minute.strftime("%H:%M"), count) for minute, count in buckets.items()]
    due = d.c.state.in_(DeliveryState.DUE)
    result.queue_depth = connection.execute(select(func.count()).where(due)).scalar_one()
    result.unplanned = result.events_by_state.get(EventState.RECEIVED, 0)
    oldest = connection.execute(select(func.min(d.c.created_at)).where(due)).scalar_one()
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=now.tzinfo)
        result.oldest_pending_age_s = max((now - oldest).total_seconds(), 0.0)
    for row in connection.execute(select(_status)):
        result.destinations[row.destination] = {
            "last_success_at": row.last_success_at, "last_error_at": row.last_error_at,
            "last_error": row.last_error, "quota": row.quota or {}, "dry_run": row.dry_run,
            "paused_at": row.paused_at, "paused_reason": row.paused_reason, "paused_by": row.paused_by,
            "remote_checked_at": row.remote_checked_at, "remote_problems": row.remote_problems or [],
        }
    result.workers = presence.seen(connection, heartbeat_s, now)
    result.warnings = presence.warnings(result.workers, result.queue_depth + result.unplanned, heartbeat_s)
    for name, info in sorted(result.destinations.items()):
        if info["paused_at"] is not None:
            waiting = sum(result.deliveries_by_destination.get(name, {}).get(state, 0) for state in DeliveryState.DUE)
            result.warnings.append(f"{name} is paused ({info['paused_by']}): {info['paused_reason']}; "
                                   f"{waiting} delivery(ies) wait for it to be resumed")
        for problem in info["remote_problems"]:
            result.warnings.append(f"remote check: {problem}")
    if settings is not None:
        for name, budget in sorted(budget_readings(connection, settings, now).items()):
            if name in result.destinations:
                result.destinations[name]["budget"] = budget.to_json()
            if budget.held:
                result.warnings.append(f"{budget.describe()}: deliveries wait for "
                                       f"{budget.waiting_for(settings.worker.budget_check_s)}")
    return result
