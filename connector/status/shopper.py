"""A shopper's whole story on one page: every event of every topic, what was written to each CRM
(with links to the records), each attempt that failed, and each replay, in time order.

A shopper is found by email, or by an Okendo id whose events carry the email: their customerId
(in the payloads, through the full-text index of connector.ledger.search), a loyalty member's
loyaltyCustomerId or a review id (resource ids). Every read uses an index:
events by customer_email (ix_events_customer_email) and by resource_id (ix_events_resource_id),
deliveries by event (ix_deliveries_event_id), attempts by delivery (ix_delivery_attempts_delivery_id),
and the record links of the shopper's resources, per configured destination (the links' unique key
starts with destination). Deletes carry no email (a loyalty delete has only its ids): they are found
through the resources of the shopper's other events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from flask import abort, render_template, request
from sqlalchemy import Connection, or_, select, tuple_

from connector.ledger import search as payload_search
from connector.ledger.models import Delivery, DeliveryAttempt, Event, RecordLink
from connector.runtime import runtime
from connector.status.auth import require_auth
from connector.status.links import record_url
from connector.status.views import bp

_events, _deliveries, _attempts, _links = (Event.__table__, Delivery.__table__, DeliveryAttempt.__table__,
                                           RecordLink.__table__)
# A shopper with more events than this is shown their newest ones, and the page says so.
MAX_EVENTS = 500
KEY_MAX = 320
ID_MATCHES = 200  # events read to learn the emails of an id found in payloads
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass
class Story:
    key: str
    emails: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    records: list[dict[str, Any]] = field(default_factory=list)  # CRM records, per destination
    truncated: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # deliveries by state


def _event_rows(connection: Connection, condition: Any) -> list[dict[str, Any]]:
    e = _events
    columns = (e.c.id, e.c.received_at, e.c.resource_type, e.c.topic, e.c.resource_id, e.c.sequence_number,
               e.c.customer_email, e.c.state, e.c.state_reason, e.c.origin)
    return [dict(row._mapping) for row in connection.execute(
        select(*columns).where(condition).order_by(e.c.id.desc()).limit(MAX_EVENTS + 1))]


def find_emails(connection: Connection, key: str) -> list[str]:
    """The emails a key stands for: itself when it is one; else those on the events of that resource id,
    and those of the events whose payload holds the id (the full-text index, connector.ledger.search:
    an Okendo customerId is in the payload of each of the shopper's events that names the shopper)."""
    if "@" in key:
        return [key.lower()]
    e = _events
    found = {email for (email,) in connection.execute(
        select(e.c.customer_email).where(e.c.resource_id == key, e.c.customer_email.is_not(None)).distinct())}
    quoted = '"' + key.replace('"', " ") + '"'  # one phrase: a UUID's parts in their order
    ids = payload_search.matching_ids(connection, quoted, before=None, limit=ID_MATCHES)
    if ids:
        found |= {email for (email,) in connection.execute(
            select(e.c.customer_email).where(e.c.id.in_(ids), e.c.customer_email.is_not(None)).distinct())}
    return sorted(found)


def story(connection: Connection, key: str, destinations: list[str]) -> Story:
    e, d, a, links = _events, _deliveries, _attempts, _links
    result = Story(key=key, emails=find_emails(connection, key))
    conditions = [e.c.customer_email.in_(result.emails)] if result.emails else []
    if "@" not in key:
        conditions.append(e.c.resource_id == key)
    if not conditions:
        return result
    events = {row["id"]: row for row in _event_rows(connection, or_(*conditions))}
    # The same resources' events without an email (deletes), by resource id.
    resources = sorted({(row["resource_type"], row["resource_id"]) for row in events.values() if row["resource_id"]})
    if resources:
        by_id: dict[str, set[str]] = {}
        for resource_type, resource_id in resources:
            by_id.setdefault(resource_id, set()).add(resource_type)
        for row in _event_rows(connection, e.c.resource_id.in_(sorted(by_id))):
            if row["resource_type"] in by_id.get(row["resource_id"], ()):
                events.setdefault(row["id"], row)
    ordered = sorted(events.values(), key=lambda row: row["id"], reverse=True)
    result.truncated = len(ordered) > MAX_EVENTS
    result.events = sorted(ordered[:MAX_EVENTS], key=lambda row: row["id"])
    event_ids = [row["id"] for row in result.events]
    deliveries = [dict(row._mapping) for row in connection.execute(
        select(d.c.id, d.c.event_id, d.c.mapping, d.c.destination, d.c.state, d.c.attempts, d.c.last_error,
               d.c.crm_record_id, d.c.operation, d.c.created_at, d.c.updated_at, d.c.replayed_at, d.c.replayed_by)
        .where(d.c.event_id.in_(event_ids)).order_by(d.c.id))] if event_ids else []
    attempts = [dict(row._mapping) for row in connection.execute(
        select(a.c.id, a.c.delivery_id, a.c.started_at, a.c.duration_ms, a.c.outcome, a.c.http_status, a.c.error)
        .where(a.c.delivery_id.in_([x["id"] for x in deliveries])).order_by(a.c.id))] if deliveries else []
    record_rows = []
    if resources and destinations:
        record_rows = [dict(row._mapping) for row in connection.execute(
            select(links).where(links.c.destination.in_(destinations),
                                tuple_(links.c.source_type, links.c.source_id).in_(resources))
            .order_by(links.c.destination, links.c.crm_object))]
    _build_timeline(result, deliveries, attempts)
    settings = runtime().settings
    for row in record_rows:
        row["record_url"] = record_url(settings, row["destination"], row["crm_object"], row["crm_record_id"])
    result.records = record_rows
    for delivery in deliveries:
        result.counts[delivery["state"]] = result.counts.get(delivery["state"], 0) + 1
    return result


def _build_timeline(result: Story, deliveries: list[dict], attempts: list[dict]) -> None:
    """One line per thing that happened: an event received, a delivery attempted (its outcome),
    a delivery written (its CRM record), a replay asked for."""
    settings = runtime().settings
    events = {row["id"]: row for row in result.events}
    by_delivery = {delivery["id"]: delivery for delivery in deliveries}
    lines: list[dict[str, Any]] = []
    for row in result.events:
        lines.append({"at": row["received_at"], "kind": "event", "event": row, "state": row["state"],
                      "detail": row["state_reason"]})
    for attempt in attempts:
        delivery = by_delivery[attempt["delivery_id"]]
        lines.append({"at": attempt["started_at"], "kind": "attempt", "event": events[delivery["event_id"]],
                      "delivery": delivery, "attempt": attempt, "state": attempt["outcome"],
                      "detail": attempt["error"]})
    attempted = {attempt["delivery_id"] for attempt in attempts}
    for delivery in deliveries:
        delivery["record_url"] = record_url(settings, delivery["destination"],
                                            (delivery["operation"] or {}).get("object"), delivery["crm_record_id"])
        if delivery["replayed_at"]:
            lines.append({"at": delivery["replayed_at"], "kind": "replay", "event": events[delivery["event_id"]],
                          "delivery": delivery, "state": "replayed", "detail": f"by {delivery['replayed_by']}"})
        if delivery["id"] not in attempted:
            # Decided without a CRM call (stale, skipped) or still waiting: its state, when it last changed.
            lines.append({"at": delivery["updated_at"], "kind": "delivery", "event": events[delivery["event_id"]],
                          "delivery": delivery, "state": delivery["state"], "detail": delivery["last_error"]})
    order = {"event": 0, "delivery": 1, "attempt": 1, "replay": 2}
    lines.sort(key=lambda line: (line["at"] or EARLIEST, order[line["kind"]]))
    result.timeline = lines


@bp.get("/shopper")
@require_auth()
def shopper() -> Any:
    """/status/shopper?key=EMAIL or ?key=OKENDO_ID."""
    key = (request.args.get("key") or "").strip()
    if not key or len(key) > KEY_MAX:
        abort(400, "say which shopper: /status/shopper?key= an email, or an Okendo id (a customerId, a "
                   f"loyaltyCustomerId, a review id) of at most {KEY_MAX} characters")
    rt = runtime()
    with rt.engine.connect() as connection:
        found = story(connection, key, sorted(rt.settings.destinations))
    if not found.events:
        abort(404, f"no event of a shopper {key!r} in the ledger: give their email, their Okendo customerId, or "
                   "the id of one of their reviews or of their loyalty membership (loyaltyCustomerId); an event "
                   "stored a moment ago is found by customerId once a worker has indexed it")
    return render_template("status/shopper.html", story=found)


