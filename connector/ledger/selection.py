"""Selecting events by what a person filters on: topic, time range, an email or an id, origin, and
words of the payload (connector.ledger.search).

Shared by the status page's lists and by replays, so a bulk replay acts on
exactly the events the filtered list shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_

from connector.ledger import search as payload_search
from connector.ledger.models import Event

_events = Event.__table__


def event_conditions(*, topic: str | None = None, since: datetime | None = None, until: datetime | None = None,
                     text: str | None = None, origin: str | None = None, search: str | None = None) -> list[Any]:
    """Conditions on `events`; each is served by an index (resource type/topic, received_at, email, ids,
    origin, the payload's words)."""
    e = _events
    conditions: list[Any] = []
    if topic:
        resource_type, _, verb = topic.partition(".")
        conditions.append(e.c.resource_type == resource_type)
        if verb:
            conditions.append(e.c.topic == verb)
    if since:
        conditions.append(e.c.received_at >= since)
    if until:
        conditions.append(e.c.received_at < until)
    if origin:
        conditions.append(e.c.origin == origin)
    if text:
        needle = text.strip()
        conditions.append(or_(e.c.customer_email == needle.lower(), e.c.resource_id == needle,
                              e.c.message_id == needle))
    words = payload_search.matching(search)
    if words is not None:
        conditions.append(words)
    return conditions
